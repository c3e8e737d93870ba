"""Documented behaviours of the store tier that no other test guarded, each through the real `dsdt` or the
library it calls:

* `dsdt push -q` / `pull -q` hide the progress bar that a terminal otherwise shows;
* `[disdat] s3_max_attempts` is the number of attempts botocore makes for a failing S3 call (luigi.cfg, and
  the environment over it);
* a pull that would copy a file from a local bundle refetches it from the remote when that local file was
  edited by hand, and keeps only verified bytes;
* a file:// push and a file:// pull killed part-way send / fetch only what is missing when run again, and
  no half bundle exists meanwhile;
* from the configuration table: `[disdat] home` from luigi.cfg and DISDAT_HOME over it, `pipe_root`
  defaulting to the current directory, `pack_threshold` as the size from which files are blobs,
  `transfer_workers` as the bound on parallel requests; and `dsdt remote` of an unbound context.
"""
from __future__ import annotations

import fcntl
import http.server
import os
import pty
import signal
import struct
import subprocess
import termios
import threading

import pytest

from conftest import DSDT, PIPES, REPO, assert_user_error, new_bucket, run_dsdt, second_context
from conftest import wait_until as _wait_until, write_files as _files, added as _added, store_keys as _keys  # noqa: E402
from disdat_luigi.remotes import open_remote
from disdat_luigi.remotes.file import FileStore
from disdat_luigi.remotes.remote import blob_key

MiB = 1024 * 1024










# ---------------------------------------------------------------------------------------------------
# -q on a terminal
# ---------------------------------------------------------------------------------------------------

def _on_a_terminal(*args):
    """`dsdt ARGS` with its stderr on a 120-column pseudo-terminal: (exit code, stdout, what the terminal got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen([DSDT, *map(str, args)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the terminal has no writer left
            break
        if not chunk:
            break
        shown += chunk
    out = proc.stdout.read().decode()
    proc.wait(timeout=60)
    proc.stdout.close()
    os.close(master)
    return proc.returncode, out, shown.decode(errors="replace")


def test_q_hides_the_progress_bar_that_a_terminal_shows(home, bound, cli, tmp_path):
    src = _files(tmp_path / "d", {f"f{i:02d}": os.urandom(3000) for i in range(20)})
    loud = _added(cli, "loud", src)
    code, out, shown = _on_a_terminal("push", "loud")
    assert code == 0 and out == f"pushed loud {loud}: 20 files, 0.1 MB moved, 0 already on the remote\n"
    assert "push loud:" in shown and "/20 files" in shown, shown
    quiet = _added(cli, "quiet", _files(tmp_path / "e", {f"f{i:02d}": os.urandom(3000) for i in range(20)}))
    code, out, shown = _on_a_terminal("push", "-q", "quiet")
    assert code == 0 and out == f"pushed quiet {quiet}: 20 files, 0.1 MB moved, 0 already on the remote\n"
    assert shown == ""

    second_context(home, cli, bound)
    code, out, shown = _on_a_terminal("pull", "loud")
    assert code == 0 and out == f"pulled loud {loud}: 20 files, 0.1 MB moved, 0 already local\n"
    assert "pull loud:" in shown and "/20 files" in shown, shown
    code, out, shown = _on_a_terminal("pull", "-q", "quiet")
    assert code == 0 and out == f"pulled quiet {quiet}: 20 files, 0.1 MB moved, 0 already local\n"
    assert shown == ""


# ---------------------------------------------------------------------------------------------------
# [disdat] s3_max_attempts
# ---------------------------------------------------------------------------------------------------

class _Unavailable(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request 503 Service Unavailable, and counts them."""

    BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
            b'<Message>Please reduce your request rate.</Message></Error>')

    def _answer(self):
        self.server.requests.append((self.command, self.path.split("?")[0]))
        if int(self.headers.get("Content-Length") or 0):
            self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(self.BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.BODY)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def unavailable_s3():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_s3_max_attempts_is_the_number_of_attempts_of_a_failing_call(home, cli, s3_env, tmp_path, unavailable_s3):
    """Bound to a real bucket, then pointed at an endpoint that answers 503: the push's first call is tried
    exactly s3_max_attempts times (luigi.cfg's value, or the environment's over it), then fails in one line."""
    bucket = new_bucket(s3_env)
    assert cli("remote", "shared", f"s3://{bucket}/p").code == 0
    _added(cli, "data", _files(tmp_path / "d", {"x.txt": b"x"}))
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text("[disdat]\ns3_max_attempts = 4\n")
    endpoint = f"http://127.0.0.1:{unavailable_s3.server_address[1]}"
    uuid = home.context().latest("data").uuid
    made = {}
    for env, attempts in (({}, 4), ({"DISDAT_S3_MAX_ATTEMPTS": "2"}, 2)):
        unavailable_s3.requests.clear()
        r = run_dsdt("push", "data", env={"LUIGI_CONFIG_PATH": str(cfg), "AWS_ENDPOINT_URL": endpoint, **env},
                     timeout=120)
        assert_user_error(r)
        assert r.err == (f"dsdt: error: S3 error on s3://{bucket}/p/context/shared/bundles/{uuid}.json: 503 Service "
                         f"Unavailable\n")
        assert len(set(unavailable_s3.requests)) == 1, unavailable_s3.requests  # one call, tried again and again
        made[attempts] = len(unavailable_s3.requests)
    assert made == {4: 4, 2: 2}, f"requests made for each s3_max_attempts: {made}"
    assert _keys(f"s3://{bucket}/p") == []


