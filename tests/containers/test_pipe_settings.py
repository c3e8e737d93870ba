"""A pipe's own resources, retries and timeout on the real Docker engine (issue 16): the container's limits, a
pipe over its memory killed with a line that says so, a failing pipe retried in a new container with every
attempt kept in the history, a per-pipe timeout that stops only that pipe, GPUs refused where the engine has
none; and none of it in a node's identity."""
from __future__ import annotations

import re
import subprocess

import pytest

from conftest import DSDT, REPO, assert_user_error, run_dsdt, run_record, running_container, snapshot, store_keys

pytestmark = pytest.mark.timeout(240)


def _run(*args, **kw):
    return run_dsdt("run", *args, cwd=REPO, **kw)


def _runs(*args) -> list:
    r = run_dsdt("runs", *args)
    assert r.code == 0, r.err
    return r.out.splitlines()[1:]


def _node(url: str, name: str) -> str:
    from disdat_luigi.remotes import open_remote
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        return next(n for n, r, _ in RunStore(remote).records() if r and r.bundle_name == name)


def test_a_container_gets_its_pipes_limits(file_remote, home, monkeypatch):
    monkeypatch.setenv("DISDAT_RUN_MEMORY", "300")
    proc = subprocess.Popen([DSDT, "run", "-", "nap", "slow.Sleep", "--seconds", "3"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    host = running_container(proc).attrs["HostConfig"]
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert (host["NanoCpus"], host["Memory"], host["MemorySwap"]) == (10 ** 9, 300 << 20, 300 << 20)


def test_a_pipe_over_its_memory_fails_with_the_memory_line_and_a_bigger_one_reuses_the_node(
        file_remote, home, tmp_path, monkeypatch):
    r = _run("-", "hungry", "sized.Hungry")
    assert r.code == 1
    assert r.err.strip().splitlines()[-1].startswith("dsdt: error: the run failed: out of memory: limit 64 MiB")
    node = _node(file_remote, "hungry")
    record = run_record(file_remote, node)
    assert (record.status, record.cause, record.attempt) == ("failed", "out_of_memory", 1)
    assert record.error.startswith("out of memory: limit 64 MiB")
    assert re.search(rf"^{node[:12]}  1 +sized\.Hungry  failed \(out of memory\)", "\n".join(_runs()), re.M)

    cfg = tmp_path / "luigi.cfg"
    cfg.write_text((REPO / "luigi.cfg").read_text() + "\n[run sized.Hungry]\nmemory = 512\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(cfg))
    again = _run("-", "hungry", "sized.Hungry")
    assert again.code == 0, again.err
    assert home.context().latest("hungry").data() == 200 << 20
    record = run_record(file_remote, node)   # the same node: its memory is not part of its id
    assert (record.status, record.attempt) == ("succeeded", 2)
    lines = [line for line in _runs() if line.startswith(node[:12])]
    assert [line.split()[1:4] for line in lines] == [["2", "sized.Hungry", "succeeded"],
                                                     ["1", "sized.Hungry", "failed"]]


def test_a_pipe_failing_once_succeeds_on_its_retry_and_both_attempts_are_history(file_remote, home):
    r = _run("-", "flaky", "sized.Flaky")
    assert r.code == 0, r.err
    assert home.context().latest("flaky").data() == 2    # DISDAT_ATTEMPT reached the pipe
    assert "attempt 1 failed (sized.Flaky failed: RuntimeError: the first attempt fails on purpose" in r.err
    node = _node(file_remote, "flaky")
    rows = [line.split() for line in _runs() if line.startswith(node[:12])]
    assert [row[1:4] for row in rows] == [["2", "sized.Flaky", "succeeded"], ["1", "sized.Flaky", "failed"]]
    assert rows[1][4] == "(user"   # failed (user error)
    failed = _runs("--status", "failed")
    assert len(failed) == 1 and failed[0].split()[:2] == [node[:12], "1"]
    first = run_dsdt("logs", node[:10], "--attempt", "1")
    assert first.code == 0 and "this is attempt 1" in first.out and "fails on purpose" in first.out
    latest = run_dsdt("logs", node[:10])
    assert "this is attempt 2" in latest.out and "this is attempt 1" not in latest.out
    assert_user_error(run_dsdt("logs", node[:10], "--attempt", "3"), "has no log of attempt 3 (its attempts: 1, 2)")


def test_a_per_pipe_timeout_stops_only_that_pipe(file_remote, home):
    r = _run("--workers", "2", "-", "both", "sized.Both")
    assert r.code == 1
    assert "ran longer than its timeout of 2 s" in r.err.strip().splitlines()[-1]
    slow, patient = run_record(file_remote, _node(file_remote, "both-slow")), \
        run_record(file_remote, _node(file_remote, "both-patient"))
    assert (slow.status, slow.cause, slow.attempt) == ("timed_out", "timed_out", 1)
    assert slow.duration < 20
    assert patient.status == "succeeded"
    root = r.err.split("run ", 1)[1][:32]     # the plan line: "run <root node id>: sized.Both (3 nodes) ..."
    of_run = {line.split()[2] for line in _runs("--run", root[:10])}
    assert of_run == {"sized.Slowpoke", "sized.Patient"}   # the nodes it ran (the root never started)
    assert {line.split()[2] for line in _runs("--pipe", "sized.S*")} == {"sized.Slowpoke"}


def test_gpus_are_refused_in_one_line_where_the_engine_has_none(file_remote, home):
    before = (snapshot(home.path), store_keys(file_remote))
    r = _run("-", "trained", "sized.Pipeline")
    assert_user_error(r, "sized.Trainer asks for 1 GPU(s) (@resources or [run sized.Trainer] gpus) and this Docker "
                         "engine has none (no nvidia runtime): run it on AWS Batch, or ask for 0")
    assert (snapshot(home.path), store_keys(file_remote)) == before
