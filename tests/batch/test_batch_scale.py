"""AWS Batch at our users' size, on moto behind the limits proxy (scripts/aws_proxy.py: a job depending on more
than 20 jobs, a SubmitJob over 30 KiB, more than 50 Batch calls a second, ... are refused as AWS refuses them,
and any refusal fails the test): a fan-in wider than Batch allows goes through barrier jobs, or, while the client
waits, is held back until at most 20 of its upstream jobs are left; a waiting run follows every job at once with
one poller; and a client killed in the middle of submitting a wide graph leaves nothing the next run cannot
adopt."""
from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import DSDT, REPO, TOKEN, assert_user_error, batch_records, run_batch, run_dsdt, wait_until

WIDTH = 60


def _queue_jobs(batch) -> dict:
    """Every job on the test queue, described (id -> description)."""
    ids = []
    for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"):
        pages = batch.get_paginator("list_jobs").paginate(jobQueue="disdat-queue", jobStatus=status)
        ids += [j["jobId"] for page in pages for j in page["jobSummaryList"]]
    return {j["jobId"]: j for i in range(0, len(ids), 100) for j in batch.describe_jobs(jobs=ids[i:i + 100])["jobs"]}


def _run_of(jobs: dict, remote: str) -> dict:
    """The jobs of one remote (one test's run), node jobs and barriers."""
    return {i: j for i, j in jobs.items() if (j.get("tags") or {}).get("disdat.remote", "").startswith(remote)}


def _pull_when_ready(name: str) -> None:
    """``dsdt pull`` of a non-blocking run's output, again until its jobs are done."""
    deadline = time.monotonic() + 300
    while (pulled := run_dsdt("pull", name)).code != 0 and time.monotonic() < deadline:
        assert "is not ready yet" in pulled.err, pulled.err
        time.sleep(3)
    assert pulled.code == 0, pulled.err


def test_a_fan_in_of_60_runs_with_no_job_depending_on_more_than_20(aws, home, batch_proxy):
    """Submitted without waiting: the join's job is chained through barrier jobs."""
    batch, url = aws
    r = run_batch(*TOKEN, "-", "joined", "fan.Join", "--width", str(WIDTH))
    assert r.code == 0, r.err
    _pull_when_ready("joined")
    assert home.context().latest("joined").data() == WIDTH + sum(range(WIDTH))  # every part once, with its i
    jobs = _run_of(_queue_jobs(batch), url)
    assert max(len(j["dependsOn"]) for j in jobs.values()) <= 20
    records = batch_records(url)
    join = jobs[records["joined"].job_id]
    depends = [jobs[d["jobId"]] for d in join["dependsOn"]]
    barriers = [j for j in depends if "disdat.barrier" in j["tags"]]
    # 60 parts: 17 waited for directly, 43 through 3 barriers (20, 20, 3): the fewest the limit allows
    assert len(barriers) == 3 and all(b["tags"]["disdat.barrier"] == "level 0" for b in barriers)
    assert sorted(len(b["dependsOn"]) for b in barriers) == [3, 20, 20]
    assert all(b["status"] == "SUCCEEDED" and b["container"]["command"] == ["--barrier"] for b in barriers)
    parts = {r.job_id for name, r in records.items() if name.startswith("joined-part")}
    assert len(parts) == WIDTH
    waited = [d["jobId"] for b in barriers for d in b["dependsOn"]] + [j["jobId"] for j in depends if j not in barriers]
    assert sorted(waited) == sorted(parts)  # each part, once
    assert not [r for r in records.values() if r.status != "succeeded"]
    assert batch_proxy.counts().get("batch:SubmitJob") == WIDTH + 2 + 3  # source, parts, join, barriers


def _created_s(job: dict) -> float:
    return job["createdAt"] / 1000


def test_a_waiting_run_holds_a_wide_fan_in_back_until_20_of_its_upstream_jobs_are_left(aws, home, batch_proxy):
    """--wait: no barrier job; the join is submitted once at most 20 of its 30 parts have not succeeded, and
    depends on those alone."""
    batch, url = aws
    width = 30
    r = run_batch("--wait", *TOKEN, "-", "held", "fan.Join", "--width", str(width), "--seconds", "2")
    assert r.code == 0, r.err
    assert home.context().latest("held").data() == width + sum(range(width))
    jobs = _run_of(_queue_jobs(batch), url)
    assert not [j for j in jobs.values() if "disdat.barrier" in j["tags"]]
    records = batch_records(url)
    join = jobs[records["held"].job_id]
    parts = [jobs[r.job_id] for name, r in records.items() if name.startswith("held-part")]
    assert len(parts) == width and all(p["status"] == "SUCCEEDED" for p in parts)
    done_before = [p for p in parts if p["stoppedAt"] / 1000 <= _created_s(join)]
    assert len(done_before) >= width - 20, (len(done_before), _created_s(join))
    depends = {d["jobId"] for d in join["dependsOn"]}
    assert len(depends) <= 20 and depends <= {p["jobId"] for p in parts}
    assert depends >= {p["jobId"] for p in parts if p not in done_before}  # every part it did not see succeed
    assert batch_proxy.counts().get("batch:SubmitJob") == width + 2   # source, parts, join: nothing else


