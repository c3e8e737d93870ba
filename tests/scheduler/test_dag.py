"""Pipe graphs under a real luigid on 127.0.0.1: one container per pipe, in parallel, restartable, shared through
the remote, visible (and secret-free) in the scheduler, its visualiser rendered by a real Chromium."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import (DSDT, REPO, TEST_PIPES, assert_user_error, chromium_dom, luigid_api as api,
                      luigid_nodes as tasks_of, nodes_started, run_dsdt, snapshot)

LUIGI = str(Path(sys.executable).parent / "luigi")
DIAMOND = {"diamond.Root", "diamond.Left", "diamond.Right", "diamond.Join"}


def remote_records(remote_dir: Path) -> dict:
    """bundle name -> run record, read straight from the file:// remote."""
    out = {}
    for path in (remote_dir / "context" / "shared" / "runs").glob("*.json"):
        record = json.loads(path.read_text())
        out[record["bundle_name"]] = record
    return out


@pytest.fixture
def diamond(home, cli, tmp_path, test_pipes_image, pipe_root):
    """A context bound to a fresh file:// remote, the test pipe_root, and a unique output name."""
    pipe_root(TEST_PIPES)
    remote = tmp_path / "remote"
    assert cli("remote", "shared", remote.as_uri()).code == 0
    return remote, f"joined{uuid.uuid4().hex[:8]}"


def test_diamond_runs_as_four_containers_two_at_once_and_only_the_root_output_is_pulled(diamond, home, luigid_url):
    remote, out = diamond
    r = run_dsdt("run", "--workers", "2", "--scheduler-url", luigid_url, "-", out, "diamond.Join", "--seconds", "3",
                 cwd=REPO)
    assert r.code == 0, r.err
    done = tasks_of(luigid_url, out, "DONE")
    assert sorted(t["params"]["pipe_cls"] for t in done) == sorted(DIAMOND)  # one node each: Root ran once
    records = remote_records(remote)
    assert set(records) == {out, f"{out}-left", f"{out}-right", f"{out}-root"}
    assert all(rec["status"] == "succeeded" and rec["attempt"] == 1 for rec in records.values())
    left, right = (next(t for t in done if t["params"]["pipe_cls"] == f"diamond.{n}") for n in ("Left", "Right"))
    assert left["time_running"] < right["last_updated"] and right["time_running"] < left["last_updated"]  # overlap
    assert [row.name for row in home.context().find()] == [out]  # only the requested output came back
    assert home.context().latest(out).data() == {"sum": 5}


def test_a_failed_branch_fails_only_what_needs_it_and_a_rerun_runs_only_that(diamond, home, luigid_url):
    remote, out = diamond
    flag = remote / "flags" / "fail-right"
    flag.parent.mkdir(parents=True)
    flag.touch()
    args = ("run", "--workers", "2", "--scheduler-url", luigid_url, "-", out, "diamond.Join", "--seconds", "0.5",
            "--fail-if", str(flag))
    failed = run_dsdt(*args, cwd=REPO)
    assert failed.code == 1
    last = failed.err.strip().splitlines()[-1]
    assert re.fullmatch(r"dsdt: error: the run failed: diamond\.Right failed: RuntimeError: the right branch failed "
                        r"on purpose \(its flag file exists\) \(container disdat-[0-9a-f]{12}-[0-9a-f]{6} exited with "
                        r"status 1\)", last), failed.err[-3000:]
    statuses = {t["params"]["pipe_cls"]: t["status"] for t in tasks_of(luigid_url, out)}
    assert statuses == {"diamond.Root": "DONE", "diamond.Left": "DONE", "diamond.Right": "FAILED",
                        "diamond.Join": "PENDING"}
    right = next(t for t in tasks_of(luigid_url, out, "FAILED"))
    error = json.loads(api(luigid_url, "fetch_error", task_id=right["id"])["error"])
    assert error.startswith("diamond.Right failed: RuntimeError: the right branch failed on purpose")
    assert "--- last container log lines ---" in error  # Luigi's own failure path carries the log tail
    before = remote_records(remote)
    assert {n: rec["status"] for n, rec in before.items()} == {f"{out}-root": "succeeded", f"{out}-left": "succeeded",
                                                              f"{out}-right": "failed"}
    flag.unlink()
    fixed = run_dsdt(*args, cwd=REPO)
    assert fixed.code == 0, fixed.err
    after = remote_records(remote)
    for name in (f"{out}-root", f"{out}-left"):  # not run again: the very same record
        assert after[name] == before[name]
    assert after[f"{out}-right"]["attempt"] == 2 and after[f"{out}-right"]["status"] == "succeeded"
    assert after[out]["attempt"] == 1 and home.context().latest(out).data() == {"sum": 5}


