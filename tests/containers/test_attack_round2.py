"""The second hostile review (issue 15), on the real Docker engine: each finding as it was tried, now refused or
survived.

* a lease planted on the shared remote with this host's id and pid 1 blocks a node for LEASE_TTL at most,
  and `dsdt runs --clean` frees a lease that has no record;
* run records, leases and pending markers of gigabytes are read within their limits, under a memory limit;
* luigid dying in the middle of a run: the run goes on without it, says so in one line, pulls its output;
* a pipe printing megabytes of short lines: the client stays small, the log is kept;
* a pipe is not PID 1: it can kill itself, and the processes it abandons are reaped;
* DISDAT_FAULT, the kill tests' hook, is validated.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DSDT, REPO, assert_user_error, run_dsdt, run_record, wait_until

pytestmark = pytest.mark.timeout(180)


def _run(*args, **kw):
    return run_dsdt("run", *args, cwd=REPO, **kw)


def _node_id(output: str, pipe_cls: str, *pipe_args: str) -> str:
    """The node id `dsdt run - OUTPUT PIPE_CLS ARGS` will have (planned in this process, nothing run)."""
    from disdat_luigi.chain.run import RunOptions, make_task

    return make_task(RunOptions(input_bundle=None, output_bundle=output, pipe_cls=pipe_cls,
                                pipe_args=list(pipe_args))).plan().run_id


def _remote_dir(url: str) -> Path:
    return Path(url[len("file://"):])


def _plant(url: str, key: str, data: bytes = b"", size: int = 0) -> Path:
    path = _remote_dir(url) / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        if size:
            f.truncate(size)   # sparse: free to make, gigabytes to read
    return path


def test_a_forged_lease_of_this_host_and_pid_1_blocks_a_node_for_lease_ttl_at_most(file_remote, home):
    """Finding 1: the lease names this host (its id is in every lease the victim wrote) and pid 1 (whose start
    time is guessable), and nobody renews it: it counts as alive only until LEASE_TTL after its 'renewal'."""
    from disdat_luigi.runs.lease import LEASE_TTL, Lease, _process_start, host_id

    node = _node_id("nap", "slow.Sleep", "--seconds", "0.1")
    forged = Lease(owner="attacker", host=host_id(), pid=1, pid_start=_process_start(1),
                   renewed=time.time() - LEASE_TTL + 6)
    _plant(file_remote, f"context/shared/leases/{node}.json", forged.to_json())
    started = time.monotonic()
    r = _run("-", "nap", "slow.Sleep", "--seconds", "0.1")
    assert r.code == 0, r.err
    assert "waiting for the same node, run by pid 1 on " in r.err
    assert time.monotonic() - started < 60  # not for ever: about the 6 s left of its TTL
    assert run_record(file_remote, node).status == "succeeded"


def test_runs_clean_frees_a_lease_that_has_no_record(file_remote, home):
    from disdat_luigi.runs.lease import LEASE_TTL, Lease, _process_start, host_id

    node = "ab" * 16
    forged = Lease(owner="attacker", host=host_id(), pid=1, pid_start=_process_start(1),
                   renewed=time.time() - 2 * LEASE_TTL)
    path = _plant(file_remote, f"context/shared/leases/{node}.json", forged.to_json())
    r = run_dsdt("runs", "--clean")
    assert r.code == 0, r.err
    assert r.out == f"run {node[:12]} (no record: its lease was freed): cleaned\n"
    assert json.loads(path.read_bytes()) == {"released": True}


def _limited(*args: str, memory: int = 1 << 30) -> subprocess.CompletedProcess:
    """`dsdt ARGS` under an address-space limit (a whole 3 GB file could never be read into it)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([DSDT, *args], cwd=REPO, capture_output=True, text=True, timeout=120, preexec_fn=limit)


def test_remote_files_of_gigabytes_are_refused_within_their_limits(file_remote, home):
    """Finding 2: a 3 GB sparse run record, lease and pending marker on a file:// remote (free to make) took
    the readers to gigabytes of memory, or a MemoryError traceback under a limit."""
    node = "cd" * 16
    _plant(file_remote, f"context/shared/runs/{node}.json", b'{"format": 1', size=3 << 30)
    listed = _limited("runs")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert f"({node[:12]}: refused, context/shared/runs/{node}.json on the remote is larger than" in listed.stdout

    nap = _node_id("nap", "slow.Sleep", "--seconds", "0.1")
    _plant(file_remote, f"context/shared/leases/{nap}.json", b"{", size=3 << 30)
    ran = _limited("run", "-", "nap", "slow.Sleep", "--seconds", "0.1", memory=2 << 30)
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr  # not a lease: taken over
    assert run_record(file_remote, nap).status == "succeeded"

    _plant(file_remote, "context/shared/pending/later.json", b'{"nodes": [', size=3 << 30)
    pulled = _limited("pull", "later")
    assert pulled.returncode == 1 and "Traceback" not in pulled.stderr
    assert pulled.stderr == "dsdt: error: the pending marker of later on the remote is malformed\n"


