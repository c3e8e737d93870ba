"""A damaged local store is reported, never silently lost.

Each damage (an object file deleted or edited, a manifest deleted or broken, the bundle directory gone, a
truncated, empty or missing index.sqlite, a bad remote.json, a stray entry in objects/) makes the commands
that meet it say so in one line naming the damage and the fix, exit non-zero and change nothing. `dsdt check`
lists it; `dsdt check --repair` rebuilds the index from the manifests on disk, moves damaged bundles to
quarantine/ (nothing is deleted) and fetches them again when the remote has them. An index is never
recreated over existing objects without saying so.
"""
from __future__ import annotations

import gc
import hashlib
import os
import re
from pathlib import Path

import pytest

from conftest import assert_user_error, run_dsdt, snapshot
from conftest import write_files as _files  # noqa: E402
from disdat_luigi.remotes import open_store

REPAIR = "run `dsdt check --repair`"
INDEX_REPAIR = "run `dsdt check --repair` to rebuild it from the bundles on disk"


def _raw(root: Path):
    """Every path under root (directories too) and every file's bytes: works on a damaged index as well."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.name.endswith(("-wal", "-shm")):
            continue
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _rows(home_path: Path) -> list:
    """The index rows of context test (bundles, tags, files), as conftest.snapshot reads them."""
    return snapshot(home_path)["contexts/test/index.sqlite"]




class Store:
    def __init__(self, home, url, a, b):
        self.home, self.url, self.a, self.b = home, url, a, b
        self.ctx = home.path / "contexts" / "test"
        self.index = self.ctx / "index.sqlite"

    def obj(self, uuid: str) -> Path:
        return self.ctx / "objects" / uuid


@pytest.fixture
def store(home, cli, tmp_path):
    """Context test with two committed bundles, a (two files, tagged) and b (one file), both pushed to a file://
    remote; every connection closed, as after real commands."""
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    src = _files(tmp_path / "src", {"f1.txt": b"one", "sub/f2.bin": os.urandom(2_000_000)})
    r = cli("add", "-t", "kind:a", "a", src)
    assert r.code == 0, r.err
    a = r.out.split()[2]
    r = cli("add", "b", _files(tmp_path / "other", {"g.txt": b"gee"}) / "g.txt")
    b = r.out.split()[2]
    assert cli("commit", "-u", a).code == 0 and cli("commit", "-u", b).code == 0
    assert cli("push", "--all").code == 0
    gc.collect()   # the in-process commands' index connections: closed, so the index is checkpointed
    return Store(home, url, a, b)


def _check_finds(store: Store, *findings: str) -> None:
    before = _raw(store.home.path)
    r = run_dsdt("check")
    assert_user_error(r, f"{len(findings)} problem(s) found in the store at {store.home.path}: {REPAIR}")
    assert r.out.splitlines() == [f"test: {f}" for f in findings], r.out
    assert _raw(store.home.path) == before, "dsdt check without --repair changed the store"


def _repair(store: Store, *lines: str) -> None:
    r = run_dsdt("check", "--repair")
    assert r.code == 0 and r.err == "", r
    out = r.out.splitlines()
    assert len(out) == len(lines) + 1 and out[-1] == f"{len(lines)} problem(s) found, all repaired", r.out
    for got, want in zip(out, lines):
        assert re.fullmatch(want, got), (want, got)
    sound = run_dsdt("check")
    assert sound.code == 0 and sound.out == f"the store at {store.home.path} is sound\n", sound


def _q(text: str) -> str:
    return re.escape(text)


QUARANTINE = r"quarantine/{uuid}-\d{{8}}T\d{{6}}"


# ---------------------------------------------------------------------------------------------------
# objects: a file, a manifest, the whole directory
# ---------------------------------------------------------------------------------------------------

def test_a_deleted_object_file(store):
    (store.obj(store.a) / "files" / "src" / "f1.txt").unlink()
    before = _raw(store.home.path)
    damage = f"bundle a ({store.a}) in context test is damaged: file src/f1.txt is missing; {REPAIR}"
    assert_user_error(run_dsdt("push", "a"), damage)
    assert_user_error(run_dsdt("push", "--all"), damage)
    assert _raw(store.home.path) == before
    _check_finds(store, f"bundle a ({store.a}) is damaged: file src/f1.txt is missing")
    _repair(store, _q(f"test: bundle a ({store.a}) is damaged: file src/f1.txt is missing -> fetched again from the "
                      f"remote (the damaged copy is in ") + QUARANTINE.format(uuid=store.a) + r"\)")
    assert (store.obj(store.a) / "files" / "src" / "f1.txt").read_bytes() == b"one"
    quarantined = list((store.ctx / "quarantine").iterdir())
    assert len(quarantined) == 1 and (quarantined[0] / "manifest.json").is_file()
    assert (quarantined[0] / "files" / "src" / "sub" / "f2.bin").is_file()       # kept, never deleted
    r = run_dsdt("ls", "-v")
    assert sorted(line.split()[0] for line in r.out.splitlines()[1:]) == ["a", "b"]
    assert run_dsdt("push", "a").code == 0


def test_an_edited_object_file_without_a_remote_copy_goes_to_quarantine(store, tmp_path):
    path = store.obj(store.b) / "files" / "g.txt"
    path.write_bytes(b"GEE")                                    # same size, other bytes
    store_remote = Path(store.url[len("file://"):])
    for p in sorted(store_remote.rglob(f"*{store.b}*")):        # the remote lost its copy
        p.unlink()
    _check_finds(store, f"bundle b ({store.b}) is damaged: file g.txt was changed (its sha256 no longer matches)")
    _repair(store, _q(f"test: bundle b ({store.b}) is damaged: file g.txt was changed (its sha256 no longer matches)"
                      f" -> moved to ") + QUARANTINE.format(uuid=store.b) + _q(": the remote has no copy"))
    assert not store.obj(store.b).exists()
    (kept,) = (store.ctx / "quarantine").iterdir()
    assert (kept / "files" / "g.txt").read_bytes() == b"GEE"
    assert [line.split()[0] for line in run_dsdt("ls").out.splitlines()[1:]] == ["a"]


def test_a_deleted_manifest(store):
    (store.obj(store.a) / "manifest.json").unlink()
    before = _raw(store.home.path)
    damage = f"bundle a ({store.a}) in context test is damaged: its manifest is missing; {REPAIR}"
    for args in (("cat", "a"), ("push", "a"), ("lineage", store.a), ("commit", "-t", "x:y", "a")):
        assert_user_error(run_dsdt(*args), damage)
    assert _raw(store.home.path) == before
    _check_finds(store, f"bundle a ({store.a}) is damaged: its manifest is missing")
    _repair(store, _q(f"test: bundle a ({store.a}) is damaged: its manifest is missing -> fetched again from the "
                      f"remote (the damaged copy is in ") + QUARANTINE.format(uuid=store.a) + r"\)")
    assert run_dsdt("cat", "a").code == 0


@pytest.mark.parametrize("content, problem", [
    (b"{\"format\": 1, \"name\": ", "manifest is not valid JSON"),
    (b"{\"format\": 1, \"name\": \"a\", \"uuid\": \"0badc0de-0000-4000-8000-000000000000\", \"created\": "
     b"\"2026-01-01T00:00:00.000000Z\", \"presentation\": \"scalar\", \"files\": {}, \"data\": 1}",
     "field uuid names bundle 0badc0de-0000-4000-8000-000000000000"),
], ids=["truncated", "another-uuid"])
def test_a_broken_manifest(store, content, problem):
    (store.obj(store.b) / "manifest.json").write_bytes(content)
    before = _raw(store.home.path)
    r = run_dsdt("cat", "b")
    assert_user_error(r, f"bundle b ({store.b}) in context test is damaged: ", problem, REPAIR)
    assert _raw(store.home.path) == before
    r = run_dsdt("check")
    assert r.code == 1 and len(r.out.splitlines()) == 1
    assert r.out.startswith(f"test: bundle b ({store.b}) is damaged: ")
    r = run_dsdt("check", "--repair")
    assert r.code == 0 and "fetched again from the remote" in r.out
    assert run_dsdt("cat", "b").out.strip().startswith("[")


def test_a_bundle_directory_gone_from_under_the_index(store):
    import shutil

    shutil.rmtree(store.obj(store.b))
    assert_user_error(run_dsdt("cat", "b"), f"bundle b ({store.b}) in context test is damaged: its manifest is missing")
    _check_finds(store, f"the index lists bundle b ({store.b}), which is not on disk")
    _repair(store, _q(f"test: the index lists bundle b ({store.b}), which is not on disk -> index rebuilt from the "
                      f"manifests"))
    assert [line.split()[0] for line in run_dsdt("ls", "-v").out.splitlines()[1:]] == ["a"]


def test_a_stray_entry_in_objects(store):
    stray = store.ctx / "objects" / "not-a-bundle"
    stray.mkdir()
    (stray / "junk").write_text("?")
    _check_finds(store, "objects/not-a-bundle is not a bundle")
    _repair(store, r"test: objects/not-a-bundle is not a bundle -> moved to quarantine/not-a-bundle-\d{8}T\d{6}")
    (kept,) = (store.ctx / "quarantine").iterdir()
    assert (kept / "junk").read_text() == "?"


# ---------------------------------------------------------------------------------------------------
# the index
# ---------------------------------------------------------------------------------------------------

def _every_command_refuses(store, *fragments):
    """Reading and writing commands alike: one line, and nothing changes (no object directory is left by add)."""
    before = _raw(store.home.path)
    src = store.home.path.parent / "src" / "f1.txt"
    for args in (("ls",), ("cat", "a"), ("add", "c", src), ("commit", "-t", "k:v", "b"), ("rm", "b"),
                 ("pull", "b"), ("push", "a")):
        r = run_dsdt(*args)
        assert_user_error(r, *fragments)
    assert _raw(store.home.path) == before


@pytest.mark.parametrize("keep", [100, 4096, "half"])
def test_a_truncated_index(store, keep):
    rows = _rows(store.home.path)
    size = store.index.stat().st_size
    with open(store.index, "r+b") as f:
        f.truncate(size // 2 if keep == "half" else keep)
    _every_command_refuses(store, f"the index {store.index} is damaged (", f"): {INDEX_REPAIR}")
    r = run_dsdt("check")
    assert r.code == 1 and r.out.startswith(f"test: the index {store.index} is damaged (")
    _repair(store, _q(f"test: the index {store.index} is damaged (") + r"[^)]+" + _q(") -> index rebuilt from the "
                                                                                    "manifests"))
    assert _rows(store.home.path) == rows


def test_a_zero_byte_index(store):
    rows = _rows(store.home.path)
    store.index.write_bytes(b"")
    _every_command_refuses(store, f"the index {store.index} is empty: {INDEX_REPAIR}")
    assert store.index.stat().st_size == 0           # never recreated over the existing objects
    _check_finds(store, f"the index {store.index} is empty")
    _repair(store, _q(f"test: the index {store.index} is empty -> index rebuilt from the manifests"))
    assert _rows(store.home.path) == rows


def test_a_missing_index_is_not_recreated_over_existing_objects(store):
    rows = _rows(store.home.path)
    store.index.unlink()
    _every_command_refuses(store, f"the index {store.index} is missing: {INDEX_REPAIR}")
    assert not store.index.exists()
    _check_finds(store, f"the index {store.index} is missing")
    _repair(store, _q(f"test: the index {store.index} is missing -> index rebuilt from the manifests"))
    assert _rows(store.home.path) == rows


# ---------------------------------------------------------------------------------------------------
# remote.json
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [
    b'{"remote_context": "shared", "url": "file:///tm',
    b'{"remote_context": "shared"}',
    b'{"remote_context": "sh/ared", "url": "file:///somewhere"}',
    b'{"remote_context": "sh\\u001b[2Jared", "url": "file:///somewhere"}',
    b'{"remote_context": "shared", "url": "no-scheme-here"}',
    b'{"remote_context": "shared", "url": 7}',
    b'["shared", "file:///somewhere"]',
    b"\xff\xfe\x00",
    b"",
], ids=["truncated", "no-url", "bad-name", "control-name", "no-scheme", "url-not-text", "a-list", "not-utf8", "empty"])
def test_a_bad_remote_json(store, content):
    path = store.ctx / "remote.json"
    path.write_bytes(content)
    before = _raw(store.home.path)
    damage = (f"the remote binding of context test ({path}) is damaged: bind it again with `dsdt remote "
              f"REMOTE_CONTEXT URL`")
    for args in (("push", "a"), ("pull", "b"), ("remote",), ("context",)):
        r = run_dsdt(*args)
        assert_user_error(r, damage)
        assert "\x1b" not in r.err
    assert _raw(store.home.path) == before
    assert run_dsdt("remote", "shared", store.url).code == 0     # the fix the line names works
    assert run_dsdt("remote").out == f"test -> shared @ {store.url}\n"
    assert run_dsdt("pull", "b").code == 0


# ---------------------------------------------------------------------------------------------------
# damage never travels to the remote
# ---------------------------------------------------------------------------------------------------

def test_an_edited_file_is_not_pushed_under_its_recorded_sha256(home, cli, tmp_path):
    """A committed, unpushed bundle whose large file was edited in place (same size): pushing it must not store
    the edited bytes under the content address of the original ones, where every later push of the true bytes
    would reuse them and every pull would find them corrupt."""
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    original = os.urandom(2_000_000)
    r = cli("add", "big", _files(tmp_path / "d", {"big.bin": original}))
    uuid = r.out.split()[2]
    assert cli("commit", "-u", uuid).code == 0
    bundle = home.context().bundle(uuid)
    sha = bundle.manifest.files["d/big.bin"].sha256
    edited = bytearray(original)
    edited[1000] ^= 0xFF
    bundle.path("d/big.bin").write_bytes(bytes(edited))
    r = run_dsdt("push", "big")
    store = open_store(url)
    try:
        blobs = {key: hashlib.sha256(store.get_bytes(key)).hexdigest() for key in store.list("blobs/")}
        published = list(store.list("context/"))
    finally:
        store.close()
    assert all(key == f"blobs/{digest[:2]}/{digest}" for key, digest in blobs.items()), \
        f"the remote holds other bytes than {sha} under its content address"
    assert published == []
    assert_user_error(r, f"bundle big ({uuid}) in context test is damaged: file d/big.bin", REPAIR)
