"""Leftovers are cleaned, and a dropped transfer is told from a damaged object.

* A staging directory of a killed `dsdt add` (its lock free) is removed by the next command that stages in the
  context, once past its grace period; one a live process holds is never touched; an interrupted pull's is
  kept for an hour (it resumes) and removed after; `dsdt check` lists them and `--repair` removes them.
* A multipart upload of an interrupted push (SIGINT, SIGTERM) is not left open on S3; one a SIGKILL left open
  is journaled and aborted by the next push from the context, and nobody else's upload is touched.
* Through a real TCP proxy in front of SeaweedFS that cuts a GET response mid-body: a dropped connection says
  "run the command again, the remote copy is not known to be damaged", while a remote object that is short or
  altered says it is corrupt.
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import DSDT, assert_user_error, new_bucket, run_dsdt, snapshot
from conftest import wait_until as _wait_until, write_files as _files  # noqa: E402
from disdat_luigi.remotes import open_remote
from disdat_luigi.remotes.remote import blob_key
from disdat_luigi.store.context import lock_is_free

MB = 1000 * 1000
HOUR = 3600






def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _added(cli, name, *paths):
    r = cli("add", name, *paths)
    assert r.code == 0, r.err
    uuid = r.out.split()[2]
    assert cli("commit", "-u", uuid).code == 0
    return uuid


# ---------------------------------------------------------------------------------------------------
# staging directories of killed commands
# ---------------------------------------------------------------------------------------------------

FIRST = b"first file, copied before the add blocks"


def _blocked_add(tmp_path: Path, name: str) -> tuple:
    """A real `dsdt add` that copied a.txt into its staging directory and now waits for ever on a FIFO."""
    src = _files(tmp_path / f"src-{name}", {"a.txt": FIRST})
    os.mkfifo(src / "z.fifo")
    proc = subprocess.Popen([DSDT, "add", name, str(src)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, src


def _staged(ctx_tmp: Path, name: str):
    found = [p for p in ctx_tmp.glob(f"stage-*/files/src-{name}/a.txt")]
    return found[0].parents[2] if found else None


def test_a_killed_adds_staging_is_swept_by_the_next_add_and_a_live_one_never(home, cli, tmp_path):
    tmp = home.context().tmp
    proc, _ = _blocked_add(tmp_path, "slow")
    try:
        assert _wait_until(lambda: _staged(tmp, "slow") is not None), "the add never staged its first file"
        stage = _staged(tmp, "slow")
        lock = tmp / f"{stage.name}.lock"
        _age(stage, 2 * HOUR)                           # old, but its owner is alive
        assert not lock_is_free(lock)
        _added(cli, "other", _files(tmp_path / "o", {"o.txt": b"o"}))
        assert stage.is_dir() and lock.exists(), "a live add's staging directory was removed"
        r = run_dsdt("check")
        assert r.code == 0 and "is sound" in r.out, r
    finally:
        proc.kill()
        proc.wait()
    assert lock_is_free(lock) and stage.is_dir()        # SIGKILL: the kernel freed the lock, the files stay
    _age(stage, 5)                                      # within the grace period: could be a starting command
    _added(cli, "young", _files(tmp_path / "y", {"y.txt": b"y"}))
    assert stage.is_dir()
    _age(stage, 60)
    r = run_dsdt("add", "next", _files(tmp_path / "n", {"n.txt": b"n"}))
    assert r.code == 0, r.err
    assert not stage.exists() and not lock.exists()
    assert list(tmp.iterdir()) == []
    assert [row.name for row in home.context().find()] == ["next", "other", "young"]
    assert run_dsdt("check").out == f"the store at {home.path} is sound\n"


def test_dsdt_check_lists_leftovers_and_repair_removes_them(home, cli, tmp_path):
    tmp = home.context().tmp
    procs = [_blocked_add(tmp_path, n)[0] for n in ("one", "two")]
    try:
        assert _wait_until(lambda: all(_staged(tmp, n) for n in ("one", "two")))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    stages = [_staged(tmp, n) for n in ("one", "two")]
    for s in stages:
        _age(s, 2 * HOUR)
    trash = tmp / "trash-0badc0de-0000-4000-8000-000000000000-1"     # a removal killed half-way
    _files(trash, {"files/x": b"x" * 10})
    _age(trash, 30)
    before = snapshot(home.path)
    r = run_dsdt("check")
    assert_user_error(r, f"3 problem(s) found in the store at {home.path}: run `dsdt check --repair`")
    killed = "from a command that was killed"
    assert sorted(r.out.splitlines()) == sorted(
        [f"test: leftover staging directory {s.name} ({len(FIRST)} B, 2.0 h old) {killed}" for s in stages]
        + [f"test: leftover trash directory {trash.name} (10 B, 0.0 h old) {killed}"]), r.out
    assert snapshot(home.path) == before
    r = run_dsdt("check", "--repair")
    assert r.code == 0 and r.out.splitlines()[-1] == "3 problem(s) found, all repaired", r
    assert all(line.endswith(" -> removed") for line in r.out.splitlines()[:-1])
    assert list(tmp.iterdir()) == []
    assert run_dsdt("check").out == f"the store at {home.path} is sound\n"


def _killed_pull(home, cli, tmp_path):
    """A pull killed (deterministically, by the fault hook) while fetching: returns (uuid, its staging dir)."""
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    uuid = _added(cli, "data", _files(tmp_path / "d", {f"f{i}.bin": os.urandom(600_000) for i in range(6)}))
    assert cli("push", "data").code == 0
    assert cli("context", "other").code == 0 and cli("switch", "other").code == 0
    assert cli("remote", "shared", url).code == 0
    signal_file = tmp_path / "fault-hit"
    proc = subprocess.Popen([DSDT, "pull", "-q", "data"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, DISDAT_FAULT="get:packs/:2", DISDAT_FAULT_SIGNAL=str(signal_file),
                                     DISDAT_TRANSFER_WORKERS="1"))
    try:
        assert _wait_until(signal_file.exists), "the pull never reached its second pack"
    finally:
        proc.kill()
        proc.wait()
    ctx = home.context("other")
    staging = ctx.tmp / f"pull-{uuid}"
    assert staging.is_dir() and lock_is_free(ctx.tmp / f"pull-{uuid}.lock") and not ctx.has(uuid)
    return uuid, staging


def test_an_interrupted_pulls_staging_is_kept_for_an_hour_then_swept(home, cli, tmp_path):
    uuid, staging = _killed_pull(home, cli, tmp_path)
    _age(staging, 30 * 60)
    assert run_dsdt("add", "x", _files(tmp_path / "x", {"x": b"x"})).code == 0
    assert staging.is_dir(), "a resumable pull was swept within the hour"
    r = run_dsdt("check")
    assert r.code == 1 and re.fullmatch(rf"other: leftover pull directory pull-{uuid} \([\d.]+ [KM]?B, 0\.5 h old\) "
                                        r"from a command that was killed\n", r.out), r.out
    _age(staging, 2 * HOUR)
    assert run_dsdt("add", "y", _files(tmp_path / "y", {"y": b"y"})).code == 0
    assert not staging.exists() and not (staging.parent / f"pull-{uuid}.lock").exists()
    assert run_dsdt("pull", "data").code == 0


# ---------------------------------------------------------------------------------------------------
# a real TCP proxy in front of SeaweedFS: holds a request, or cuts a response mid-body
# ---------------------------------------------------------------------------------------------------

class Proxy:
    """Forwards 127.0.0.1:port to the S3 server byte for byte. ``hold`` (a regex on request bytes) parks a
    matching request until ``release`` is set (``held`` tells when one arrived); ``cut`` (a regex) forwards the
    response to a matching request only up to ``keep`` bytes of its body, then drops the connection."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.hold = None
        self.held = threading.Event()
        self.release = threading.Event()
        self.cut = None
        self.keep = 0
        self.cuts = 0
        self._sockets = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self.release.set()
        for s in [self.listener, *self._sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            state = {"cut": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client, server, state) -> None:
        try:
            while True:
                data = client.recv(1 << 16)
                if not data:
                    break
                if self.hold and re.search(self.hold, data):
                    self.held.set()
                    self.release.wait()
                if self.cut and re.search(self.cut, data):
                    state["cut"] = True
                server.sendall(data)
        except OSError:
            pass
        finally:
            try:
                server.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _down(self, server, client, state) -> None:
        head = b""
        try:
            while True:
                data = server.recv(1 << 16)
                if not data:
                    break
                if state["cut"]:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    body = head[end + 4:]
                    if len(body) < self.keep:
                        continue
                    client.sendall(head[:end + 4] + body[:self.keep])
                    self.cuts += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        for s in (client, server):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def proxy(s3_env):
    p = Proxy(s3_env.endpoint)
    try:
        yield p
    finally:
        p.close()


def _s3(server):
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key, region_name="us-east-1")


