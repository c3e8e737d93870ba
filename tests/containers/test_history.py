"""Run history and stored logs: every run leaves a typed record on the remote (running, succeeded, failed,
timed_out, interrupted, with times, image, backend, error line) and the container's log next to it.

`dsdt runs [NAME] [--status S] [-n N]` lists them newest first, a line each; `dsdt logs RUN_ID` (a unique
prefix is enough) prints the stored log. Records and logs come from a shared remote: a crafted record is
refused (and counted), and whatever is printed is free of control characters.
"""
from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from conftest import DSDT, REPO, TEST_PIPES, assert_user_error, docker_containers, run_dsdt
from disdat_luigi.remotes import open_remote
from disdat_luigi.runs.record import RunRecord
from disdat_luigi.runs.store import RunStore

pytestmark = pytest.mark.timeout(120)
HEADER = re.compile(r"^RUN +ATTEMPT +PIPE +STATUS +STARTED +DURATION +OUTPUT$")
CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
STARTED = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture
def remote(home, cli, tmp_path):
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    return url


@pytest.fixture
def runnable(remote, pipe_root, test_pipes_image):
    pipe_root(TEST_PIPES)
    return remote


def _run(*args, **kw):
    return run_dsdt("run", *args, cwd=REPO, timeout=100, **kw)


def _runs(*args):
    r = run_dsdt("runs", *args)
    assert r.code == 0 and r.err == "", r
    assert not CONTROL.search(r.out.replace("\n", "")), repr(r.out)
    lines = r.out.splitlines()
    assert HEADER.match(lines[0]), lines[0]
    return lines[1:]


def _records(url):
    with open_remote(url, "shared") as remote:
        runs = RunStore(remote)
        return {n: runs.record(n) for n in runs.node_ids()}


def _only_record(url):
    (node, record), = _records(url).items()
    return node, record


def _logs(prefix):
    r = run_dsdt("logs", prefix)
    assert r.code == 0 and r.err == "", r
    return r.out


def _assert_typed(record, status, image_from=None):
    assert record.status == status and record.backend == "Local" and record.image.startswith("sha256:")
    assert record.stopped is not None and record.duration >= 0 and record.host
    assert record.job_id.startswith(f"disdat-{record.node_id[:12]}-")


# ---------------------------------------------------------------------------------------------------
# one real run of each kind
# ---------------------------------------------------------------------------------------------------

def test_a_succeeded_run(home, runnable):
    r = _run("-", "nap", "slow.Sleep", "--seconds", "0.2")
    assert r.code == 0, r.err
    node, record = _only_record(runnable)
    _assert_typed(record, "succeeded")
    uuid = home.context().latest("nap").uuid
    assert record.output_uuid == uuid and record.error is None and record.pipe_cls == "slow.Sleep"
    assert record.params == {"seconds": "0.2"}
    (line,) = _runs()
    assert re.fullmatch(rf"{node[:12]}  1 +slow\.Sleep  succeeded  {STARTED}  \d+\.\ds +nap {uuid}", line), line
    log = _logs(node[:7])
    assert "sleeping 0.2 s\n" in log and f"dsdt-entrypoint: pushed nap {uuid}" in log
    assert _logs(node) == log


def test_a_failed_run(home, runnable):
    r = _run("-", "bad", "unstorable.ReturnsASocket")
    assert r.code == 1
    node, record = _only_record(runnable)
    _assert_typed(record, "failed")
    assert record.output_uuid is None and "a bundle cannot hold a socket" in record.error
    assert "\n" not in record.error
    (line,) = _runs()
    assert re.fullmatch(rf"{node[:12]}  1 +unstorable\.ReturnsASocket  failed \(user error\)  {STARTED}  \d+\.\ds "
                        rf"+bad  \(.+\)", line), line
    assert f"({record.error[:100]})" in line
    log = _logs(node[:8])
    assert "dsdt-entrypoint: error: " in log and "a bundle cannot hold a socket" in log
    assert docker_containers() == []


def test_a_timed_out_run(home, runnable, monkeypatch):
    monkeypatch.setenv("DISDAT_RUN_TIMEOUT", "2")
    r = _run("-", "nap", "slow.Sleep", "--seconds", "60")
    assert r.code == 1 and "ran longer than its timeout of 2 s" in r.err
    node, record = _only_record(runnable)
    _assert_typed(record, "timed_out")
    assert re.fullmatch(r"container disdat-[0-9a-f]{12}-[0-9a-f]{6} ran longer than its timeout of 2 s and was "
                        r"stopped", record.error), record.error
    assert record.cause == "timed_out"
    assert 2 <= record.duration < 30
    (line,) = _runs()
    assert re.fullmatch(rf"{node[:12]}  1 +slow\.Sleep  timed_out \(timed out\)  {STARTED}  \d+\.\ds +nap  "
                        rf"\({re.escape(record.error)}\)", line), line
    assert "sleeping 60.0 s" in _logs(node[:12])
    assert docker_containers() == []