# ---------------------------------------------------------------------------------------------------
# a hand-edited local file is not copied into a pulled bundle
# ---------------------------------------------------------------------------------------------------

def test_a_hand_edited_local_file_is_fetched_again_instead_of_copied(home, bound, cli, tmp_path):
    """v1 and v2 share shared.bin. A context holding v1 pulls v2 by copying shared.bin from v1 (one file
    fetched, one local); when v1's copy was edited by hand, the pull fetches it from the remote instead, and
    v2 holds the good bytes."""
    good = os.urandom(200_000)
    v1 = _added(cli, "data", _files(tmp_path / "v1", {"shared.bin": good, "one.txt": b"one"}))
    v2 = _added(cli, "data", _files(tmp_path / "v2", {"shared.bin": good, "two.txt": b"two"}))
    assert cli("push", "-u", v1).code == 0 and cli("push", "-u", v2).code == 0

    control = second_context(home, cli, bound, name="control")
    assert cli("pull", "-u", v1).code == 0
    r = cli("pull", "-u", v2)
    assert r.out == f"pulled data {v2}: 1 files, 0.0 MB moved, 1 already local\n"   # shared.bin was copied
    assert control.bundle(v2).path("v2/shared.bin").read_bytes() == good

    edited = second_context(home, cli, bound, name="edited")
    assert cli("pull", "-u", v1).code == 0
    local = edited.bundle(v1).path("v1/shared.bin")
    bad = bytearray(good)
    bad[1000] ^= 0xFF
    local.write_bytes(bytes(bad))   # same size, other bytes: the index still says it holds shared.bin's sha256
    r = cli("pull", "-u", v2)
    assert r.code == 0, r.err
    assert r.out == f"pulled data {v2}: 2 files, 0.2 MB moved, 0 already local\n"  # shared.bin came from the remote
    pulled = edited.bundle(v2)
    assert pulled.path("v2/shared.bin").read_bytes() == good and pulled.path("v2/two.txt").read_bytes() == b"two"
    assert local.read_bytes() == bytes(bad)   # the pull fixes nothing it was not asked for (`dsdt check` does)
    assert list(edited.tmp.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# file:// push and pull killed part-way, then resumed
# ---------------------------------------------------------------------------------------------------

PART = int(1.5 * MiB)   # blobs: one object, one put or get each


def _killed_at_fault(args, spec, tmp_path, on_hold):
    """`dsdt ARGS` with one transfer worker, held by the fault hook at operation ``spec`` (every earlier one
    finished, none after it started); on_hold() runs while it is held, then kill -9."""
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


def _recording(monkeypatch, *methods):
    """The keys of every call of these FileStore methods in this process."""
    keys = []
    for method in methods:
        real = getattr(FileStore, method)

        def record(self, key, *args, _real=real, **kwargs):
            keys.append(key)
            return _real(self, key, *args, **kwargs)
        monkeypatch.setattr(FileStore, method, record)
    return keys


def _identity(path):
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


@pytest.fixture
def file_remote(home, cli, tmp_path):
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    return url


def test_a_killed_file_push_resumes_sending_only_what_is_missing(home, cli, file_remote, tmp_path, monkeypatch):
    src = _files(tmp_path / "d", {f"part{i}.bin": os.urandom(PART) for i in range(6)})
    uuid = _added(cli, "big", src)
    shas = sorted(e.sha256 for e in home.context().bundle(uuid).manifest.files.values())
    root = tmp_path / "remote"

    def nothing_published():
        assert _keys(file_remote, "context/") == []
        with open_remote(file_remote, "shared") as remote:
            assert not remote.has_bundle(uuid) and remote.versions("big") == []
        assert _keys(file_remote, "blobs/") == [blob_key(s) for s in shas[:2]]

    _killed_at_fault(["push", "-q", "big"], "put:blobs/:3", tmp_path, nothing_published)
    nothing_published()
    before = {s: _identity(root / blob_key(s)) for s in shas[:2]}

    sent = _recording(monkeypatch, "put_bytes", "upload_file")
    r = cli("push", "big")
    assert r.out == f"pushed big {uuid}: 4 files, {4 * PART / 1e6:.1f} MB moved, 2 already on the remote\n", r
    assert sorted(k for k in sent if k.startswith("blobs/")) == [blob_key(s) for s in shas[2:]]
    assert {s: _identity(root / blob_key(s)) for s in shas[:2]} == before   # not written again
    other = second_context(home, cli, file_remote)
    assert cli("pull", "big").code == 0
    assert all(other.bundle(uuid).path(f"d/{p.name}").read_bytes() == p.read_bytes() for p in src.iterdir())


def test_a_killed_file_pull_resumes_fetching_only_what_is_missing(home, cli, file_remote, tmp_path, monkeypatch):
    src = _files(tmp_path / "d", {f"part{i}.bin": os.urandom(PART) for i in range(6)})
    uuid = _added(cli, "big", src)
    manifest = home.context().bundle(uuid).manifest
    assert cli("push", "big").code == 0
    other = second_context(home, cli, file_remote)
    staged = other.tmp / f"pull-{uuid}" / "files" / "d"

    def no_bundle_yet():
        assert not other.has(uuid) and not (other.objects / uuid).exists()
        assert run_dsdt("ls", "-v").out.splitlines()[1:] == []
        assert sorted(p.name for p in staged.iterdir()) == ["part0.bin", "part1.bin"]
        assert all((staged / n).read_bytes() == (src / n).read_bytes() for n in ("part0.bin", "part1.bin"))

    _killed_at_fault(["pull", "-q", "big"], "get:blobs/:3", tmp_path, no_bundle_yet)
    no_bundle_yet()
    before = {n: _identity(staged / n) for n in ("part0.bin", "part1.bin")}

    fetched = _recording(monkeypatch, "get_bytes", "open_range")
    r = cli("pull", "big")
    assert r.out == f"pulled big {uuid}: 4 files, {4 * PART / 1e6:.1f} MB moved, 2 already local\n", r
    assert sorted(k for k in fetched if k.startswith("blobs/")) == sorted(
        blob_key(manifest.files[f"d/part{i}.bin"].sha256) for i in range(2, 6))
    b = other.bundle(uuid)
    assert {n: _identity(b.path(f"d/{n}")) for n in before} == before   # the staged files, kept as they were
    assert all(b.path(f"d/{p.name}").read_bytes() == p.read_bytes() for p in src.iterdir())
    assert list(other.tmp.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# the configuration table
# ---------------------------------------------------------------------------------------------------

def test_home_comes_from_luigi_cfg_and_disdat_home_overrides_it(tmp_path, monkeypatch):
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(f"[disdat]\nhome = {tmp_path / 'from-cfg'}\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(cfg))
    monkeypatch.delenv("DISDAT_HOME")
    r = run_dsdt("init")
    assert (r.code, r.out, r.err) == (0, f"initialized: {tmp_path / 'from-cfg'}\n", "")
    r = run_dsdt("init", env={"DISDAT_HOME": str(tmp_path / "from-env")})
    assert (r.code, r.out, r.err) == (0, f"initialized: {tmp_path / 'from-env'}\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from-cfg", "from-env", "luigi.cfg"]


def test_pipe_root_defaults_to_the_current_directory(home, cli, tmp_path):
    _files(tmp_path / "texts", {"a.txt": b"the cat and the hat\n"})
    assert cli("add", "texts", tmp_path / "texts").code == 0
    r = run_dsdt("apply", "texts", "counts", "wordcount.WordCount", cwd=PIPES)  # no luigi.cfg there
    assert r.code == 0, r.err
    assert home.context().latest("counts").data()["top"][0] == ["the", 2]
    (tmp_path / "elsewhere").mkdir()
    assert_user_error(run_dsdt("apply", "texts", "counts", "wordcount.WordCount", cwd=tmp_path / "elsewhere"),
                      "unknown pipe class wordcount.WordCount")
    r = run_dsdt("apply", "texts", "counts", "wordcount.WordCount", cwd=REPO)  # the repository's luigi.cfg: pipes
    uuid = home.context().latest("counts").uuid
    assert r.code == 0 and r.out == (f"counts {uuid}: up to date (`dsdt cat counts`; `dsdt commit counts` to share "
                                     f"it)\n"), r


def test_pack_threshold_is_the_size_from_which_files_are_blobs(home, bound, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DISDAT_PACK_THRESHOLD", "1000")
    src = _files(tmp_path / "d", {"below.bin": os.urandom(999), "at.bin": os.urandom(1000),
                                  "above.bin": os.urandom(1001), "tiny.bin": os.urandom(10)})
    uuid = _added(cli, "sized", src)
    assert cli("push", "sized").code == 0
    files = home.context().bundle(uuid).manifest.files
    assert _keys(bound, "blobs/") == sorted(blob_key(files[f"d/{n}"].sha256) for n in ("at.bin", "above.bin"))
    (pack,) = _keys(bound, "packs/")
    with open_remote(bound, "shared") as remote:
        assert remote.store.get_bytes(pack) in (src.joinpath("below.bin").read_bytes() + src.joinpath(
            "tiny.bin").read_bytes(), src.joinpath("tiny.bin").read_bytes() + src.joinpath("below.bin").read_bytes())


@pytest.mark.parametrize("workers", [1, 4])
def test_transfer_workers_is_the_number_of_requests_at_once(home, file_remote, cli, tmp_path, monkeypatch, workers):
    """Twelve blobs pushed with [disdat] transfer_workers = N: N requests are in flight at once, never more.
    The first N PUTs wait (2 s at most) until N are in flight, so that N at once is reached if it is allowed,
    then 0.2 s more, so that one more would be seen if it were allowed."""
    monkeypatch.setenv("DISDAT_PACK_THRESHOLD", "0")
    monkeypatch.setenv("DISDAT_TRANSFER_WORKERS", str(workers))
    _added(cli, "many", _files(tmp_path / "d", {f"f{i:02d}": os.urandom(100) for i in range(12)}))
    now, most, entered = [0], [0], [0]
    cond = threading.Condition()
    real = FileStore.put_bytes

    def put_bytes(self, key, data):
        if not key.startswith("blobs/"):
            return real(self, key, data)
        with cond:
            now[0] += 1
            entered[0] += 1
            most[0] = max(most[0], now[0])
            cond.notify_all()
            if entered[0] <= workers:
                cond.wait_for(lambda: now[0] >= workers, timeout=2)
                cond.wait_for(lambda: now[0] > workers, timeout=0.2)  # time for one too many to show up
        try:
            return real(self, key, data)
        finally:
            with cond:
                now[0] -= 1

    monkeypatch.setattr(FileStore, "put_bytes", put_bytes)
    r = cli("push", "many")
    assert r.code == 0, r.err
    assert len(_keys(file_remote, "blobs/")) == 12
    assert most[0] == workers


def test_remote_of_an_unbound_context_says_so(home, cli):
    r = cli("remote")
    assert (r.code, r.out, r.err) == (0, "context test has no remote\n", "")


def test_boto_environment_a_profile_and_the_s3_endpoint_variable(home, cli, s3_env, tmp_path, monkeypatch):
    """No key in the environment, only AWS_PROFILE naming a profile of the shared credentials file, and the
    endpoint as AWS_ENDPOINT_URL_S3: binding and pushing work; without the profile there are no credentials."""
    bucket = new_bucket(s3_env)
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[team]\naws_access_key_id = {s3_env.access_key}\n"
                           f"aws_secret_access_key = {s3_env.secret_key}\n")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env.endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credentials: never ask an instance metadata address
    before = _keys_of_bucket(s3_env, bucket)
    assert_user_error(cli("remote", "shared", f"s3://{bucket}/p"), "no AWS credentials found")
    monkeypatch.setenv("AWS_PROFILE", "team")
    assert cli("remote", "shared", f"s3://{bucket}/p").code == 0
    uuid = _added(cli, "profiled", _files(tmp_path / "d", {"x.txt": b"through a profile"}))
    r = run_dsdt("push", "profiled")
    assert r.out == f"pushed profiled {uuid}: 1 files, 0.0 MB moved, 0 already on the remote\n", r
    assert before == [] and f"p/context/shared/bundles/{uuid}.json" in _keys_of_bucket(s3_env, bucket)


def _keys_of_bucket(server, bucket):
    """Every key of the bucket, read with the server's keys (whatever AWS_PROFILE says)."""
    import boto3

    profile = os.environ.pop("AWS_PROFILE", None)
    try:
        client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                              aws_secret_access_key=server.secret_key, region_name="us-east-1")
        return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", ()))
    finally:
        if profile is not None:
            os.environ["AWS_PROFILE"] = profile