def test_a_held_fan_in_is_not_submitted_when_an_upstream_job_fails(aws, home):
    """One of 24 parts fails at once (its flag is a path every container has) while the others take 15 s: the run
    fails with the part's reason, and the join gets neither a job nor a record (Batch would have failed it).
    (Had 4 parts succeeded first, the join would have been submitted depending on the failed one, and Batch
    would have failed it: the same end, through Batch.)"""
    batch, url = aws
    r = run_batch("--wait", *TOKEN, "-", "broken", "fan.Join", "--width", "24", "--seconds", "15", "--fail-if", "/")
    assert r.code != 0
    assert r.err.strip().splitlines()[-1].startswith("dsdt: error: the run failed: fan.Part failed: ")
    assert "failed on purpose" in r.err
    records = batch_records(url)
    assert "broken" not in records and len(records) == 1 + 24   # the source and the parts
    node_jobs = [j for j in _run_of(_queue_jobs(batch), url).values() if "disdat.barrier" not in j["tags"]]
    assert sorted(j["tags"]["disdat.node_id"] for j in node_jobs) == sorted(r.node_id for r in records.values())
    assert not [j for j in _run_of(_queue_jobs(batch), url).values() if "disdat.barrier" in j["tags"]]


def _running_in_luigid(url: str) -> set:
    query = urllib.parse.quote(json.dumps({"status": "RUNNING", "upstream_status": ""}))
    tasks = json.loads(urllib.request.urlopen(f"{url}/api/task_list?data={query}", timeout=10).read())["response"]
    return {task_id for task_id, t in tasks.items() if t["name"] == t["params"].get("pipe_cls")}   # the nodes


