"""A full disk, for real: a small tmpfs mounted for each test (and always unmounted).

Every write that runs out of space says so in one line (what, where, how much was needed), removes what it
wrote partially, leaves the store as it was, and neither spins nor hangs: `dsdt add`, `dsdt push` to a
file:// remote on the full device, `dsdt pull` into a full local store, and the small writes every command
does (the index, a manifest, a new context).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import assert_user_error, run_dsdt, snapshot
from disdat_luigi.remotes import open_store

MB = 1000 * 1000
pytestmark = pytest.mark.timeout(120)


@contextlib.contextmanager
def _tmpfs(mnt: Path, options: str):
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def disk(tmp_path):
    """A 20 MB tmpfs of this test's own."""
    with _tmpfs(tmp_path / "disk", "size=20m") as mnt:
        yield mnt


@pytest.fixture
def few_inodes(tmp_path):
    """A 20 MB tmpfs of this test's own that holds at most 300 files and directories."""
    with _tmpfs(tmp_path / "disk", "size=20m,nr_inodes=300") as mnt:
        yield mnt


def _tree(root: Path):
    paths = sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*")
                   if not p.name.endswith(("-wal", "-shm")))
    return snapshot(root), paths


def _home_on(path: Path, monkeypatch):
    from disdat_luigi.store.home import Home

    monkeypatch.setenv("DISDAT_HOME", str(path))
    home = Home(path)
    home.init()
    home.create_context("test")
    return home


def _fill(where: Path, leave: int = 0) -> Path:
    """Take all but ``leave`` bytes of the filesystem holding ``where``."""
    filler = where / "filler"
    st = os.statvfs(where)
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
        except OSError:
            pass
    return filler


def _small_files(root: Path, n: int) -> Path:
    """n distinct files of 100 bytes: each takes a whole page on tmpfs, so they need far more than their size."""
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"f{i:05d}.txt").write_bytes(f"{i:<100}".encode())
    return root


def _dsdt(*args, **kw):
    return run_dsdt(*args, timeout=90, **kw)   # a hang fails the test instead of the suite


def _one_line(r, *fragments):
    assert_user_error(r, *fragments)
    assert "nothing partial was kept" in r.err and "Traceback" not in r.err


def _remote_state(root: Path):
    """Keys on a file:// remote with their bytes, and every hidden (temporary) file a writer may leave."""
    store = open_store(root.as_uri())
    keys = {k: hashlib.sha256(store.get_bytes(k)).hexdigest() for k in store.list("")}
    hidden = sorted(str(p) for p in root.rglob(".*")) if root.exists() else []
    return keys, hidden


# ---------------------------------------------------------------------------------------------------
# dsdt add
# ---------------------------------------------------------------------------------------------------

def test_add_larger_than_the_free_space_is_refused_before_anything_is_written(disk, monkeypatch, tmp_path):
    home = _home_on(disk / "home", monkeypatch)
    (tmp_path / "big.bin").write_bytes(os.urandom(30 * MB))
    before = _tree(home.path)
    tmp = home.path / "contexts" / "test" / "tmp"
    r = _dsdt("add", "big", tmp_path / "big.bin")
    _one_line(r, f"no space left on the device of {tmp}", "while adding big (1 files)", "which needs 30.0 MB",
              "free some space and run it again")
    assert _tree(home.path) == before and list(tmp.iterdir()) == []


