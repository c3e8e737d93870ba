"""dsdt remote / push / pull on a real SeaweedFS server and on a file:// remote, and the transfer guarantees."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import DSDT, assert_user_error, new_bucket, run_dsdt, second_context, snapshot
from disdat_luigi.errors import IntegrityError
from disdat_luigi.remotes import open_remote, open_store
from disdat_luigi.remotes.remote import blob_key
from disdat_luigi.remotes.transfer import pull, push


def _files(root, spec):
    """Write {relpath: bytes} under root; return root."""
    for rel, data in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _added(cli, name, path, *tags):
    args = ["add", *sum((["-t", t] for t in tags), []), name, path]
    r = cli(*args)
    assert r.code == 0, r.err
    uuid = r.out.split()[2]
    assert cli("commit", "-u", uuid).code == 0
    return uuid


def _keys(url, prefix=""):
    """Every key on the remote under prefix (all of them by default)."""
    store = open_store(url)
    try:
        return sorted(store.list(prefix))
    finally:
        store.close()


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
    store = open_store(url)
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0xFF
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


@pytest.mark.parametrize("evil", ["../escaped.txt", "/tmp/absolute.txt", "a/../../escaped.txt"])
def test_path_traversal_in_a_remote_manifest_is_rejected(home, bound, cli, tmp_path, evil):
    uuid = _added(cli, "t", _files(tmp_path / "d", {"x.txt": b"x"}))
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
    assert_user_error(cli("pull", "-u", uuid), "unsafe file path")
    assert snapshot(home.path) == before and not other.has(uuid)
    assert not (home.path / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def _wait_until(predicate, timeout=60.0, every=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_interrupted_push_leaves_no_manifest_and_resumes(home, cli, s3_env, tmp_path):
    url = f"s3://{new_bucket(s3_env)}/p"
    assert cli("remote", "shared", url).code == 0
    src = _files(tmp_path / "d", {f"part{i:02d}.bin": os.urandom(2 * 1024 * 1024) for i in range(40)})
    uuid = _added(cli, "big", src)
    proc = subprocess.Popen([DSDT, "push", "-q", "big"], env=dict(os.environ, DISDAT_TRANSFER_WORKERS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _wait_until(lambda: len(_keys(url, "blobs/")) >= 2), "the push never started uploading"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    uploaded = len(_keys(url, "blobs/"))
    assert 2 <= uploaded < 40, uploaded
    assert _keys(url, "context/") == []  # no manifest, no marker: the bundle is not on the remote
    r = run_dsdt("push", "big")
    assert r.code == 0, r.err
    assert f"{40 - uploaded} files" in r.out and f"{uploaded} already on the remote" in r.out
    other = second_context(home, cli, url)
    assert cli("pull", "big").code == 0
    assert other.bundle(uuid).path("d/part17.bin").read_bytes() == (src / "part17.bin").read_bytes()


def test_interrupted_pull_leaves_no_bundle_and_resumes(home, cli, s3_env, tmp_path):
    url = f"s3://{new_bucket(s3_env)}/p"
    assert cli("remote", "shared", url).code == 0
    src = _files(tmp_path / "d", {f"part{i:02d}.bin": os.urandom(2 * 1024 * 1024) for i in range(40)})
    uuid = _added(cli, "big", src)
    assert cli("push", "big").code == 0
    other = second_context(home, cli, url)
    staged = other.tmp / f"pull-{uuid}" / "files" / "d"
    proc = subprocess.Popen([DSDT, "pull", "-q", "big"], env=dict(os.environ, DISDAT_TRANSFER_WORKERS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _wait_until(lambda: staged.is_dir() and len(list(staged.iterdir())) >= 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not other.has(uuid) and cli("ls").out.splitlines()[1:] == []
    r = run_dsdt("pull", "big")
    assert r.code == 0, r.err
    assert "already local" in r.out and " 0 already local" not in r.out
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
    """A multipart upload, then a pull as several ranged streams (ranges made small to get four of them)."""
    from disdat_luigi.remotes import download

    monkeypatch.setattr(download, "RANGE_MIN", 4 * 1024 * 1024)
    big = os.urandom(20 * 1024 * 1024 + 12345)
    uuid = _added(cli, "huge", _files(tmp_path / "d", {"huge.bin": big}))
    ctx = home.context()
    remote = _remote(bound)
    assert push(ctx, remote, ctx.bundle(uuid), quiet=True).bytes == len(big)
    other = second_context(home, cli, bound)
    pulled, stats = pull(other, remote, uuid, quiet=True)
    assert stats.bytes == len(big) and pulled.path("d/huge.bin").read_bytes() == big

    third = second_context(home, cli, bound, name="third")
    _corrupt(bound, blob_key(ctx.bundle(uuid).manifest.files["d/huge.bin"].sha256))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        pull(third, _remote(bound), uuid, quiet=True)
    assert not third.has(uuid) and not any(p.name == "huge.bin" for p in third.path.rglob("*"))
    remote.close()


def test_luigi_targets_follow_remote_and_local_state(home, bound, cli, tmp_path):
    from disdat_luigi.chain.targets import LocalBundleTarget, RemoteBundleTarget, RunRecordTarget
    from disdat_luigi.remotes.runs import RunRecord, RunStore

    uuid = _added(cli, "t", _files(tmp_path / "d", {"x": b"1"}))
    target = RemoteBundleTarget(bound, "shared", uuid)
    assert not target.exists()
    assert target.path.endswith(f"/context/shared/bundles/{uuid}.json") and target.path.startswith(bound)
    assert cli("push", "t").code == 0
    assert target.exists()

    node = "0123456789abcdef0123456789abcdef"
    run = RunRecordTarget(bound, "shared", node)
    assert not run.exists()
    record = RunRecord(node_id=node, run_id=node, status="running", pipe_cls="m.P", params={}, bundle_name="t",
                       backend="Local", image="sha256:x", started="2026-01-01T00:00:00.000000Z")
    with _remote(bound) as remote:
        runs = RunStore(remote)
        runs.write(record.finished("failed", "boom"))
        assert not run.exists() and run.record().error == "boom"
        runs.write(record.finished("succeeded", output_uuid=uuid))
        assert run.exists()

    local = LocalBundleTarget(str(home.path), "test", node)
    assert not local.exists()
    ctx = home.context()
    ctx.add_value("out", 1, lineage={"processing_id": node})
    assert local.exists() and local.bundle().name == "out"


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
