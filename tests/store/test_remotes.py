"""dsdt remote / push / pull on a real SeaweedFS server and on a file:// remote, and the transfer guarantees."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import uuid as uuidlib
from pathlib import Path

import pytest

from conftest import DSDT, assert_user_error, new_bucket, run_dsdt, second_context, snapshot
from conftest import wait_until as _wait_until, write_files as _files, added as _added, store_keys as _keys  # noqa: E402
from disdat_luigi.errors import IntegrityError, NotFound
from disdat_luigi.remotes import open_remote, open_store
from disdat_luigi.remotes.remote import blob_key
from disdat_luigi.remotes.transfer import pull, push








def _remote(url):
    return open_remote(url, "shared")


def test_round_trip_of_files_and_values(home, bound, cli, tmp_path):
    src = _files(tmp_path / "src", {"a.txt": b"alpha", "deep/b.bin": os.urandom(3 * 1024 * 1024),
                                    "empty": b"", "same.txt": b"alpha"})
    files_uuid = _added(cli, "files", src, "kind:files")
    ctx = home.context()
    values = ctx.commit(ctx.add_value("values", {"n": 3, "xs": [1.5, None, True], "s": "text"}))
    assert cli("push", "files").code == 0 and cli("push", "values").code == 0

    other = second_context(home, cli, bound)
    r = cli("pull", "files")
    assert r.code == 0, r.err
    b = other.bundle(files_uuid)
    assert b.committed and b.tags == {"kind": "files"}
    for rel in ("a.txt", "deep/b.bin", "empty", "same.txt"):
        assert b.path(f"src/{rel}").read_bytes() == (src / rel).read_bytes()
    assert cli("pull", "-u", values.uuid).code == 0
    assert other.bundle(values.uuid).data() == {"n": 3, "xs": [1.5, None, True], "s": "text"}
    assert json.loads(cli("cat", "values").out) == {"n": 3, "xs": [1.5, None, True], "s": "text"}


def test_remote_shows_the_binding(home, bound, cli):
    assert cli("remote").out.strip() == f"test -> shared @ {bound.rstrip('/')}"


def test_push_refuses_uncommitted_and_changes_nothing(home, bound, cli, tmp_path):
    cli("add", "raw", _files(tmp_path / "d", {"x": b"1"}))
    assert_user_error(cli("push", "raw"), "not committed", "dsdt commit")
    assert _keys(bound) == []


def test_push_and_pull_bad_inputs(home, bound, cli, tmp_path):
    _added(cli, "kept", _files(tmp_path / "d", {"x": b"1"}))
    before = snapshot(home.path)
    assert_user_error(cli("push"), "exactly one")
    assert_user_error(cli("push", "kept", "--all"), "exactly one")
    assert_user_error(cli("push", "missing"), "no bundle named missing")
    assert_user_error(cli("pull", "missing"), "no bundle named missing on the remote")
    assert_user_error(cli("pull", "-u", "00000000-0000-0000-0000-000000000000"), "not on the remote")
    assert_user_error(cli("remote", "shared"), "both REMOTE_CONTEXT and URL")
    assert_user_error(cli("remote", "shared", "ftp://host/x"), "not supported")
    assert_user_error(cli("remote", "shared", "s3:///nobucket"), "no bucket")
    assert_user_error(cli("remote", "bad/name", bound), "invalid remote context name")
    assert snapshot(home.path) == before


@pytest.fixture
def no_s3(monkeypatch):
    """An endpoint nobody answers on: a request that is made fails as unreachable, never elsewhere."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.mark.parametrize("bucket", ["Bad_Bucket!", "ab", "a" * 64, "UPPER", "-dash", "dash-", "two..dots",
                                    "192.168.5.4", "under_score"])
def test_an_invalid_bucket_name_is_one_line_before_any_request(home, cli, no_s3, bucket):
    before = snapshot(home.path)
    r = cli("remote", "shared", f"s3://{bucket}/x")
    assert_user_error(r, f"invalid S3 bucket name {bucket!r}", "3 to 63 lowercase letters", "fix the remote URL")
    assert snapshot(home.path) == before