def test_add_that_runs_out_of_space_midway_says_so_and_keeps_nothing(disk, monkeypatch, tmp_path):
    """8,000 files of 100 bytes pass the size check (800 KB) but take 32 MB of pages: the disk fills while they
    are copied in. The line must say that the device is full and what was being added, not blame a source."""
    home = _home_on(disk / "home", monkeypatch)
    src = _small_files(tmp_path / "many", 8000)
    before = _tree(home.path)
    tmp = home.path / "contexts" / "test" / "tmp"
    r = _dsdt("add", "many", src)
    _one_line(r, f"no space left on the device of {tmp}", "while adding many (8000 files)", "which needs 800.0 KB")
    assert "cannot read" not in r.err
    assert _tree(home.path) == before and list(tmp.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# dsdt push to a file:// remote on a full device
# ---------------------------------------------------------------------------------------------------

def _committed(cli, name, *paths):
    r = cli("add", name, *paths)
    assert r.code == 0, r.err
    uuid = r.out.split()[2]
    assert cli("commit", "-u", uuid).code == 0
    return uuid


def test_push_of_a_blob_larger_than_the_remotes_free_space(home, cli, disk, tmp_path):
    remote = disk / "remote"
    assert cli("remote", "shared", remote.as_uri()).code == 0
    (tmp_path / "big.bin").write_bytes(os.urandom(30 * MB))
    uuid = _committed(cli, "big", tmp_path / "big.bin")
    sha = home.context().bundle(uuid).manifest.files["big.bin"].sha256
    before, remote_before = _tree(home.path), _remote_state(remote)
    r = _dsdt("push", "-q", "big")
    _one_line(r, f"no space left on the device of {remote}", f"while writing blobs/{sha[:2]}/{sha} to the remote",
              "which needs 30.0 MB")
    assert _tree(home.path) == before
    assert _remote_state(remote) == remote_before == ({}, [])


def test_push_of_packs_that_fill_the_remote_midway_resumes_once_there_is_room(home, cli, disk, tmp_path,
                                                                             monkeypatch):
    """Packs of small files fill the remote; the packs that made it are whole (named by their sha256), no
    temporary file, manifest or marker is left, and the next push, with room again, sends only the rest."""
    remote = disk / "remote"
    assert cli("remote", "shared", remote.as_uri()).code == 0
    src = tmp_path / "parts"
    src.mkdir()
    for i in range(16):
        (src / f"p{i:02d}.bin").write_bytes(os.urandom(900_000))
    uuid = _committed(cli, "parts", src)
    filler = _fill(disk, leave=8 * MB)      # room for some of the 14.4 MB of packs, not all
    before = _tree(home.path)
    r = _dsdt("push", "-q", "parts")
    _one_line(r, f"no space left on the device of {remote}", "while writing packs/", "to the remote", "which needs")
    keys, hidden = _remote_state(remote)
    assert hidden == [] and _tree(home.path) == before
    assert not any(k.startswith("context/") for k in keys), keys
    assert keys and all(k.startswith("packs/") and k == f"packs/{sha}" for k, sha in keys.items())
    filler.unlink()
    r = _dsdt("push", "parts")
    assert r.code == 0, r.err
    m = re.fullmatch(rf"pushed parts {uuid}: (\d+) files, [\d.]+ MB moved, (\d+) already on the remote\n", r.out)
    assert m, r.out
    sent, reused = int(m.group(1)), int(m.group(2))
    assert sent > 0 and reused > 0 and sent + reused == 16
    assert _remote_state(remote)[1] == []
    other = tmp_path / "check"
    monkeypatch.setenv("DISDAT_HOME", str(other))
    assert run_dsdt("init").code == 0 and run_dsdt("context", "c").code == 0
    assert run_dsdt("remote", "shared", remote.as_uri()).code == 0
    assert run_dsdt("pull", "parts").code == 0
    assert all((other / "contexts" / "c" / "objects" / uuid / "files" / "parts" / p.name).read_bytes() == p.read_bytes()
               for p in src.iterdir())


# ---------------------------------------------------------------------------------------------------
# dsdt pull into a full local store
# ---------------------------------------------------------------------------------------------------

def _published(cli, tmp_path, name, *paths):
    """A bundle pushed to a file:// remote outside the small disk; returns (url, uuid)."""
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    uuid = _committed(cli, name, *paths)
    assert cli("push", "-q", name).code == 0
    return url, uuid


@pytest.fixture
def published_big(home, cli, tmp_path):
    """big: one 30 MB file."""
    (tmp_path / "big.bin").write_bytes(os.urandom(30 * MB))
    return _published(cli, tmp_path, "big", tmp_path / "big.bin")


@pytest.fixture
def published_many(home, cli, tmp_path):
    """many: 8,000 small files."""
    return _published(cli, tmp_path, "many", _small_files(tmp_path / "many", 8000))


def _puller_on(disk, monkeypatch, url):
    home = _home_on(disk / "home", monkeypatch)
    r = run_dsdt("remote", "shared", url)
    assert r.code == 0, r.err
    return home


def test_pull_larger_than_the_free_space_is_refused_before_anything_is_fetched(published_big, disk, monkeypatch):
    url, big = published_big
    home = _puller_on(disk, monkeypatch, url)
    tmp = home.path / "contexts" / "test" / "tmp"
    before = _tree(home.path)
    r = _dsdt("pull", "-q", "big")
    _one_line(r, f"no space left on the device of {tmp}", "while pulling big (1 files)", "which needs 30.0 MB")
    assert _tree(home.path) == before and list(tmp.iterdir()) == []


def test_pull_that_runs_out_of_space_midway_removes_what_it_staged(published_many, disk, monkeypatch):
    url, many = published_many
    home = _puller_on(disk, monkeypatch, url)
    tmp = home.path / "contexts" / "test" / "tmp"
    before = _tree(home.path)
    r = _dsdt("pull", "-q", "-u", many)
    _one_line(r, f"no space left on the device of {tmp}", "while pulling many (8000 files)", "which needs 800.0 KB")
    assert _tree(home.path) == before and list(tmp.iterdir()) == []
    assert run_dsdt("ls", "-v").out.splitlines()[1:] == []


# ---------------------------------------------------------------------------------------------------
# the small writes of every command
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [("commit", "one"), ("rm", "two"), ("context", "new"), ("add", "three", "{src}"),
                                  ("commit", "-t", "k:v", "one")], ids=["commit", "rm", "context", "add", "tag"])
