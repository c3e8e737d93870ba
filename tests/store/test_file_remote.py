"""A file:// remote is a directory shared between Unix users, and untrusted.

* Everything written there (blobs, packs, manifests, name markers, run records, leases and their locks, logs)
  gets the mode the writer's umask gives a new file or directory, never mkstemp's 0600: the others it is
  shared with can read it.
* A symbolic link planted anywhere below its root (a log pointing at a secret file, a context's ``runs/`` or
  ``bundles/`` pointing elsewhere, a blob, a lock) is refused in one line naming its key, and nothing is ever
  read or written through it; listings do not descend into linked directories nor count linked files.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import DSDT, assert_user_error, snapshot
from conftest import added as _added, write_files as _files  # noqa: E402
from disdat_luigi.errors import RemoteError
from disdat_luigi.remotes import open_remote
from disdat_luigi.remotes.remote import blob_key
from disdat_luigi.runs.lease import Lease
from disdat_luigi.runs.record import RunRecord
from disdat_luigi.runs.store import RunStore

NODE = "0123456789abcdef0123456789abcdef"
SECRET = b"root:x:0:0:the secret a link points at\n"


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _dsdt_with_umask(mask: int, *args) -> subprocess.CompletedProcess:
    """``dsdt`` as a real process whose umask is ``mask``."""
    return subprocess.run([DSDT, *map(str, args)], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.umask(mask))


def _record(node: str = NODE) -> RunRecord:
    return RunRecord(node_id=node, run_id=node, status="running", pipe_cls="m.P", params={}, bundle_name="out",
                     backend="Local", image="sha256:" + "ab" * 32, started="2026-01-01T00:00:00.000000Z")


def _modes(root: Path):
    """(files, directories) under ``root`` (itself included) by their permission bits."""
    files, dirs = {}, {root.as_posix(): stat.S_IMODE(root.lstat().st_mode)}
    for p in root.rglob("*"):
        (dirs if p.is_dir() else files)[p.relative_to(root).as_posix()] = stat.S_IMODE(p.lstat().st_mode)
    return files, dirs


# ---------------------------------------------------------------------------------------------------
# modes
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_everything_written_to_a_file_remote_gets_the_umasks_mode(home, tmp_path, mask):
    remote = tmp_path / "shared-dir" / "remote"
    src = _files(tmp_path / "src", {"big.bin": os.urandom(9 * 1024 * 1024),      # a blob uploaded as a file
                                    "mid.bin": os.urandom(2 * 1024 * 1024),      # a blob written whole
                                    "a.txt": b"small", "b.txt": b"packed"})      # a pack
    for args in (("remote", "shared", remote.as_uri()), ("add", "data", src), ("commit", "data"),
                 ("push", "-q", "data")):
        r = _dsdt_with_umask(mask, *args)
        assert r.returncode == 0, r.stderr
    with _umask(mask), open_remote(remote.as_uri(), "shared") as r:
        runs = RunStore(r)
        runs.write(_record())
        assert runs.take(NODE, Lease.mine("Local")) is not None     # a compare-and-swap: a lock file too
        runs.write_log(NODE, b"a log\n")
    files, dirs = _modes(remote)
    kinds = {k.split("/")[0] if not k.startswith("context/") else k.split("/")[2] for k in files}
    assert kinds == {"blobs", "packs", "bundles", "names", "runs", "leases", "logs"}, files
    assert any(k.endswith(".lock") for k in files)
    assert files == {k: 0o666 & ~mask for k in files}
    assert dirs == {k: 0o777 & ~mask for k in dirs}


def test_local_store_writes_get_the_umasks_mode_too(tmp_path, monkeypatch):
    """The local store's atomic writes (manifests, the remote binding) no longer differ from its other files."""
    from disdat_luigi.fsutil import atomic_write

    with _umask(0o002):
        atomic_write(tmp_path / "d" / "f.json", b"{}")
    assert stat.S_IMODE((tmp_path / "d" / "f.json").stat().st_mode) == 0o664
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.json"]


# ---------------------------------------------------------------------------------------------------
# symbolic links
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def remote(home, cli, tmp_path):
    """The active context bound to a file:// remote; returns its directory."""
    root = tmp_path / "remote"
    assert cli("remote", "shared", root.as_uri()).code == 0
    return root


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "outside" / "secret"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def _refused(r, key: str) -> None:
    assert_user_error(r, key, "is a symbolic link", "remove it")
    assert "root:x:0:0" not in r.out + r.err


def test_logs_refuses_a_log_that_is_a_link(home, cli, remote, secret):
    with open_remote(remote.as_uri(), "shared") as r:
        RunStore(r).write(_record().finished("failed", "boom"))
    _link(remote / "context" / "shared" / "logs" / f"{NODE}.log", secret)
    before = snapshot(remote)
    _refused(cli("logs", NODE[:8]), f"context/shared/logs/{NODE}.log")
    assert snapshot(remote) == before