@pytest.mark.parametrize("bucket", ["abc", "my.bucket-1", "a" * 63, "1.2.3.x"])
def test_valid_bucket_names_pass_the_check(home, cli, no_s3, bucket):
    assert_user_error(cli("remote", "shared", f"s3://{bucket}/x"), "cannot reach S3 at http://127.0.0.1:9")


def test_botocores_parameter_validation_is_one_line(home, no_s3):
    """Whatever botocore refuses to send (here a bucket name no URL can give any more) is one line too."""
    from disdat_luigi.errors import RemoteError
    from disdat_luigi.remotes.s3 import S3Store

    with pytest.raises(RemoteError) as caught:
        S3Store("Bad_Bucket!", "x", 1).check()
    assert "\n" not in str(caught.value) and "Invalid bucket name" in str(caught.value)
    assert str(caught.value).endswith("fix the remote URL")


@pytest.mark.parametrize("url", ["s3://AKIAEXAMPLE:s3cr3tVALUE@bucket/prefix", "s3://AKIAEXAMPLE@bucket/p",
                                 "s3://:s3cr3tVALUE@bucket/p", "file://AKIAEXAMPLE:s3cr3tVALUE@localhost/{tmp}/r",
                                 "file://AKIAEXAMPLE:s3cr3tVALUE@/{tmp}/r"])
def test_a_remote_url_holding_credentials_is_refused_without_repeating_them(home, cli, no_s3, tmp_path, url):
    url = url.format(tmp=tmp_path.as_posix().lstrip("/"))
    before = snapshot(home.path)
    r = cli("remote", "shared", url)
    assert_user_error(r, "remote URLs must not hold credentials: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                         "AWS_PROFILE")
    assert "AKIAEXAMPLE" not in r.out + r.err and "s3cr3tVALUE" not in r.out + r.err
    assert snapshot(home.path) == before and not (tmp_path / "r").exists()
    assert cli("remote").out == "context test has no remote\n"


def test_a_url_that_does_not_parse_is_one_line_and_not_repeated(home, cli, no_s3):
    r = cli("remote", "shared", "s3://AKIAEXAMPLE:s3cr3tVALUE@[bucket/p")
    assert_user_error(r, "the remote URL is malformed")
    assert "s3cr3tVALUE" not in r.err


def test_no_remote_bound_is_one_line(home, cli, tmp_path):
    _added(cli, "kept", _files(tmp_path / "d", {"x": b"1"}))
    assert_user_error(cli("push", "kept"), "has no remote", "dsdt remote")
    assert_user_error(cli("pull", "kept"), "has no remote")


def test_s3_credentials_bucket_and_reachability_errors(home, cli, s3_env, monkeypatch, tmp_path):
    bucket = new_bucket(s3_env)
    before = snapshot(home.path)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    assert_user_error(cli("remote", "shared", f"s3://{bucket}/p"), "refused the credentials")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "wrong-key")
    assert_user_error(cli("remote", "shared", f"s3://{bucket}/p"), "refused the credentials", "InvalidAccessKeyId")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credentials: never ask an instance metadata address
    assert_user_error(cli("remote", "shared", f"s3://{bucket}/p"), "no AWS credentials")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_env.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    assert_user_error(cli("remote", "shared", "s3://no-such-bucket-here/p"),
                      "bucket no-such-bucket-here does not exist")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert_user_error(cli("remote", "shared", f"s3://{bucket}/p"), "cannot reach S3 at http://127.0.0.1:9")
    assert snapshot(home.path) == before


def test_wrong_key_is_refused_on_push_after_binding(home, cli, s3_env, monkeypatch, tmp_path):
    url = f"s3://{new_bucket(s3_env)}/p"
    assert cli("remote", "shared", url).code == 0
    _added(cli, "data", _files(tmp_path / "d", {"x": b"1" * 100}))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    assert_user_error(cli("push", "data"), "refused the credentials")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    assert _keys(url) == []