def test_a_waiting_run_runs_its_parts_at_once_and_follows_them_with_one_poller(aws, home, batch_proxy, luigid_url):
    """--wait --workers 1: every part's job is submitted at once, so they overlap on Batch; luigid shows them
    running together (their tasks do not wait for a worker); and the whole run polls DescribeJobs about once a
    second at most (12 jobs: one call a round), not once per job per round."""
    batch, url = aws
    width, seconds = 12, 6
    proc = subprocess.Popen([DSDT, "run", "--wait", "--workers", "1", "--scheduler-url", luigid_url, *TOKEN, "-",
                             "overlap", "fan.Join", "--width", str(width), "--seconds", str(seconds)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    most = 0
    try:
        while proc.poll() is None:
            most = max(most, len(_running_in_luigid(luigid_url)))
            time.sleep(0.5)
        out, err = proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert most >= width // 2, most  # more nodes running at once than the one worker would allow
    parts = [j for j in _run_of(_queue_jobs(batch), url).values() if j["jobName"].endswith("-fan")
             and (j.get("container") or {}).get("command", [""])[0] in ("--job", "--job-at")]
    spans = sorted((j["startedAt"], j["stoppedAt"]) for j in parts if "startedAt" in j)
    overlapping = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlapping >= width // 2, spans   # they ran together on Batch, not one after another
    counts = batch_proxy.counts()
    started, ended = min(s for s, _ in spans) / 1000, max(e for _, e in spans) / 1000
    assert counts["batch:DescribeJobs"] <= (ended - started) + 30, counts  # about one a second, not 12
    assert counts.get("logs:GetLogEvents", 0) == 0, counts  # 14 nodes are more than [run] follow_logs: no reads


def test_a_client_killed_mid_submit_of_a_wide_graph_leaves_nothing_the_next_run_cannot_adopt(aws, home, tmp_path):
    """kill -9 in the middle of submitting 32 nodes (at its 20th record write, claims and job ids mixed): the
    next run submits only what has no job, adopts what has one (named or not), and every node runs exactly
    once; `dsdt pull` then gets the output."""
    batch, url = aws
    hit = tmp_path / "hit"
    width = 30
    args = [*TOKEN, "-", "wide", "fan.Join", "--width", str(width), "--seconds", "3"]
    env = dict(os.environ, DISDAT_FAULT="put:context/shared/runs/:20", DISDAT_FAULT_SIGNAL=str(hit))
    proc = subprocess.Popen([DSDT, "run", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert wait_until(hit.exists, 120), proc.communicate(timeout=5) if proc.poll() is not None else "no fault"
    finally:
        proc.kill()
        proc.communicate()
    before = {r.node_id: r for r in batch_records(url).values()}
    assert 0 < len(before) < width + 2  # it was killed part way
    again = run_batch(*args)
    assert again.code == 0, again.err
    _pull_when_ready("wide")
    assert home.context().latest("wide").data() == width + sum(range(width))
    # moto marks a job SUCCEEDED a moment after its container ended (having written its record)
    assert wait_until(lambda: all(j["status"] in ("SUCCEEDED", "FAILED")
                                  for j in _run_of(_queue_jobs(batch), url).values()), 60, every=1)
    jobs = _run_of(_queue_jobs(batch), url)
    per_node: dict = {}
    for j in jobs.values():
        if "disdat.barrier" not in j["tags"]:
            per_node.setdefault(j["tags"]["disdat.node_id"], []).append(j["status"])
    assert len(per_node) == width + 2
    twice = {node: (statuses, before.get(node)) for node, statuses in per_node.items() if statuses != ["SUCCEEDED"]}
    assert not twice, twice  # each node ran once


@pytest.mark.parametrize("width", [20, 24])
def test_interrupting_a_waiting_wide_run_stops_every_job_it_submitted(aws, home, width):
    """Ctrl-C while the parts run and the join waits: every job of the run ends (the parts terminated, the join
    failing with them, or, held back (24 parts), never submitted), and the parts are recorded interrupted."""
    import signal

    batch, url = aws
    proc = subprocess.Popen([DSDT, "run", "--wait", *TOKEN, "-", "stopped", "fan.Join", "--width", str(width),
                             "--seconds", "120"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: sum(1 for j in _run_of(_queue_jobs(batch), url).values()
                                      if j["status"] == "RUNNING") >= 10, 120, every=1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "dsdt: interrupted", err
    assert wait_until(lambda: all(j["status"] in ("SUCCEEDED", "FAILED")
                                  for j in _run_of(_queue_jobs(batch), url).values()), 60, every=1)
    records = batch_records(url)
    parts = [r for name, r in records.items() if name.startswith("stopped-part")]
    assert parts and all(r.status in ("interrupted", "succeeded") for r in parts), [r.status for r in parts]
    assert any(r.status == "interrupted" for r in parts)
    node_jobs = [j for j in _run_of(_queue_jobs(batch), url).values() if "disdat.barrier" not in j["tags"]]
    assert len(node_jobs) == 1 + width + (width <= 20)   # the source, the parts, and the join when not held


def test_a_waiting_client_killed_while_it_holds_a_fan_in_leaves_it_to_the_next_run(aws, home):
    """kill -9 of a --wait client while its held join waits for the parts: the parts run on and the join stays
    without a job or a record (`dsdt pull` says the run is not ready); the next run takes the parts' outputs and
    submits only the join."""
    import signal

    batch, url = aws
    width = 24
    args = [*TOKEN, "-", "orphan", "fan.Join", "--width", str(width), "--seconds", "30"]  # none ends before the kill
    proc = subprocess.Popen([DSDT, "run", "--wait", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert wait_until(lambda: sum(1 for j in _run_of(_queue_jobs(batch), url).values()
                                      if j["status"] == "RUNNING") >= 10, 120, every=1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert wait_until(lambda: all(j["status"] in ("SUCCEEDED", "FAILED")
                                  for j in _run_of(_queue_jobs(batch), url).values()), 120, every=1)
    assert "orphan" not in batch_records(url)
    assert len(_run_of(_queue_jobs(batch), url)) == 1 + width
    # its pending marker names the join, which has no record: not ready (no earlier version handed out instead)
    assert_user_error(run_dsdt("pull", "orphan"), "orphan is not ready yet", "has no job yet")
    again = run_batch("--wait", *args)
    assert again.code == 0, again.err
    assert home.context().latest("orphan").data() == width + sum(range(width))
    jobs = _run_of(_queue_jobs(batch), url).values()
    assert len(jobs) == 1 + width + 1 and all(j["status"] == "SUCCEEDED" for j in jobs)   # only the join was new
