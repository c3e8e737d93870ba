"""Shared fixtures of every tier: unit/ (no services), store/ (local store, remotes, apply), containers/
(Docker engine), scheduler/ (luigid, Chromium), batch/ (moto's AWS Batch).

Isolation: every test runs without the developer's DISDAT_*, AWS_* and Luigi settings, labels the
containers it makes with its own ``disdat.test`` label (and asserts only on those), and the images a test
session builds are tagged under a prefix of their own, so `make demo` or a benchmark can run beside it.
A missing service is a failure, never a skip."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    # A suite started in the background (`pytest ... &` from a script) ignores Ctrl-C, and so would every dsdt it
    # starts (an ignored signal is inherited): the Ctrl-C tests would wait for ever. Give it Python's own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
DSDT = str(Path(sys.executable).parent / "dsdt")


@dataclass
class Result:
    code: int
    out: str
    err: str


_USER_SETTINGS = ("DISDAT_", "AWS_", "LUIGI_CONFIG_PATH", "BOTO_")


IMAGE_PREFIX = f"disdat-test-{os.getpid()}"   # this session's image names: <prefix>/disdat-<module>:latest
_TEST_LABEL = ""


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch, tmp_path, request):
    """No test sees the developer's Disdat, AWS or Luigi settings; every test gets its own home.

    The one setting every test shares: this machine's Docker engine runs without a bridge network, so
    containers use the host's network (as `make demo` does), as a user of such an engine would configure.
    """
    global _TEST_LABEL
    for name in list(os.environ):
        if name.startswith(_USER_SETTINGS):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "no-home-set"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("DISDAT_RUN_NETWORK_MODE", "host")
    monkeypatch.setenv("DISDAT_DOCKERIZE_REPOSITORY_PREFIX", IMAGE_PREFIX)
    _TEST_LABEL = hashlib.sha256(f"{os.getpid()} {request.node.nodeid}".encode()).hexdigest()[:16]
    monkeypatch.setenv("DISDAT_RUN_LABELS", f"disdat.test={_TEST_LABEL}")


@pytest.fixture(scope="session", autouse=True)
def no_system_luigi_config():
    """/etc/luigi/*.cfg would be read by every luigi and dsdt process of the suite: refuse to run beside one."""
    found = [p for p in ("/etc/luigi/client.cfg", "/etc/luigi/luigi.cfg") if os.path.exists(p)]
    if found:
        pytest.exit(f"the tests must not run with {found[0]} present (it changes every luigi setting): move it away",
                    returncode=3)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh, initialized DISDAT_HOME with an active context ``test``."""
    from disdat_luigi.store.home import Home

    path = tmp_path / "disdat-home"
    monkeypatch.setenv("DISDAT_HOME", str(path))
    h = Home(path)
    h.init()
    h.create_context("test")
    return h


@pytest.fixture
def cli(capsys):
    """Run ``dsdt`` in-process: cli("ls", "-v") -> Result(code, out, err)."""
    from disdat_luigi.cli import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors and -h
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_dsdt(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 600) -> Result:
    """Run the installed ``dsdt`` console script as a real process."""
    proc = subprocess.run([DSDT, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), cwd=cwd)
    return Result(proc.returncode, proc.stdout, proc.stderr)


# A node's container or job started: `dsdt run`'s event line, or (``luigi --module disdat_luigi``, ``-v``) Luigi's
# worker line for a task named after a pipe (the chain's own tasks have no module in their name).
_NODE_STARTED = re.compile(r"^\d\d:\d\d:\d\d [\w.]+ [0-9a-f]{12} started: |running   \w+(?:\.\w+)+\(", re.M)


def nodes_started(log: str) -> int:
    """How many node containers (or jobs) a run's stderr says it started."""
    return sum(1 for _ in _NODE_STARTED.finditer(log))


def luigid_api(url: str, method: str, **data) -> dict:
    """One call of luigid's JSON API."""
    query = urllib.parse.quote(json.dumps(data))
    with urllib.request.urlopen(f"{url}/api/{method}?data={query}", timeout=10) as response:
        return json.loads(response.read())["response"]


def luigid_nodes(url: str, output: str, status: str = "") -> list:
    """The run's node tasks known to luigid (named after their pipe class; their output bundle names start with
    ``output``)."""
    found = []
    for state in ([status] if status else ["DONE", "FAILED", "PENDING", "RUNNING"]):
        for task_id, task in luigid_api(url, "task_list", status=state, upstream_status="").items():
            if task["name"] == task["params"].get("pipe_cls") and task["params"]["output_bundle"].startswith(output):
                found.append(dict(task, id=task_id))
    return found


def chromium_dom(page: str, profile: Path, budget_ms: int = 15000) -> str:
    """The DOM of ``page`` once headless Chromium has rendered it (its scripts run for ``budget_ms`` of virtual
    time), as a user's browser would show it."""
    import shutil

    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: run scripts/install-system-packages.sh"
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", page],
                          capture_output=True, text=True, timeout=120).stdout


def snapshot(root: Path) -> dict:
    """Everything observable under a directory: every directory (as an entry, so that a stray context, bundle
    or staging directory is a change), every symlink (by its target), file bytes and the SQLite indexes' rows.
    SQLite's own -wal/-shm files are left out: their rows are read through the index."""
    state = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.endswith(("-wal", "-shm")):
            continue
        if p.is_symlink():
            state[rel] = ("symlink", os.readlink(p))
        elif p.is_dir():
            state[rel] = "directory"
        elif p.name == "index.sqlite":
            db = sqlite3.connect(p)
            state[rel] = [tuple(r) for t in ("bundles", "tags", "files")
                          for r in db.execute(f"SELECT * FROM {t} ORDER BY 1, 2")]
            db.close()
        else:
            state[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return state


def assert_user_error(result: Result, *fragments: str) -> None:
    """One clear line on stderr, no traceback, and the exit status the CLI promises: 2 for a usage mistake
    (argparse's, which ends with "(see `dsdt ... -h`)"), 1 for every other user error."""
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("dsdt: error: "), result.err
    assert "Traceback" not in result.err
    usage = re.search(r"\(see `dsdt[^`]*-h`\)$", lines[0]) is not None
    assert result.code == (2 if usage else 1), (result.code, lines[0])
    for f in fragments:
        assert f in lines[0], (f, lines[0])


# ---------------------------------------------------------------------------------------------------
# Real services. A missing service is a failure, never a skip.
# ---------------------------------------------------------------------------------------------------
sys.path.insert(0, str(REPO / "scripts"))
import services  # noqa: E402  (scripts/services.py)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS server on 127.0.0.1, started for this test run, checking its credentials."""
    with services.seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """boto3 pointed at the test server with the right keys (and no ~/.aws files)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


def new_bucket(server) -> str:
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                 aws_secret_access_key=server.secret_key, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["file", "s3"])
def remote_url(request, tmp_path):
    """A fresh remote of each kind: a directory, and a new bucket on the SeaweedFS server."""
    if request.param == "file":
        return (tmp_path / "remote").as_uri()
    server = request.getfixturevalue("s3_env")
    return f"s3://{new_bucket(server)}/shared"


@pytest.fixture
def bound(home, remote_url, cli):
    """The active context bound to a fresh remote; returns the remote URL."""
    r = cli("remote", "shared", remote_url)
    assert r.code == 0, r.err
    return remote_url


def second_context(home, cli, remote_url, name="other"):
    """Switch to a new context bound to the same remote (a second user of the remote)."""
    assert cli("context", name).code == 0
    assert cli("switch", name).code == 0
    assert cli("remote", "shared", remote_url).code == 0
    return home.context(name)


PIPES = REPO / "pipes"
TEST_PIPES = REPO / "tests" / "pipe_root"


@pytest.fixture(scope="session")
def docker_ready():
    """A Docker engine (started for this test run if none answers) and the registry-free base image; the
    session's image tags are removed at the end (the images stay, for the next session to re-tag)."""
    with services.docker_engine():
        services.ensure_base_image()
        _untag_images(lambda prefix: not _pid_alive(int(prefix.rpartition("-")[2])))  # of killed sessions
        yield services.BASE_IMAGE
        _untag_images(lambda prefix: prefix == IMAGE_PREFIX)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _untag_images(whose) -> None:
    """Remove the ``disdat-test-<pid>/...`` tags of the sessions ``whose(prefix)`` selects."""
    import docker

    client = docker.from_env()
    for image in client.images.list():
        for tag in image.tags:
            prefix = tag.partition("/")[0]
            if re.fullmatch(r"disdat-test-\d+", prefix) and "/" in tag and whose(prefix):
                try:
                    client.images.remove(tag)
                except docker.errors.APIError:  # a container of a job still running uses it: leave the tag
                    pass


def _dockerize(pipe_root: Path, base: str) -> None:
    from unittest import mock

    from disdat_luigi.containers.dockerize import dockerize

    with mock.patch.dict(os.environ, DISDAT_DOCKERIZE_REPOSITORY_PREFIX=IMAGE_PREFIX):
        for line in dockerize(pipe_root, base=base):
            print(line)


@pytest.fixture(scope="session")
def pipes_image(docker_ready):
    """The example pipe_root's image, built (or found up to date) once per test run."""
    _dockerize(PIPES, docker_ready)
    return PIPES


@pytest.fixture(scope="session")
def test_pipes_image(docker_ready):
    _dockerize(TEST_PIPES, docker_ready)
    return TEST_PIPES


@pytest.fixture
def pipe_root(monkeypatch):
    """Point DISDAT_PIPE_ROOT at a pipe_root (the example one by default)."""
    def use(path: Path = PIPES) -> Path:
        monkeypatch.setenv("DISDAT_PIPE_ROOT", str(path))
        return path
    use()
    return use


@pytest.fixture(scope="session")
def luigid_url(tmp_path_factory):
    """A real luigi central scheduler on 127.0.0.1."""
    with services.luigid(tmp_path_factory.mktemp("luigid")) as url:
        yield url


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    """moto's server on 127.0.0.1: stands in for AWS STS, which cannot run here."""
    with services.moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture(scope="session")
def registry(tmp_path_factory, docker_ready):
    """A real Docker registry on 127.0.0.1."""
    with services.docker_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


def docker_containers(**labels):
    """This test's containers (running or not), with these labels too."""
    import docker

    client = docker.from_env()
    filters = {"label": [f"disdat.test={_TEST_LABEL}"] + [f"{k}={v}" for k, v in labels.items()]}
    return client.containers.list(all=True, filters=filters, ignore_removed=True)


def _remote_keys(url: str) -> list:
    """Every key on a remote (for 'nothing was pushed')."""
    from disdat_luigi.remotes import open_remote

    with open_remote(url, "shared") as remote:
        return sorted(remote.store.list(""))


# -- AWS Batch on moto ---------------------------------------------------------------------------------------
LONG_KEY, LONG_SECRET = "AKIALONGTERMHOSTKEY0", "long-term-host-secret-never-in-a-job"
TOKEN = ("--use-aws-session-token", "900")


@pytest.fixture(scope="session")
def batch_queue(moto_url):
    """An UNMANAGED compute environment and a job queue on moto, once per test session."""
    import boto3

    kw = dict(endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id=LONG_KEY,
              aws_secret_access_key=LONG_SECRET)
    role = boto3.client("iam", **kw).create_role(RoleName="disdat-batch", AssumeRolePolicyDocument="{}")["Role"]
    batch = boto3.client("batch", **kw)
    env = batch.create_compute_environment(computeEnvironmentName="disdat-ce", type="UNMANAGED", state="ENABLED",
                                           serviceRole=role["Arn"])["computeEnvironmentArn"]
    batch.create_job_queue(jobQueueName="disdat-queue", state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}])
    yield "disdat-queue"
    _remove_job_containers(batch)


def _remove_job_containers(batch) -> None:
    """moto runs each job in a container named after the job's id; a job still running when the session ends
    (or moto itself stopping) can leave its container behind: remove exactly those of this session's jobs."""
    import docker

    ids = [j["jobId"] for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED",
                                     "FAILED")
           for j in batch.list_jobs(jobQueue="disdat-queue", jobStatus=status)["jobSummaryList"]]
    for job_id in ids:
        batch.terminate_job(jobId=job_id, reason="the test session ends")
    client = docker.from_env()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = [c for c in client.containers.list(all=True, ignore_removed=True) if any(i in c.name for i in ids)]
        if not any(c.status == "running" for c in left):
            break
        time.sleep(1)
    for container in left:
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass


@pytest.fixture(scope="session")
def batch_proxy(moto_url):
    """scripts/aws_proxy.py in front of moto, refusing what AWS refuses (20 dependencies a job, 30 KiB a
    SubmitJob, 100 ids a DescribeJobs, 50 Batch calls a second, CloudWatch's read rate): dsdt talks to AWS
    through it, the tests' own checks go to moto directly."""
    import aws_proxy

    with aws_proxy.aws_proxy(moto_url, enforce_limits=True) as proxy:
        yield proxy


@pytest.fixture
def aws(moto_url, batch_proxy, batch_queue, monkeypatch, home, cli, test_pipes_image, pipe_root):
    """dsdt pointed at moto (through the limits proxy) with long-lived host keys, a fresh bucket bound as the
    remote; returns a Batch client of the test's own (straight to moto) and the remote URL. Every AWS limit
    dsdt broke during the test fails it."""
    import boto3

    pipe_root(TEST_PIPES)
    for name, value in (("AWS_ENDPOINT_URL", batch_proxy.url), ("AWS_ACCESS_KEY_ID", LONG_KEY),
                        ("AWS_SECRET_ACCESS_KEY", LONG_SECRET), ("AWS_DEFAULT_REGION", "us-east-1"),
                        ("DISDAT_RUN_AWS_BATCH_QUEUE", batch_queue), ("DISDAT_RUN_BACKEND", "AWSBatch")):
        monkeypatch.setenv(name, value)
    bucket = f"batch-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_url).create_bucket(Bucket=bucket)
    assert cli("remote", "shared", f"s3://{bucket}/r").code == 0
    batch_proxy.reset()
    yield boto3.client("batch", endpoint_url=moto_url), f"s3://{bucket}/r"
    assert batch_proxy.violations() == []


def run_batch(*args, **kw):
    return run_dsdt("run", *args, cwd=REPO, **kw)


def batch_records(url):
    from disdat_luigi.remotes import open_remote
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        runs = RunStore(remote)
        return {r.bundle_name: r for _, r, _ in runs.records() if r is not None}


def killed_after_submitting(tmp_path, *args):
    """Start `dsdt run *args` and kill -9 it right after it submitted its job, before it names the job in the
    node's record (its second write of a record blocks, by DISDAT_FAULT); returns the node's record then."""
    hit = tmp_path / "hit"
    env = dict(os.environ, DISDAT_FAULT="put:context/shared/runs/:2", DISDAT_FAULT_SIGNAL=str(hit))
    proc = subprocess.Popen([DSDT, "run", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(hit.exists, 60), proc.communicate(timeout=5) if proc.poll() is not None else "no fault"
    finally:
        proc.kill()
        proc.communicate()
    return proc


def jobs_of(batch, node_id):
    return {j["jobId"]: j["status"] for j in batch.list_jobs(
        jobQueue="disdat-queue", filters=[{"name": "JOB_NAME", "values": [f"disdat-{node_id[:12]}-*"]}])[
        "jobSummaryList"]}



@pytest.fixture
def runs(tmp_path):
    """The run records of a fresh file:// remote (remote context ``shared``)."""
    from disdat_luigi.remotes import open_remote
    from disdat_luigi.runs.store import RunStore

    remote = open_remote((tmp_path / "remote").as_uri(), "shared")
    yield RunStore(remote)
    remote.close()


# -- shared by the container tests ------------------------------------------------------------------

@pytest.fixture
def file_remote(home, cli, tmp_path, pipe_root, test_pipes_image):
    """Context test bound to a file:// remote, the test pipe_root and its image."""
    pipe_root(TEST_PIPES)
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    return url


def wait_until(predicate, timeout=60.0, every=0.02):
    """True once ``predicate()`` is, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def running_container(proc=None, timeout=60.0):
    """The container of this test once its pipe has started (it printed 'sleeping')."""
    found = []

    def started():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"dsdt run ended before its container started: {proc.communicate()}")
        found[:] = [c for c in docker_containers() if c.status == "running" and b"sleeping" in c.logs()]
        return bool(found)

    assert wait_until(started, timeout), "the container never started"
    return found[0]


def run_record(url, node):
    from disdat_luigi.remotes import open_remote
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        return RunStore(remote).record(node)


def write_files(root: Path, spec: dict) -> Path:
    """Files under ``root`` from {relative path: bytes}."""
    for rel, data in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def added(cli, name, path, *tags) -> str:
    """`dsdt add [-t TAG]...` then `dsdt commit -u`: the new bundle's uuid."""
    r = cli("add", *sum((["-t", t] for t in tags), []), name, path)
    assert r.code == 0, r.err
    uuid = r.out.split()[2]
    assert cli("commit", "-u", uuid).code == 0
    return uuid


def store_keys(url, prefix=""):
    """Every key on the remote's store under ``prefix`` (all of them by default)."""
    from disdat_luigi.remotes import open_store

    store = open_store(url)
    try:
        return sorted(store.list(prefix))
    finally:
        store.close()