def test_small_files_travel_packed_in_a_handful_of_requests(home, bound, cli, tmp_path):
    src = _files(tmp_path / "many", {f"f{i:04d}.txt": os.urandom(1000) for i in range(2000)})
    uuid = _added(cli, "many", src)
    ctx = home.context()
    remote = _remote(bound)
    requests = []
    if bound.startswith("s3://"):
        remote.store.client.meta.events.register("before-send", lambda **kw: requests.append(1))
    stats = push(ctx, remote, ctx.bundle(uuid), quiet=True)
    assert stats.files == 2000
    packs = _keys(bound, "packs/")
    assert 1 <= len(packs) <= 5 and _keys(bound, "blobs/") == []
    if bound.startswith("s3://"):
        assert len(requests) <= 15, len(requests)
    other = second_context(home, cli, bound)
    requests.clear()
    pulled, stats = pull(other, remote, uuid, quiet=True)
    assert stats.files == 2000 and pulled.path("many/f0007.txt").read_bytes() == (src / "f0007.txt").read_bytes()
    if bound.startswith("s3://"):
        assert len(requests) <= 10, len(requests)
    remote.close()


def test_large_files_are_plain_blobs_other_tools_can_read(home, bound, cli, tmp_path):
    big = os.urandom(2 * 1024 * 1024)
    uuid = _added(cli, "big", _files(tmp_path / "d", {"big.bin": big}))
    assert cli("push", "big").code == 0
    sha = home.context().bundle(uuid).manifest.files["d/big.bin"].sha256
    store = open_store(bound)
    assert store.get_bytes(blob_key(sha)) == big
    store.close()


def test_nothing_is_sent_twice(home, bound, cli, tmp_path):
    spec = {f"small{i}.txt": os.urandom(500) for i in range(50)}
    spec.update({"big1.bin": os.urandom(1_500_000), "big2.bin": os.urandom(1_500_000)})
    src = _files(tmp_path / "d", spec)
    ctx = home.context()
    remote = _remote(bound)
    v1 = ctx.bundle(_added(cli, "data", src))
    first = push(ctx, remote, v1, quiet=True)
    assert first.files == 52
    assert push(ctx, remote, v1, quiet=True).bytes == 0  # re-push of the same bundle

    same = ctx.bundle(_added(cli, "data", src))  # a new version with identical files
    again = push(ctx, remote, same, quiet=True)
    assert (again.files, again.bytes, again.reused) == (0, 0, 52)

    (src / "small7.txt").write_bytes(b"changed")
    changed = ctx.bundle(_added(cli, "data", src))
    one = push(ctx, remote, changed, quiet=True)
    assert (one.files, one.bytes) == (1, len(b"changed"))

    (src / "big2.bin").write_bytes(os.urandom(1_500_000))
    big_changed = ctx.bundle(_added(cli, "data", src))
    one_big = push(ctx, remote, big_changed, quiet=True)
    assert (one_big.files, one_big.bytes) == (1, 1_500_000)

    other = second_context(home, cli, bound)
    pull(other, remote, v1.uuid, quiet=True)
    _, incremental = pull(other, remote, big_changed.uuid, quiet=True)  # unchanged files copied locally
    assert (incremental.files, incremental.bytes) == (2, 1_500_000 + len(b"changed"))
    assert other.bundle(big_changed.uuid).path("d/small7.txt").read_bytes() == b"changed"
    remote.close()


def test_pack_threshold_zero_turns_packing_off(home, bound, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DISDAT_PACK_THRESHOLD", "0")
    _added(cli, "loose", _files(tmp_path / "d", {f"f{i}": os.urandom(100) for i in range(5)}))
    assert cli("push", "loose").code == 0
    assert _keys(bound, "packs/") == [] and len(_keys(bound, "blobs/")) == 5


def _corrupt(url, key):
    _corrupt_at(url, key, None)


def _corrupt_at(url, key, at):
    """Flip one byte of a remote object (its middle one by default)."""
    store = open_store(url)
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2 if at is None else at] ^= 0xFF
    store.put_bytes(key, bytes(data))
    store.close()


