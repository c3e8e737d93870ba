"""AWS Batch's limits kept by our own code, without a server: fan-ins through barrier jobs (at most 20
dependencies a job), the pace of calls (the account's 50 a second), and the one monitor that follows every
job of a run (100 ids a DescribeJobs call, at most one round a second, slower while nothing changes).

The monitor is driven by a stand-in for BatchClient that answers from a dict: what is tested is our own
scheduling of calls, not AWS (tests/batch/ runs the real thing on moto, behind a proxy that enforces AWS's
limits)."""
from __future__ import annotations

import math
import threading
import time
import types

import pytest

from disdat_luigi.containers.aws_batch import barrier_layers
from disdat_luigi.containers.batch_client import MAX_DEPENDS_ON, BatchClient, Pacer
from disdat_luigi.containers.batch_monitor import BatchMonitor
from disdat_luigi.errors import DisdatError


@pytest.mark.parametrize("width, barriers", [(0, 0), (1, 0), (20, 0), (21, 1), (24, 1), (60, 3), (400, 20),
                                             (401, 21), (1000, 52)])
def test_a_fan_in_goes_through_as_few_barriers_as_the_limit_allows(width, barriers):
    """Each barrier takes at most 19 off a node's count (20 jobs in, one out): ceil((width - 20) / 19) is the
    fewest any tree of jobs waiting for at most 20 each can have."""
    made = []

    def barrier(level, index, jobs):
        assert 1 <= len(jobs) <= MAX_DEPENDS_ON
        made.append((level, index, list(jobs)))
        return f"b{level}-{index}"

    upstream = [f"j{i}" for i in range(width)]
    top = barrier_layers(upstream, barrier)
    assert len(top) <= MAX_DEPENDS_ON
    assert len(made) == barriers == max(0, math.ceil((width - MAX_DEPENDS_ON) / (MAX_DEPENDS_ON - 1)))
    # every upstream job is waited for exactly once, through exactly one chain of barriers
    waited = [j for _, _, jobs in made for j in jobs if j.startswith("j")] + [j for j in top if j.startswith("j")]
    assert sorted(waited) == sorted(upstream)
    assert len({index for _, index, _ in made}) == len(made)   # barrier names stay unique


def test_a_node_keeps_its_latest_upstream_jobs_as_direct_dependencies():
    """A barrier's start is paid only when its jobs finish last: it gathers the earliest-submitted ones, and the
    node depends on as many of the others directly as fit (24 upstream: 19 direct, one barrier of 5)."""
    made = []
    top = barrier_layers([f"j{i}" for i in range(24)], lambda level, index, jobs: made.append(jobs) or "b")
    assert made == [[f"j{i}" for i in range(5)]]
    assert top == [f"j{i}" for i in range(5, 24)] + ["b"]


def test_a_job_over_the_dependency_limit_is_refused_before_anything_is_sent():
    client = BatchClient()
    client._batch = lambda *a, **k: pytest.fail("nothing may be sent")  # type: ignore[method-assign]
    with pytest.raises(DisdatError, match="would depend on 21 jobs; AWS Batch allows 20"):
        client.submit("n", "q", "d", [], {}, [f"j{i}" for i in range(21)], {})


def test_a_request_over_30_kib_is_refused_before_anything_is_sent():
    client = BatchClient()
    client._batch = lambda *a, **k: pytest.fail("nothing may be sent")  # type: ignore[method-assign]
    with pytest.raises(DisdatError, match="AWS Batch takes at most 30720"):
        client.submit("n", "q", "d", ["x" * 31000], {}, [], {})


def test_the_pacer_spreads_calls_from_every_thread():
    pacer = Pacer(40)
    stamps = []
    lock = threading.Lock()

    def call():
        for _ in range(20):
            pacer.wait()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    # whatever the threads did, any 40 + CATCH_UP + 1 calls in a row span a second (less a few ms of this
    # machine's jitter between a call's slot and the moment the thread records it): under Batch's 50 a second
    most = 40 + Pacer.CATCH_UP
    assert most < 50
    assert min(b - a for a, b in zip(stamps, stamps[most:])) >= 1.0 - 0.005


def test_the_pacer_makes_up_the_slots_a_late_caller_missed(monkeypatch):
    """A caller busy between its calls (a thread starved of the GIL, a slow record write) does not lower the
    rate: the slots it missed go to the next calls, a few at once, never more than CATCH_UP."""
    clock = [0.0]
    monkeypatch.setattr("disdat_luigi.containers.batch_client.time",
                        types.SimpleNamespace(monotonic=lambda: clock[0],
                                              sleep=lambda s: clock.__setitem__(0, clock[0] + s)))
    pacer, stamps = Pacer(40), []
    for i in range(400):
        pacer.wait()
        stamps.append(clock[0])
        if i % 10 == 9:
            clock[0] += 0.1   # busy for four slots every ten calls
    assert stamps[-1] <= 400 / 40 + 0.1      # 10 s for 400 calls (it was 14 s without catching up)
    assert max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps) <= 40 + Pacer.CATCH_UP