def test_a_second_user_of_the_remote_starts_no_container_and_gets_the_same_bundle(diamond, home, tmp_path):
    remote, out = diamond
    first = run_dsdt("run", "--workers", "2", "-", out, "diamond.Join", "--seconds", "0", cwd=REPO)
    assert first.code == 0, first.err
    records = remote_records(remote)
    other = {"DISDAT_HOME": str(tmp_path / "second-user")}
    for cmd in (("init",), ("context", "mine"), ("remote", "shared", remote.as_uri())):
        assert run_dsdt(*cmd, env=other).code == 0
    second = run_dsdt("run", "--workers", "2", "-", out, "diamond.Join", "--seconds", "0", cwd=REPO, env=other)
    assert second.code == 0, second.err
    assert nodes_started(second.err) == 0 and "4 done already" in second.err
    assert remote_records(remote) == records  # nothing ran again
    theirs = second.out.split()[1]
    assert theirs == home.context().latest(out).uuid


def test_the_scheduler_never_sees_a_credential(home, cli, s3_env, tmp_path, test_pipes_image, pipe_root, luigid_url):
    from conftest import new_bucket

    pipe_root(TEST_PIPES)
    assert cli("remote", "shared", f"s3://{new_bucket(s3_env)}/dag").code == 0
    out = f"secretless{uuid.uuid4().hex[:8]}"
    r = run_dsdt("run", "--scheduler-url", luigid_url, "-", out, "diamond.Join", "--seconds", "0", cwd=REPO)
    assert r.code == 0, r.err
    root = next(t for t in tasks_of(luigid_url, out, "DONE") if t["params"]["pipe_cls"] == "diamond.Join")
    answers = [api(luigid_url, "task_list", status=s, upstream_status="") for s in ("DONE", "FAILED", "PENDING")]
    answers += [api(luigid_url, "dep_graph", task_id=root["id"]), api(luigid_url, "worker_list"),
                api(luigid_url, "task_search", task_str="diamond."),
                api(luigid_url, "fetch_error", task_id=root["id"])]
    text = json.dumps(answers)
    assert root["id"] in text and "diamond.Join" in text  # the answers are about this run
    for secret in (s3_env.access_key, s3_env.secret_key, "AWS_SECRET_ACCESS_KEY"):
        assert secret not in text, secret
    assert all("plan" not in task["params"] for answer in answers[:3] for task in answer.values())  # private
    assert s3_env.secret_key not in r.err + r.out


def test_the_visualiser_shows_the_graph_in_a_real_browser(diamond, luigid_url, tmp_path):
    _remote, out = diamond
    assert run_dsdt("run", "--scheduler-url", luigid_url, "-", out, "diamond.Join", "--seconds", "0",
                    cwd=REPO).code == 0
    root = next(task_id for task_id, task in api(luigid_url, "task_list", status="DONE", upstream_status="").items()
                if task["name"] == "RunPipe" and task["params"]["output_bundle"] == out)
    page = f"{luigid_url}/static/visualiser/index.html#tab=graph&taskId={urllib.parse.quote(root)}"
    ours = {t["id"] for t in tasks_of(luigid_url, out, "DONE")}
    assert len(ours) == 4
    drawn = set()
    for attempt in range(3):  # the page draws after its API calls answer: give a slow first start another go
        dom = chromium_dom(page, tmp_path / f"chromium{attempt}")
        svg = dom[dom.find("<svg"):dom.find("</svg>")]
        drawn = {task_id: status for status, task_id in re.findall(
            r'class="graph-node-a" data-task-status="(\w+)" data-task-id="([^"]+)"', svg)}
        if drawn:
            break
    containers = {task_id for task_id in drawn if task_id.startswith("diamond.")}   # the nodes, by pipe class
    assert containers == ours, dom[-3000:]  # the graph view draws this run's four container nodes...
    assert set(drawn.values()) == {"DONE"} and root in drawn  # ...and the pull and RunPipe, all done
    assert any(task_id.startswith("PullOutput_") for task_id in drawn) and len(drawn) == 6