@pytest.mark.parametrize("where", ["blob", "pack"])
def test_corrupted_bytes_are_detected_on_pull(home, bound, cli, tmp_path, where):
    uuid = _added(cli, "c", _files(tmp_path / "d", {"big.bin": os.urandom(1_200_000), "small.txt": os.urandom(900)}))
    assert cli("push", "c").code == 0
    key = (_keys(bound, "blobs/") if where == "blob" else _keys(bound, "packs/"))[0]
    _corrupt(bound, key)
    other = second_context(home, cli, bound)
    assert_user_error(cli("pull", "c"), "corrupt", "sha256 mismatch")
    assert not other.has(uuid)
    kept = [p for p in other.path.rglob("*") if p.is_file() and p.name in ("big.bin", "small.txt")]
    bad_name = "big.bin" if where == "blob" else "small.txt"
    assert bad_name not in [p.name for p in kept]


@pytest.mark.parametrize("evil", ["../{name}", "{outside}/{name}", "a/../../{name}", "a/../../../../{name}"],
                         ids=["dotdot", "absolute", "dotdot-inside", "dotdot-deep"])
def test_path_traversal_in_a_remote_manifest_is_rejected(home, bound, cli, tmp_path, evil, monkeypatch):
    """A manifest naming a file outside the bundle is refused, and the file is nowhere: not where each form of
    the path would have put it (next to the bundle's files, in the staging or objects directory, above the
    current directory, at the absolute path), nor anywhere else under this test's directory, which holds the
    store, the remote and the current directory."""
    name = f"escaped-{uuidlib.uuid4().hex}.txt"
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = evil.format(name=name, outside=outside)
    cwd = tmp_path / "cwd" / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    uuid = _added(cli, "t", _files(tmp_path / "d", {"x.txt": b"escaping bytes"}))
    assert cli("push", "t").code == 0
    remote = _remote(bound)
    key = remote.manifest_key(uuid)
    doc = json.loads(remote.store.get_bytes(key))
    doc["files"][evil] = doc["files"].pop("d/x.txt")
    doc["data"] = [{"$file": evil}]
    remote.store.put_bytes(key, json.dumps(doc).encode())
    remote.close()
    other = second_context(home, cli, bound)
    before = snapshot(home.path)
    assert_user_error(cli("pull", "-u", uuid), "unsafe file path", repr(evil)[:60])
    assert snapshot(home.path) == before and not other.has(uuid)
    would_be = [Path(os.path.normpath(base / evil)) for base in (
        other.tmp / f"pull-{uuid}" / "files", other.tmp / f"pull-{uuid}", other.objects / uuid / "files",
        other.objects / uuid, other.path, cwd)]
    assert all(p.name == name for p in would_be)
    assert [p for p in would_be if os.path.lexists(p)] == []
    assert list(tmp_path.rglob(name)) == []
    assert list(Path("/tmp").glob(name)) == []




MiB = 1024 * 1024
PART = int(1.5 * MiB)   # above the 1 MiB pack threshold: every file is a blob of its own, one PUT or GET each


def _blob_bundle(cli, tmp_path, n=8):
    """A committed bundle of n blob-sized files part00.bin ... ; returns (uuid, source directory)."""
    src = _files(tmp_path / "d", {f"part{i:02d}.bin": os.urandom(PART) for i in range(n)})
    return _added(cli, "big", src), src