def test_a_run_goes_on_and_pulls_its_output_when_luigid_dies(file_remote, home, tmp_path):
    """Finding 3: the container finished and its record said succeeded, but `dsdt run` retried the status RPC
    for 3 minutes, printed 15 tracebacks, exited 1 without a `dsdt: error:` line and never pulled."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    luigid = subprocess.Popen([str(Path(sys.executable).parent / "luigid"), "--address", "127.0.0.1", "--port",
                               str(port), "--state-path", str(tmp_path / "state"), "--logdir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import services

        assert wait_until(lambda: services._http_answers(url + "/api/task_list?data=%7B%7D"), 30)
        proc = subprocess.Popen([DSDT, "run", "--scheduler-url", url, "-", "nap", "slow.Sleep", "--seconds", "8"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        from conftest import running_container

        running_container(proc)
        luigid.kill()
        luigid.wait()
        out, err = proc.communicate(timeout=150)
    finally:
        luigid.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if "stopped answering" in line]
    assert len(said) == 1 and said[0].startswith(f"the Luigi scheduler at {url} stopped answering"), err
    assert home.context().latest("nap").data() == 8.0
    assert out.strip().endswith("is in context test (`dsdt cat nap`)")


def test_a_pipe_printing_5_mb_of_short_lines_keeps_the_client_small(file_remote, home):
    """Finding 4: the Local backend read a container's whole log into memory and logged each line through
    Luigi's logger: 5 MB of short lines took 425 MB in the client (and 63 s). The client must stay under
    300 MB (its time is measured by bench/run_overhead.py, against the same pipe printing nothing)."""
    code = (f"import resource, subprocess, sys; p = subprocess.run([{DSDT!r}, 'run', '-', 'chat', "
            f"'misbehaving.Chatty', '--megabytes', '5'], capture_output=True); "
            f"sys.stderr.buffer.write(p.stderr[-2000:]); "
            f"print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    probe = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=170)
    returncode, peak_kb = map(int, probe.stdout.split())
    assert returncode == 0, probe.stderr
    assert peak_kb < 300 * 1024, f"the client peaked at {peak_kb // 1024} MB"
    count = home.context().latest("chat").data()
    log = run_dsdt("logs", node_of(file_remote, "chat")[:12]).out
    assert log.count("0123456789 chatty line\n") == count and "done printing" in log


def node_of(url, name):
    from disdat_luigi.remotes import open_remote
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        runs = RunStore(remote)
        return next(node for node, record, _ in runs.records() if record and record.bundle_name == name)


def test_a_pipe_is_not_pid_1(file_remote, home):
    """Finding 7: the pipe ran as PID 1 with no init, so its own SIGKILL was ignored by the kernel and the run
    'succeeded' with a null output, and the processes it abandoned were never reaped."""
    r = _run("-", "who", "misbehaving.WhoAmI")
    assert r.code == 0, r.err
    who = home.context().latest("who").data()
    assert who["pid"] != 1 and who["zombies"] == 0
    killed = _run("-", "killed", "misbehaving.KillsItself")
    assert killed.code == 1
    assert killed.err.strip().splitlines()[-1].startswith("dsdt: error: the run failed: container disdat-")
    assert "was killed by signal 9 (SIGKILL)" in killed.err.strip().splitlines()[-1]
    assert home.context().find(["killed"]) == []
    assert run_record(file_remote, node_of(file_remote, "killed")).status == "failed"


@pytest.mark.parametrize("value", ["garbage", "put::0", "delete:x:1", "put:x:1:2"])
def test_a_malformed_fault_hook_is_one_line(home, value, tmp_path):
    r = run_dsdt("ls", env={"DISDAT_FAULT": value, "DISDAT_FAULT_SIGNAL": str(tmp_path / "s")})
    assert_user_error(r, f"DISDAT_FAULT={value!r} is not put|get:KEY_PREFIX:N (it is a test hook: unset it)")


def test_the_fault_hook_needs_its_signal_file(home):
    r = run_dsdt("ls", env={"DISDAT_FAULT": "put:x:1"})
    assert_user_error(r, "DISDAT_FAULT is a test hook and needs DISDAT_FAULT_SIGNAL")


def test_the_fault_hook_says_where_it_blocks(file_remote, home, tmp_path):
    hit = tmp_path / "hit"
    proc = subprocess.Popen([DSDT, "run", "-", "nap", "slow.Sleep", "--seconds", "0"], cwd=REPO, text=True,
                            env=dict(os.environ, DISDAT_FAULT="put:context/shared/runs/:1",
                                     DISDAT_FAULT_SIGNAL=str(hit)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(hit.exists, 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert "DISDAT_FAULT (a test hook): blocking for ever at put number 1 of context/shared/runs/*: " in err


def test_what_a_container_writes_to_a_file_remote_follows_the_clients_umask(file_remote, home):
    """Finding 5, the container's side: records, logs and outputs written by the container get the mode the
    user's umask gives (not Docker's 022), so a directory remote shared by a group stays shared."""
    r = subprocess.run([DSDT, "run", "-", "nap", "slow.Sleep", "--seconds", "0"], cwd=REPO, capture_output=True,
                       text=True, timeout=150, preexec_fn=lambda: os.umask(0o002))
    assert r.returncode == 0, r.stderr
    root = _remote_dir(file_remote)
    written = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert any("/logs/" in str(p) for p in written) and any("/bundles/" in str(p) for p in written)
    modes = {str(p.relative_to(root)): oct(p.stat().st_mode & 0o777) for p in written}
    assert set(modes.values()) == {"0o664"}, modes