def test_logs_refuses_etc_passwd_planted_as_a_log(home, cli, remote):
    with open_remote(remote.as_uri(), "shared") as r:
        RunStore(r).write(_record().finished("failed", "boom"))
    _link(remote / "context" / "shared" / "logs" / f"{NODE}.log", Path("/etc/passwd"))
    r = cli("logs", NODE[:8])
    assert_user_error(r, "is a symbolic link")
    assert "root:" not in r.out + r.err


def test_a_fifo_planted_as_a_log_is_not_a_log_and_does_not_block(home, cli, remote):
    with open_remote(remote.as_uri(), "shared") as r:
        RunStore(r).write(_record().finished("failed", "boom"))
    log = remote / "context" / "shared" / "logs" / f"{NODE}.log"
    log.parent.mkdir(parents=True)
    os.mkfifo(log)
    assert_user_error(cli("logs", NODE[:8]), "has no log yet")


def test_a_linked_runs_directory_is_refused_not_listed(home, cli, remote, tmp_path):
    """context/shared/runs -> a directory elsewhere holding a record: neither `dsdt runs` nor `dsdt logs` read it."""
    elsewhere = tmp_path / "elsewhere"
    with open_remote(elsewhere.as_uri(), "shared") as r:
        RunStore(r).write(_record().finished("failed", "from elsewhere"))
        RunStore(r).write_log(NODE, SECRET)
    _link(remote / "context" / "shared" / "runs", elsewhere / "context" / "shared" / "runs")
    _link(remote / "context" / "shared" / "logs", elsewhere / "context" / "shared" / "logs")
    for args in (("runs",), ("logs", NODE[:8])):
        r = cli(*args)
        _refused(r, "context/shared/")
        assert "from elsewhere" not in r.out


def test_listings_skip_linked_directories_and_files(home, cli, remote, tmp_path):
    """Name markers are found by listing: a linked name directory, or a linked marker, is no version."""
    uuid = _added(cli, "real", _files(tmp_path / "d", {"x": b"1"}))
    assert cli("push", "real").code == 0
    names = remote / "context" / "shared" / "names"
    marker = next((names / "real").iterdir())
    _link(names / "alias", names / "real")
    _link(names / "other" / marker.name, marker)
    with open_remote(remote.as_uri(), "shared") as r:
        assert r.versions() == [("real", marker.name.rpartition("_")[0], uuid)]
        assert not any("/alias/" in k or "/other/" in k for k in r.store.list(""))


@pytest.mark.parametrize("what", ["blob", "pack", "manifest"])
def test_pull_never_reads_through_a_link(home, cli, remote, tmp_path, what):
    """The link points at a copy of the very bytes it replaces: read through it, the pull would pass every check.
    (What was verified before the refusal stays staged for the next pull, as after any failed pull.)"""
    src = _files(tmp_path / "d", {"big.bin": os.urandom(2 * 1024 * 1024), "small.txt": b"small"})
    uuid = _added(cli, "data", src)
    assert cli("push", "data").code == 0
    big = next(e for path, e in home.context().bundle(uuid).manifest.files.items() if path.endswith("big.bin"))
    key, its_file = {"blob": (blob_key(big.sha256), "big.bin"),
                     "pack": (next(str(p.relative_to(remote)) for p in (remote / "packs").iterdir()), "small.txt"),
                     "manifest": (f"context/shared/bundles/{uuid}.json", None)}[what]
    copy = tmp_path / "copy"
    shutil.copyfile(remote / key, copy)
    _link(remote / key, copy)
    assert cli("context", "other").code == 0 and cli("switch", "other").code == 0
    assert cli("remote", "shared", remote.as_uri()).code == 0
    other = home.context("other")
    _refused(cli("pull", "-u", uuid), key)
    assert not other.has(uuid)
    assert its_file not in [p.name for p in other.path.rglob("*")]


def test_push_never_writes_through_a_linked_directory(home, cli, remote, tmp_path):
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    _link(remote / "context" / "shared", outside)
    _added(cli, "data", _files(tmp_path / "d", {"x": b"1"}))
    _refused(cli("push", "data"), "context/shared")
    assert list(outside.iterdir()) == []


def test_records_leases_and_locks_are_never_written_through_a_link(home, remote, secret):
    """A link where a record is, or where the lock of a compare-and-swap is, is refused; its target untouched."""
    with open_remote(remote.as_uri(), "shared") as r:
        runs = RunStore(r)
        _link(remote / "context" / "shared" / "runs" / f"{NODE}.json", secret)
        with pytest.raises(RemoteError, match=f"context/shared/runs/{NODE}.json .* is a symbolic link"):
            runs.write(_record())
        with pytest.raises(RemoteError, match="is a symbolic link"):
            runs.current(NODE)
        with pytest.raises(RemoteError, match="is a symbolic link"):
            r.store.delete(runs.record_key(NODE))
        victim = secret.parent / "created-through-a-lock"
        _link(remote / "context" / "shared" / "leases" / f".{NODE}.json.lock", victim)
        with pytest.raises(RemoteError, match=f"context/shared/leases/.{NODE}.json.lock .* is a symbolic link"):
            r.store.put_if(runs.lease_key(NODE), b"{}", None)
        assert not victim.exists() and not (remote / "context" / "shared" / "leases" / f"{NODE}.json").exists()
    assert secret.read_bytes() == SECRET