def _killed_at_fault(args, spec, tmp_path, on_hold=lambda: None):
    """Run `dsdt ARGS` with one transfer worker until the fault hook holds operation ``spec`` (so every earlier
    operation finished, and none after it started); call on_hold() while it is held; then kill -9."""
    hit = tmp_path / "fault-hit"
    proc = subprocess.Popen([DSDT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, DISDAT_TRANSFER_WORKERS="1", DISDAT_FAULT=spec,
                                     DISDAT_FAULT_SIGNAL=str(hit)))
    try:
        assert _wait_until(lambda: hit.exists() or proc.poll() is not None), "the transfer never reached the fault"
        assert proc.poll() is None, proc.communicate()
        on_hold()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _recording(monkeypatch, store_cls, *methods):
    """Record the key of every call of these methods of every store of this class (in this process)."""
    keys = []
    for method in methods:
        real = getattr(store_cls, method)

        def record(self, key, *args, _real=real, **kwargs):
            keys.append(key)
            return _real(self, key, *args, **kwargs)
        monkeypatch.setattr(store_cls, method, record)
    return keys


def test_interrupted_push_leaves_no_manifest_and_resumes(home, cli, s3_env, tmp_path, monkeypatch):
    """kill -9 while the 4th of 8 blobs is being sent: the 3 before it are up, the bundle is nowhere on the
    remote (neither while the push hangs nor after), and the next push sends exactly the 5 missing blobs."""
    from disdat_luigi.remotes.s3 import S3Store

    url = f"s3://{new_bucket(s3_env)}/p"
    assert cli("remote", "shared", url).code == 0
    uuid, src = _blob_bundle(cli, tmp_path)
    shas = sorted(home.context().bundle(uuid).manifest.files[f"d/{p.name}"].sha256 for p in src.iterdir())

    def not_on_the_remote():
        assert _keys(url, "context/") == []  # no manifest, no name marker
        with _remote(url) as remote:
            assert not remote.has_bundle(uuid)
            with pytest.raises(NotFound, match="no bundle named big on the remote"):
                remote.latest("big")
        assert _keys(url, "blobs/") == sorted(blob_key(s) for s in shas[:3])

    _killed_at_fault(["push", "-q", "big"], "put:blobs/:4", tmp_path, on_hold=not_on_the_remote)
    not_on_the_remote()
    other = second_context(home, cli, url)
    assert_user_error(cli("pull", "big"), "no bundle named big on the remote")
    assert not other.has(uuid) and cli("switch", "test").code == 0

    sent = _recording(monkeypatch, S3Store, "put_bytes", "upload_file")
    r = cli("push", "big")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [f"pushed big {uuid}: 5 files, {5 * PART / 1e6:.1f} MB moved, 3 already on the "
                                  f"remote"]
    assert sorted(k for k in sent if k.startswith("blobs/")) == sorted(blob_key(s) for s in shas[3:])
    assert _keys(url, "blobs/") == sorted(blob_key(s) for s in shas)
    assert cli("switch", "other").code == 0 and cli("pull", "big").code == 0
    assert all(other.bundle(uuid).path(f"d/{p.name}").read_bytes() == p.read_bytes() for p in src.iterdir())


def test_interrupted_pull_leaves_no_bundle_and_resumes(home, cli, s3_env, tmp_path, monkeypatch):
    """kill -9 while the 4th of 8 blobs is being fetched: the 3 before it are staged and verified, no bundle
    is in the context (neither while the pull hangs nor after), and the next pull fetches exactly the other 5."""
    from disdat_luigi.remotes.s3 import S3Store

    url = f"s3://{new_bucket(s3_env)}/p"
    assert cli("remote", "shared", url).code == 0
    uuid, src = _blob_bundle(cli, tmp_path)
    manifest = home.context().bundle(uuid).manifest
    assert cli("push", "big").code == 0
    other = second_context(home, cli, url)
    staged = other.tmp / f"pull-{uuid}" / "files" / "d"
    first_three = [f"part{i:02d}.bin" for i in range(3)]

    def no_bundle_yet():
        assert not other.has(uuid) and not (other.objects / uuid).exists()
        assert run_dsdt("ls", "-v").out.splitlines()[1:] == []
        assert sorted(p.name for p in staged.iterdir()) == first_three
        assert all((staged / n).read_bytes() == (src / n).read_bytes() for n in first_three)

    _killed_at_fault(["pull", "-q", "big"], "get:blobs/:4", tmp_path, on_hold=no_bundle_yet)
    no_bundle_yet()

    fetched = _recording(monkeypatch, S3Store, "get_bytes", "open_range")
    r = cli("pull", "big")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [f"pulled big {uuid}: 5 files, {5 * PART / 1e6:.1f} MB moved, 3 already local"]
    missing = sorted(blob_key(manifest.files[f"d/part{i:02d}.bin"].sha256) for i in range(3, 8))
    assert sorted(k for k in fetched if k.startswith("blobs/")) == missing
    b = other.bundle(uuid)
    assert all(b.path(f"d/{p.name}").read_bytes() == p.read_bytes() for p in src.iterdir())
    assert list(other.tmp.iterdir()) == []