def test_a_full_disk_is_a_full_disk_not_a_damaged_index(disk, monkeypatch, tmp_path, args):
    """With the device full, every command that writes says that the device is full (one line, naming where),
    changes nothing, and never sends the user to repair an index that is sound."""
    home = _home_on(disk / "home", monkeypatch)
    (tmp_path / "f.txt").write_text("small")
    for name in ("one", "two"):
        assert run_dsdt("add", name, tmp_path / "f.txt").code == 0
    before = _tree(home.path)           # read before the disk is full (reading SQLite needs room for its WAL)
    filler = _fill(disk)
    r = _dsdt(*(a.format(src=tmp_path / "f.txt") for a in args))
    filler.unlink()
    assert_user_error(r, "no space left on the device", str(disk))
    assert "damaged" not in r.err and "check --repair" not in r.err
    assert _tree(home.path) == before
    check = run_dsdt("check")
    assert check.code == 0 and "is sound" in check.out, check


# ---------------------------------------------------------------------------------------------------
# a device out of inodes (files), with bytes to spare: said as such, not as "no space"
# ---------------------------------------------------------------------------------------------------

def _fill_inodes(where: Path, leave: int = 0) -> Path:
    """Take all but ``leave`` of the inodes of the filesystem holding ``where`` (with empty files: no bytes)."""
    filler = where / "inode-filler"
    filler.mkdir()
    for i in range(os.statvfs(where).f_favail - leave):
        (filler / str(i)).touch()
    return filler


def _no_inodes(r, where, *fragments):
    _one_line(r, f"no free inodes (files) left on the device of {where} (", " free) while ", "remove files from it",
              *fragments)


def test_add_that_runs_out_of_inodes_midway_says_inodes(few_inodes, monkeypatch, tmp_path):
    home = _home_on(few_inodes / "home", monkeypatch)
    src = _small_files(tmp_path / "many", 500)
    before = _tree(home.path)
    tmp = home.path / "contexts" / "test" / "tmp"
    _no_inodes(_dsdt("add", "many", src), tmp, "while adding many (500 files)")
    assert _tree(home.path) == before and list(tmp.iterdir()) == []


def test_add_with_no_inode_left_is_refused_before_anything_is_written(few_inodes, monkeypatch, tmp_path):
    home = _home_on(few_inodes / "home", monkeypatch)
    (tmp_path / "f.txt").write_text("small")
    before = _tree(home.path)                # reading the index needs inodes for its -wal and -shm files
    filler = _fill_inodes(few_inodes)
    tmp = home.path / "contexts" / "test" / "tmp"
    _no_inodes(_dsdt("add", "one", tmp_path / "f.txt"), tmp, "while adding one (1 files)")
    shutil.rmtree(filler)
    assert _tree(home.path) == before


def test_push_to_a_remote_out_of_inodes_says_inodes_and_resumes(home, cli, few_inodes, tmp_path):
    remote = few_inodes / "remote"
    assert cli("remote", "shared", remote.as_uri()).code == 0
    src = tmp_path / "blobs"
    src.mkdir()
    for i in range(12):
        (src / f"b{i:02d}.bin").write_bytes(os.urandom(1_200_000))   # above the pack threshold: one object each
    uuid = _committed(cli, "blobs", src)
    filler = _fill_inodes(few_inodes, leave=10)
    r = _dsdt("push", "-q", "blobs")
    _no_inodes(r, remote, "while writing blobs/", "to the remote")
    keys, hidden = _remote_state(remote)
    assert hidden == [] and not any(k.startswith("context/") for k in keys)
    shutil.rmtree(filler)
    assert _dsdt("push", "-q", "blobs").code == 0
    assert f"context/shared/bundles/{uuid}.json" in _remote_state(remote)[0]


def test_pull_into_a_store_out_of_inodes_says_inodes(published_many, few_inodes, monkeypatch):
    url, many = published_many
    home = _puller_on(few_inodes, monkeypatch, url)
    tmp = home.path / "contexts" / "test" / "tmp"
    before = _tree(home.path)
    _no_inodes(_dsdt("pull", "-q", "-u", many), tmp, "while pulling many (8000 files)")
    assert _tree(home.path) == before and list(tmp.iterdir()) == []


@pytest.mark.parametrize("args", [("commit", "one"), ("rm", "two"), ("context", "new"), ("add", "three", "{src}"),
                                  ("switch", "other")], ids=["commit", "rm", "context", "add", "switch"])
def test_every_command_says_the_device_is_out_of_inodes(few_inodes, monkeypatch, tmp_path, args):
    home = _home_on(few_inodes / "home", monkeypatch)
    home.create_context("other")
    (tmp_path / "f.txt").write_text("small")
    for name in ("one", "two"):
        assert run_dsdt("add", name, tmp_path / "f.txt").code == 0
    before = _tree(home.path)
    filler = _fill_inodes(few_inodes)
    r = _dsdt(*(a.format(src=tmp_path / "f.txt") for a in args))
    shutil.rmtree(filler)
    assert_user_error(r, "no free inodes (files) left on the device", str(few_inodes))
    assert "damaged" not in r.err and "check --repair" not in r.err
    assert _tree(home.path) == before