def test_an_interrupted_run(home, runnable):
    proc = subprocess.Popen([DSDT, "run", "-", "nap", "slow.Sleep", "--seconds", "60"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(c.status == "running" and b"sleeping" in c.logs() for c in docker_containers()):
            assert time.monotonic() < deadline and proc.poll() is None, "the container never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    node, record = _only_record(runnable)
    _assert_typed(record, "interrupted")
    assert record.error == "interrupted by its client (Ctrl-C or SIGTERM)"
    (line,) = _runs()
    assert re.fullmatch(rf"{node[:12]}  1 +slow\.Sleep  interrupted \(interrupted\)  {STARTED}  \d+\.\ds +nap  "
                        r"\(interrupted by its client \(Ctrl-C or SIGTERM\)\)", line), line
    assert "sleeping 60.0 s" in _logs(node[:12])
    assert docker_containers() == []


# ---------------------------------------------------------------------------------------------------
# listing: newest first, --status, -n, NAME glob (records written as the runs write them)
# ---------------------------------------------------------------------------------------------------

def _node(i: int, prefix: str = "") -> str:
    return (prefix + f"{i:02x}" * 16)[:32]


def _record(i, status, name, prefix="", error=None):
    started = f"2026-01-{i + 1:02d}T10:00:00.000000Z"
    return RunRecord(node_id=_node(i, prefix), run_id=_node(i, prefix), status=status, pipe_cls="m.Pipe",
                     params={"n": str(i)}, bundle_name=name, backend="Local", image="sha256:" + "ab" * 32,
                     started=started, stopped=None if status == "running" else f"2026-01-{i + 1:02d}T10:01:30.000000Z",
                     output_uuid=f"00000000-0000-4000-8000-{i:012d}" if status == "succeeded" else None,
                     error=error or ("boom" if status in ("failed", "timed_out", "interrupted") else None))


HISTORY = [(0, "succeeded", "alpha"), (1, "failed", "alpha"), (2, "succeeded", "beta"), (3, "timed_out", "nap"),
           (4, "interrupted", "nap"), (5, "succeeded", "nap-2"), (6, "failed", "gamma")]


@pytest.fixture
def history(remote):
    with open_remote(remote, "shared") as r:
        runs = RunStore(r)
        for i, status, name in HISTORY:
            runs.write(_record(i, status, name))
    return remote


def _ids(lines):
    return [line.split()[0] for line in lines]


def test_runs_lists_newest_first_a_line_each(history):
    lines = _runs()
    assert _ids(lines) == [_node(i)[:12] for i, _, _ in reversed(HISTORY)]
    assert lines[0] == f"{_node(6)[:12]}  1        m.Pipe  failed       2026-01-07 10:00:00  90.0s     gamma  (boom)"
    assert lines[1] == (f"{_node(5)[:12]}  1        m.Pipe  succeeded    2026-01-06 10:00:00  90.0s     nap-2 "
                        f"00000000-0000-4000-8000-000000000005")


def test_runs_status_filter(history):
    for status in ("succeeded", "failed", "timed_out", "interrupted"):
        want = [_node(i)[:12] for i, s, _ in reversed(HISTORY) if s == status]
        assert _ids(_runs("--status", status)) == want
    assert _runs("--status", "running") == []
    assert_user_error(run_dsdt("runs", "--status", "finished"), "argument --status: invalid choice: 'finished'")


def test_runs_n_limits_to_the_newest(history):
    assert _ids(_runs("-n", "2")) == [_node(6)[:12], _node(5)[:12]]
    assert len(_runs("-n", "0")) == len(HISTORY)
    assert _ids(_runs("-n", "1", "--status", "succeeded")) == [_node(5)[:12]]


def test_runs_name_is_a_glob(history):
    assert _ids(_runs("nap")) == [_node(4)[:12], _node(3)[:12]]
    assert _ids(_runs("nap*")) == [_node(5)[:12], _node(4)[:12], _node(3)[:12]]
    assert _ids(_runs("?lpha", "--status", "failed")) == [_node(1)[:12]]
    assert _runs("nothing-like-it") == []


def test_runs_shows_twenty_by_default(remote):
    with open_remote(remote, "shared") as r:
        runs = RunStore(r)
        for i in range(25):
            runs.write(_record(i, "succeeded", "many"))
    lines = _runs()
    assert _ids(lines) == [_node(i)[:12] for i in range(24, 4, -1)]


# ---------------------------------------------------------------------------------------------------
# dsdt logs: prefixes
# ---------------------------------------------------------------------------------------------------

def test_logs_by_unique_and_ambiguous_prefixes(remote):
    a, b, c = _node(1, "abc1"), _node(2, "abc2"), _node(3, "f00d")
    with open_remote(remote, "shared") as r:
        runs = RunStore(r)
        for i, node in ((1, a), (2, b), (3, c)):
            runs.write(_record(i, "succeeded", "x", prefix=node[:4]))
            runs.write_log(node, f"log of {node}\n".encode())
        runs.write(_record(4, "running", "y", prefix="dead"))
    assert _logs("abc1") == f"log of {a}\n"
    assert _logs("f") == f"log of {c}\n"
    assert _logs(b) == f"log of {b}\n"
    assert_user_error(run_dsdt("logs", "abc"), "run id abc is ambiguous (2 runs start with it): give more digits")
    assert_user_error(run_dsdt("logs", "a"), "run id a is ambiguous (2 runs start with it)")
    assert_user_error(run_dsdt("logs", "0123"), f"no run 0123 on the remote {remote.rstrip('/')}", "(see `dsdt runs`)")
    assert_user_error(run_dsdt("logs", "xyz"), "'xyz' is not a run id: use the hex id `dsdt runs` shows")
    assert_user_error(run_dsdt("logs", "ABC1"), "'ABC1' is not a run id")
    assert_user_error(run_dsdt("logs", "dead"), f"run {_node(4, 'dead')} (running) has no log yet: a log is stored "
                                                f"when its job ends")


# ---------------------------------------------------------------------------------------------------
# crafted records and logs on the remote
# ---------------------------------------------------------------------------------------------------

def _crafted(doc_change):
    def make(i):
        import json

        doc = json.loads(_record(i, "failed", "crafted").to_json())
        doc_change(doc)
        return json.dumps(doc).encode()
    return make


CRAFTED = [
    ("error-escape", _crafted(lambda d: d.update(error="boom\x1b[2J\x1b[H forged row"))),
    ("error-newline", _crafted(lambda d: d.update(error="boom\nabcdef012345  m.Pipe  succeeded"))),
    ("pipe-bell", _crafted(lambda d: d.update(pipe_cls="m.Pipe\x07"))),
    ("name-path", _crafted(lambda d: d.update(bundle_name="../../etc"))),
    ("param-escape", _crafted(lambda d: d.update(params={"k": "\x1b]0;title\x07"}))),
    ("status-unknown", _crafted(lambda d: d.update(status="succeeded\x1b[32m"))),
    ("started-free-text", _crafted(lambda d: d.update(started="yesterday"))),
    ("other-node", _crafted(lambda d: d.update(node_id="e" * 32))),
    ("succeeded-without-output", _crafted(lambda d: d.update(status="succeeded", error=None))),
    ("host-overlong", _crafted(lambda d: d.update(host="h" * 301))),
    ("not-json", lambda i: b"\x1b[2J{not json"),
]


def test_crafted_records_are_refused_and_counted(history):
    with open_remote(history, "shared") as r:
        for n, (_, make) in enumerate(CRAFTED):
            r.store.put_bytes(f"context/shared/runs/{_node(100 + n)}.json", make(100 + n))
        r.store.put_bytes("context/shared/runs/not-a-node\x1b[2J.json", b"{}")       # not a run id: ignored
    lines = _runs()
    count = lines.index(f"({len(CRAFTED)} record(s) on the remote were refused as malformed)")
    refused = lines[count + 1:]
    assert sorted(line[1:13] for line in refused) == sorted(_node(100 + n)[:12] for n in range(len(CRAFTED)))
    assert all(re.fullmatch(r"\([0-9a-f]{12}: refused, .+\)", line) and "\x1b" not in line for line in refused)
    assert _ids(lines[:count]) == [_node(i)[:12] for i, _, _ in reversed(HISTORY)]
    r = run_dsdt("runs", "--clean")
    assert (r.code, r.out, r.err) == (0, "nothing to clean: no run whose client died\n", "")


def test_a_crafted_log_is_printed_without_control_characters(remote):
    node = _node(9)
    with open_remote(remote, "shared") as r:
        runs = RunStore(r)
        runs.write(_record(9, "failed", "x"))
        runs.write_log(node, b"line one\n\x1b[2J\x1b[Hforged\rover\x07\x00 bytes \xff\xfe\ttab\nlast")
    out = _logs(node[:6])
    assert not CONTROL.search(out.replace("\n", "").replace("\t", "")), repr(out)
    assert out == "line one\n\\x1b[2J\\x1b[Hforged\\x0dover\\x07\\x00 bytes \ufffd\ufffd\ttab\nlast\n"


def test_runs_and_logs_without_a_remote_are_one_line(home):
    assert_user_error(run_dsdt("runs"), "context test has no remote")
    assert_user_error(run_dsdt("logs", "abc"), "context test has no remote")
    assert_user_error(run_dsdt("runs", "-n", "x"), "argument -n: invalid int value: 'x'")


def test_a_record_the_container_could_not_finish_stays_a_typed_record(home, runnable):
    """A container that dies without a word (killed by the engine) is recorded failed by its client."""
    proc = subprocess.Popen([DSDT, "run", "-", "nap", "slow.Sleep", "--seconds", "60"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            running = [c for c in docker_containers() if c.status == "running" and b"sleeping" in c.logs()]
            if running:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "the container never started"
            time.sleep(0.1)
        running[0].kill()                                   # SIGKILL: the entrypoint cannot write anything
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    node, record = _only_record(runnable)
    _assert_typed(record, "failed")
    assert record.error == f"container {record.job_id} was killed by signal 9 (SIGKILL)"
    (line,) = _runs("--status", "failed")
    assert line.startswith(f"{node[:12]}  1        slow.Sleep  failed (infrastructure)")
    assert "sleeping 60.0 s" in _logs(node[:12])
    assert docker_containers() == []