def test_plan_errors_are_one_line_and_change_nothing(diamond, home, cli, tmp_path, docker_ready):
    remote, out = diamond
    before = (snapshot(home.path), snapshot(tmp_path / "remote") if remote.exists() else {})
    closed = f"http://127.0.0.1:{_closed_port()}"
    assert_user_error(run_dsdt("run", "--scheduler-url", closed, "-", out, "diamond.Join", cwd=REPO),
                      f"the Luigi scheduler at {closed} does not answer")
    assert_user_error(run_dsdt("run", "-", out, "diamond.Cycle", cwd=REPO),
                      "the pipes depend on each other in a cycle: diamond.Cycle -> diamond.Cycle -> diamond.Cycle")
    only = {"DISDAT_DOCKERIZE_REPOSITORY_PREFIX": f"only-one-module-{uuid.uuid4().hex[:6]}"}
    assert run_dsdt("dockerize", "--base-image", docker_ready, str(TEST_PIPES), "needs_missing", env=only).code == 0
    try:
        assert_user_error(run_dsdt("run", "-", out, "needs_missing.NeedsOther", cwd=REPO, env=only),
                          f"image {only['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/disdat-passthrough:latest does not "
                          f"exist: run `dsdt dockerize {TEST_PIPES} passthrough`")
    finally:
        import docker

        docker.from_env().images.remove(f"{only['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/disdat-needs_missing:latest")
    assert (snapshot(home.path), snapshot(tmp_path / "remote") if remote.exists() else {}) == before


def test_luigi_module_exits_non_zero_without_a_retcode_section(diamond, tmp_path, monkeypatch):
    remote, out = diamond
    flag = remote / "fail"
    remote.mkdir(exist_ok=True)
    flag.touch()
    empty = tmp_path / "empty.cfg"
    empty.write_text("[core]\nautoload_range = false\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(empty))
    proc = subprocess.run([LUIGI, "--module", "disdat_luigi", "RunPipe", "--input-bundle", "-", "--output-bundle", out,
                           "--pipe-cls", "diamond.Join",
                           "--pipe-params", json.dumps({"seconds": 0, "fail_if": str(flag)}),
                           "--local-scheduler"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 30, proc.stderr[-2000:]  # task_failed, though no luigi.cfg here sets [retcode]
    assert "diamond.Right failed: RuntimeError" in proc.stderr


def test_running_nodes_report_their_container_and_last_log_line(home, cli, tmp_path, test_pipes_image, pipe_root,
                                                              luigid_url):
    pipe_root(TEST_PIPES)
    assert cli("remote", "shared", (tmp_path / "remote").as_uri()).code == 0
    out = f"nap{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([DSDT, "run", "--scheduler-url", luigid_url, "-", out, "slow.Sleep", "--seconds", "6"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        message = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "sleeping" not in message:
            running = tasks_of(luigid_url, out, "RUNNING")
            message = running[0]["status_message"] or "" if running else ""
            time.sleep(0.3)
        assert re.fullmatch(r"container [0-9a-f]{12} running: sleeping 6\.0 s", message), message
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    done = tasks_of(luigid_url, out, "DONE")[0]
    assert done["status_message"].startswith(f"succeeded: {out} ")
    assert done["progress_percentage"] == 100


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