class FakeBatch(BatchClient):
    """The real client, its API calls answered from ``jobs`` (id -> status): each DescribeJobs call is
    counted with the number of ids it asked about."""

    def __init__(self, jobs):
        super().__init__()
        self.jobs = jobs
        self.calls_made = []

    def _batch(self, operation, **kwargs):
        assert operation == "describe_jobs"
        self.calls_made.append((time.monotonic(), len(kwargs["jobs"])))
        return {"jobs": [{"jobId": i, "status": self.jobs[i]} for i in kwargs["jobs"] if i in self.jobs]}


def test_one_monitor_follows_many_jobs_in_rounds_of_a_few_calls():
    fake = FakeBatch({f"job{i}": "RUNNING" for i in range(250)})
    monitor = BatchMonitor(fake)  # type: ignore[arg-type]
    seen = {}

    def waiter(job_id):
        with monitor.following(job_id):
            state, rnd = None, 0
            while state != "SUCCEEDED":
                job, rnd = monitor.next_round(job_id, rnd)
                state = job["status"]
            seen[job_id] = rnd

    threads = [threading.Thread(target=waiter, args=(f"job{i}",)) for i in range(250)]
    for t in threads:
        t.start()
    time.sleep(2.5)
    for i in range(250):
        fake.jobs[f"job{i}"] = "SUCCEEDED"
    for t in threads:
        t.join(30)
    assert len(seen) == 250
    sizes = [n for _, n in fake.calls_made]
    assert max(sizes) <= 100                                   # DescribeJobs takes 100 ids a call
    stamps = [t for t, _ in fake.calls_made]
    rounds = [stamps[0]] + [b for a, b in zip(stamps, stamps[1:]) if b - a > 0.5]
    assert all(b - a >= 0.95 for a, b in zip(rounds, rounds[1:]))   # at most one round a second
    assert len(fake.calls_made) <= 3 * len(rounds)                  # 250 jobs: three calls a round, not 250


def test_the_monitor_slows_down_while_nothing_changes_and_stops_with_its_last_waiter(monkeypatch):
    from disdat_luigi.containers import batch_monitor

    monkeypatch.setattr(batch_monitor, "POLL_FIRST", 0.1)   # the same schedule, ten times faster
    monkeypatch.setattr(batch_monitor, "POLL_MAX", 1.0)
    fake = FakeBatch({"a": "RUNNING"})
    monitor = BatchMonitor(fake)  # type: ignore[arg-type]
    with monitor.following("a"):
        time.sleep(0.8)
    calls = len(fake.calls_made)
    assert 3 <= calls <= 6   # 0.1 s, then 0.15, 0.225, 0.34 ... not one every 0.1 s
    time.sleep(0.5)
    assert len(fake.calls_made) <= calls + 1  # nobody follows a job: no more calls


def test_a_job_batch_does_not_know_is_reported_as_such():
    monitor = BatchMonitor(FakeBatch({}))  # type: ignore[arg-type]
    with monitor.following("gone"):
        job, _ = monitor.next_round("gone", 0)
    assert job is None


def _fast_monitor(monkeypatch):
    from disdat_luigi.containers import batch_monitor

    monkeypatch.setattr(batch_monitor, "POLL_FIRST", 0.05)   # the same schedule, twenty times faster
    monkeypatch.setattr(batch_monitor, "POLL_MAX", 0.5)


def test_a_held_fan_in_is_released_once_at_most_20_upstream_jobs_are_left(monkeypatch):
    """A waiting client submits a fan-in of 30 when 20 upstream jobs are left (runs/submit.py), depending on
    those: the backend's wait returns them, from the monitor's rounds, while the others still run."""
    from disdat_luigi.containers.aws_batch import AWSBatch

    _fast_monitor(monkeypatch)
    ids = [f"job{i}" for i in range(30)]
    fake = FakeBatch({i: "RUNNING" for i in ids})
    backend = AWSBatch(fake)

    def finish_one_by_one():
        for i in ids:
            time.sleep(0.15)
            fake.jobs[i] = "SUCCEEDED"

    threading.Thread(target=finish_one_by_one, daemon=True).start()
    left = backend.unfinished_when_few(ids, MAX_DEPENDS_ON, threading.Event())
    still_running = [i for i in ids if fake.jobs[i] != "SUCCEEDED"]
    assert 10 <= len(left) <= MAX_DEPENDS_ON
    assert set(still_running) <= set(left) and all(i in ids for i in left)


@pytest.mark.parametrize("jobs, error", [({"a": "RUNNING", "b": "FAILED"}, "its upstream job b failed"),
                                         ({"a": "RUNNING"}, "AWS Batch does not know its upstream job b")])
def test_a_held_fan_in_ends_its_wait_when_an_upstream_job_failed_or_is_unknown(monkeypatch, jobs, error):
    from disdat_luigi.containers.aws_batch import AWSBatch

    _fast_monitor(monkeypatch)
    with pytest.raises(DisdatError, match=error):
        AWSBatch(FakeBatch(jobs)).unfinished_when_few(["a", "b"], 0, threading.Event())


def test_a_held_fan_in_stops_waiting_when_its_run_stops(monkeypatch):
    from disdat_luigi.containers.aws_batch import AWSBatch

    _fast_monitor(monkeypatch)
    stopping = threading.Event()
    threading.Timer(0.3, stopping.set).start()
    with pytest.raises(KeyboardInterrupt):
        AWSBatch(FakeBatch({"a": "RUNNING"})).unfinished_when_few(["a"], 0, stopping)