def _open_uploads(server, bucket):
    return [(u["Key"], u["UploadId"]) for u in _s3(server).list_multipart_uploads(Bucket=bucket).get("Uploads", ())]


# ---------------------------------------------------------------------------------------------------
# multipart uploads
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def big_bundle(home, cli, s3_env, tmp_path):
    """A committed bundle with one 10 MB file (a multipart upload of one part), in a context bound to a bucket."""
    bucket = new_bucket(s3_env)
    url = f"s3://{bucket}/shared"
    assert cli("remote", "shared", url).code == 0
    uuid = _added(cli, "big", _files(tmp_path / "d", {"big.bin": os.urandom(10 * MB)}))
    sha = home.context().bundle(uuid).manifest.files["d/big.bin"].sha256
    return bucket, url, uuid, f"shared/{blob_key(sha)}"


def _push_held_at_its_first_part(proxy):
    """`dsdt push big` through the proxy, parked once S3 has started the multipart upload and a part is sent."""
    proxy.hold = rb"^PUT [^ ]*[?&]partNumber="
    proc = subprocess.Popen([DSDT, "push", "-q", "big"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, AWS_ENDPOINT_URL=proxy.url))
    assert proxy.held.wait(30), "the push never sent a part"
    return proc


def _journal(home):
    return sorted((home.context().tmp / "uploads").glob("*.json"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_push_leaves_no_multipart_upload_open(home, s3_env, proxy, big_bundle, sig):
    bucket, url, uuid, key = big_bundle
    proc = _push_held_at_its_first_part(proxy)
    try:
        assert [k for k, _ in _open_uploads(s3_env, bucket)] == [key]
        proc.send_signal(sig)
        time.sleep(0.5)                                  # let the signal land while the part is in flight
        proxy.release.set()
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert _open_uploads(s3_env, bucket) == []
    assert not any(k.startswith("shared/context/") for k in _keys(s3_env, bucket))
    assert _journal(home) == []
    assert err.splitlines() == ["dsdt: interrupted"], err        # like Ctrl-C: one line, no traceback


def _keys(server, bucket):
    return [o["Key"] for o in _s3(server).list_objects_v2(Bucket=bucket).get("Contents", ())]


@pytest.mark.timeout(60)
def test_an_upload_a_sigkill_left_open_is_aborted_by_the_next_push(home, cli, s3_env, proxy, big_bundle, tmp_path):
    bucket, url, uuid, key = big_bundle
    s3 = _s3(s3_env)
    someone_elses = s3.create_multipart_upload(Bucket=bucket, Key="shared/blobs/00/not-ours")["UploadId"]
    proc = _push_held_at_its_first_part(proxy)
    proc.kill()
    proc.wait()
    (ours,) = [u for k, u in _open_uploads(s3_env, bucket) if k == key]
    (journal,) = _journal(home)
    assert lock_is_free(journal)
    _added(cli, "small", _files(tmp_path / "s", {"s.txt": b"small"}))
    r = run_dsdt("push", "small")                       # another bundle: no multipart of its own
    assert r.code == 0, r.err
    assert _open_uploads(s3_env, bucket) == [("shared/blobs/00/not-ours", someone_elses)]
    assert _journal(home) == [] and ours not in [u for _, u in _open_uploads(s3_env, bucket)]
    r = run_dsdt("push", "big")                         # the interrupted push itself completes
    assert r.code == 0, r.err
    assert _open_uploads(s3_env, bucket) == [("shared/blobs/00/not-ours", someone_elses)]
    s3.abort_multipart_upload(Bucket=bucket, Key="shared/blobs/00/not-ours", UploadId=someone_elses)


def test_a_journal_entry_of_a_live_push_is_left_alone(home, s3_env, big_bundle):
    """A journal whose lock is held (a push still running) is not a dead push's."""
    from disdat_luigi.remotes.uploads import abort_orphaned

    bucket, url, uuid, key = big_bundle
    s3 = _s3(s3_env)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    directory = home.context().tmp / "uploads"
    directory.mkdir(parents=True)
    journal = directory / "live.json"
    with open(journal, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write('{"url": "%s", "key": "%s", "started": %f}' % (url, key[len("shared/"):], time.time()))
        f.flush()
        with open_remote(url, "shared") as remote:
            assert abort_orphaned(home.context(), remote.store) == 0
        assert _open_uploads(s3_env, bucket) == [(key, upload)]
    with open_remote(url, "shared") as remote:      # its lock is free now: that push is dead
        assert abort_orphaned(home.context(), remote.store) == 1
    assert _open_uploads(s3_env, bucket) == [] and not journal.exists()


# ---------------------------------------------------------------------------------------------------
# a dropped connection is not a damaged object
# ---------------------------------------------------------------------------------------------------

OBJECTS = {
    "pack": ({"small.txt": 900_000}, r"GET [^ ]*/packs/"),
    "blob": ({"mid.bin": 3 * MB}, r"GET [^ ]*/blobs/"),
    "large-blob": ({"large.bin": 12 * MB}, r"GET [^ ]*/blobs/"),
}


@pytest.fixture
def pulled_through(home, cli, s3_env, tmp_path, request):
    """One object of the given kind pushed to a bucket; a second context bound to it, pulling through a proxy."""
    spec, pattern = OBJECTS[request.param]
    bucket = new_bucket(s3_env)
    url = f"s3://{bucket}/shared"
    assert cli("remote", "shared", url).code == 0
    contents = {name: os.urandom(size) for name, size in spec.items()}
    uuid = _added(cli, "obj", _files(tmp_path / "d", contents))
    assert cli("push", "obj").code == 0
    assert cli("context", "other").code == 0 and cli("switch", "other").code == 0
    assert cli("remote", "shared", url).code == 0
    (key,) = [k for k in _keys(s3_env, bucket) if "/packs/" in k or "/blobs/" in k]
    return bucket, url, uuid, key, pattern, contents


def _damage(server, bucket, key, how):
    s3 = _s3(server)
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if how == "short":
        data = data[: len(data) // 2]
    else:
        data = bytearray(data)
        data[len(data) // 3] ^= 0xFF
        data = bytes(data)
    s3.put_object(Bucket=bucket, Key=key, Body=data)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pulled_through", list(OBJECTS), indirect=True)
def test_a_connection_cut_mid_body_is_a_dropped_transfer_not_a_corrupt_object(home, s3_env, proxy, pulled_through,
                                                                            monkeypatch):
    bucket, url, uuid, key, pattern, contents = pulled_through
    proxy.cut, proxy.keep = pattern.encode(), 200_000
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    before = snapshot(home.path)
    r = run_dsdt("pull", "-q", "obj", timeout=60)
    assert proxy.cuts >= 1
    assert_user_error(r, f"the connection to S3 at {proxy.url} dropped during s3://{bucket}/",
                      key.split("/", 1)[1] + " (",
                      "run the command again (what was verified is kept; the remote copy is not known to be "
                      "damaged)")
    assert "corrupt" not in r.err and "damaged:" not in r.err
    ctx = home.context("other")
    assert not ctx.has(uuid)
    assert {k: v for k, v in snapshot(home.path).items() if "/tmp/" not in k} == \
        {k: v for k, v in before.items() if "/tmp/" not in k}
    proxy.cut = None                                     # the network is fine again: the same pull completes
    r = run_dsdt("pull", "-q", "obj", timeout=60)
    assert r.code == 0, r.err
    bundle = home.context("other").bundle(uuid)
    assert all(bundle.path(f"d/{name}").read_bytes() == data for name, data in contents.items())
    assert list(ctx.tmp.iterdir()) == []


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how, fragment", [("short", "corrupt"), ("altered", "is corrupt (sha256 mismatch)")])
@pytest.mark.parametrize("pulled_through", list(OBJECTS), indirect=True)
def test_a_short_or_altered_remote_object_is_corrupt(home, s3_env, pulled_through, how, fragment):
    bucket, url, uuid, key, pattern, contents = pulled_through
    _damage(s3_env, bucket, key, how)
    before = snapshot(home.path)
    r = run_dsdt("pull", "-q", "obj", timeout=60)
    (name,) = contents
    assert_user_error(r, "re-push the bundle from a good copy")
    line = r.err.strip()
    if how == "short":
        assert ("is corrupt (the object holds" in line and f"of the {len(contents[name])} bytes its manifest says"
                in line) or "is shorter than its manifest says: the remote copy is damaged" in line, line
    else:
        assert f"d/{name} from remote {url} is corrupt (sha256 mismatch); it was not kept" in line, line
    assert "connection" not in line and "run the command again" not in line
    assert not home.context("other").has(uuid)
    assert {k: v for k, v in snapshot(home.path).items() if "/tmp/" not in k} == \
        {k: v for k, v in before.items() if "/tmp/" not in k}
    kept = [str(p) for p in (home.path / "contexts" / "other").rglob("*") if p.name == name]
    assert kept == [], "the bad bytes were kept"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("pulled_through", ["pack"], indirect=True)
def test_a_dropped_transfer_names_the_objects_full_url(home, s3_env, proxy, pulled_through, monkeypatch):
    """The line names the object where it is, s3://bucket/prefix/key, so that the user can look at it."""
    bucket, url, uuid, key, pattern, contents = pulled_through
    proxy.cut, proxy.keep = pattern.encode(), 200_000
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    r = run_dsdt("pull", "-q", "obj", timeout=60)
    assert_user_error(r, f"dropped during s3://{bucket}/{key} (")