def test_concurrent_pushes_of_one_bundle(home, bound, cli, tmp_path):
    src = _files(tmp_path / "d", {**{f"s{i}": os.urandom(700) for i in range(300)}, "big": os.urandom(1_300_000)})
    uuid = _added(cli, "both", src)
    procs = [subprocess.Popen([DSDT, "push", "-q", "both"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    other = second_context(home, cli, bound)
    assert cli("pull", "both").code == 0
    b = other.bundle(uuid)
    assert all(b.path(f"d/{p.name}").read_bytes() == p.read_bytes() for p in src.iterdir())


def test_push_all_and_pull_all(home, bound, cli, tmp_path):
    u1 = _added(cli, "one", _files(tmp_path / "a", {"x": b"1"}))
    u2 = _added(cli, "two", _files(tmp_path / "b", {"y": b"2"}))
    u3 = _added(cli, "two", _files(tmp_path / "c", {"z": b"3"}))
    cli("add", "uncommitted", tmp_path / "a")
    assert cli("push", "--all").code == 0
    other = second_context(home, cli, bound)
    assert cli("pull", "--all").code == 0
    assert {r.uuid for r in other.find()} == {u1, u2, u3}
    assert other.latest("two").uuid == u3


def test_no_progress_bar_when_not_a_terminal(home, bound, cli, tmp_path):
    _added(cli, "quiet", _files(tmp_path / "d", {f"f{i}": os.urandom(100) for i in range(20)}))
    r = run_dsdt("push", "quiet")
    assert r.code == 0 and r.err == ""


def test_progress_bar_on_a_terminal(home, bound, cli, tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    _added(cli, "loud", _files(tmp_path / "d", {f"f{i}": os.urandom(100) for i in range(20)}))
    pid, fd = pty.fork()
    if pid == 0:  # child: dsdt with its stderr on a 100-column terminal
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.execv(DSDT, [DSDT, "push", "loud"])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"push loud:" in out and b"0/20 files" in out


def test_large_blob_in_parallel_ranges_is_verified(home, bound, cli, tmp_path, monkeypatch):
    """A large blob is pulled as ranged parts, several open at the same time, which together cover it exactly
    once (parts made 4 MiB: 6 of them); a byte altered in the last part still fails the sha256 check, and no
    byte of it is kept."""
    from disdat_luigi.remotes import download

    monkeypatch.setattr(download, "PART", 4 * MiB)
    big = os.urandom(20 * MiB + 12345)
    uuid = _added(cli, "huge", _files(tmp_path / "d", {"huge.bin": big}))
    ctx = home.context()
    key = blob_key(ctx.bundle(uuid).manifest.files["d/huge.bin"].sha256)
    remote = _remote(bound)
    assert push(ctx, remote, ctx.bundle(uuid), quiet=True).bytes == len(big)

    ranges, open_now, most_open = [], [0], [0]
    cond = threading.Condition()
    real_open_range = remote.store.open_range

    @contextlib.contextmanager
    def open_range(k, start, length):
        """Each stream of the blob waits (10 s at most) until two are open at once: streams read one after
        the other never get there."""
        if k != key:
            with real_open_range(k, start, length) as body:
                yield body
            return
        with cond:
            ranges.append((start, length))
            open_now[0] += 1
            most_open[0] = max(most_open[0], open_now[0])
            cond.notify_all()
            cond.wait_for(lambda: most_open[0] >= 2, timeout=10)
        try:
            with real_open_range(k, start, length) as body:
                yield body
        finally:
            with cond:
                open_now[0] -= 1

    remote.store.open_range = open_range
    other = second_context(home, cli, bound)
    pulled, stats = pull(other, remote, uuid, quiet=True)
    assert stats.bytes == len(big) and pulled.path("d/huge.bin").read_bytes() == big
    assert most_open[0] >= 2, f"the ranges were read one at a time: {ranges}"
    starts = sorted(ranges)
    assert len(starts) == 6 and len(set(starts)) == 6, starts
    assert starts[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(starts, starts[1:]))
    assert starts[-1][0] + starts[-1][1] == len(big)

    third = second_context(home, cli, bound, name="third")
    _corrupt_at(bound, key, len(big) - 100)  # in the last of the six parts
    ranges.clear()
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        pull(third, remote, uuid, quiet=True)
    assert len(ranges) == 6
    assert not third.has(uuid) and not any(p.name == "huge.bin" for p in third.path.rglob("*"))
    remote.close()


def test_luigi_targets_follow_remote_and_local_state(home, bound, cli, tmp_path):
    from disdat_luigi.chain.targets import LocalBundleTarget, RemoteBundleTarget, RunRecordTarget
    from disdat_luigi.runs.record import RunRecord
    from disdat_luigi.runs.store import RunStore

    uuid = _added(cli, "t", _files(tmp_path / "d", {"x": b"1"}))
    target = RemoteBundleTarget(bound, "shared", uuid)
    assert not target.exists()
    assert target.path.endswith(f"/context/shared/bundles/{uuid}.json") and target.path.startswith(bound)
    assert cli("push", "t").code == 0
    assert target.exists()

    node = "0123456789abcdef0123456789abcdef"
    run = RunRecordTarget(bound, "shared", node)
    local = LocalBundleTarget(str(home.path), "test", node)
    assert not run.exists() and not local.exists()
    record = RunRecord(node_id=node, run_id=node, status="running", pipe_cls="m.P", params={}, bundle_name="out",
                       backend="Local", image="sha256:x", started="2026-01-01T00:00:00.000000Z")
    ctx = home.context()
    with _remote(bound) as remote:
        runs = RunStore(remote)
        runs.write(record.finished("failed", "boom"))
        assert not run.exists() and run.record().error == "boom"
        runs.write(record.finished("succeeded", output_uuid=uuid))
        assert not run.exists()   # succeeded, but its output is a bundle this node did not make
        made = ctx.commit(ctx.add_value("out", 1, lineage={"processing_id": node}))
        assert local.exists() and local.bundle().name == "out"
        runs.write(record.finished("succeeded", output_uuid=made.uuid))
        assert not run.exists()   # its output is not on the remote
        push(ctx, remote, made, quiet=True)
        assert run.exists()


def test_s3_settings_from_luigi_cfg(home, cli, s3_env, monkeypatch, tmp_path):
    """luigi's own [s3] section (endpoint, region, keys) is enough: no AWS_* variables at all."""
    bucket = new_bucket(s3_env)
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var)
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(f"[s3]\nendpoint_url = {s3_env.endpoint}\nregion_name = us-east-1\n"
                   f"aws_access_key_id = {s3_env.access_key}\naws_secret_access_key = {s3_env.secret_key}\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(cfg))
    assert cli("remote", "shared", f"s3://{bucket}/cfg").code == 0
    uuid = _added(cli, "viacfg", _files(tmp_path / "d", {"x.txt": b"configured"}))
    assert cli("push", "viacfg").code == 0
    assert f"cfg/context/shared/bundles/{uuid}.json" in [k for k in _keys(f"s3://{bucket}")]
