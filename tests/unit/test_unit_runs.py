"""Run records and leases (disdat_luigi.remotes.runs): validated before they are used or printed."""
from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from disdat_luigi.errors import IntegrityError
from disdat_luigi.runs.record import FAILED, MAX_TEXT, RUNNING, STATUSES, SUCCEEDED, RunRecord
from disdat_luigi.runs.lease import LEASE_TTL, Lease, host_id
from disdat_luigi.store.manifest import CREATED_FORMAT, check_created

NODE = "a" * 32
RUN = "b" * 32
UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
STARTED = "2026-01-31T12:00:00.000000Z"


def record(**changes) -> RunRecord:
    r = RunRecord(node_id=NODE, run_id=RUN, status=RUNNING, pipe_cls="report.TextReport",
                  params={"min_len": "3"}, bundle_name="report", backend="Local", image="sha256:" + "e" * 64,
                  started=STARTED, input_uuid=UUID, upstream={"words": "c" * 32}, inputs={"words": UUID},
                  job_id="disdat-aaaaaaaaaaaa-123456", host="box/1234")
    return replace(r, **changes)


def raw_with(**changes) -> bytes:
    d = json.loads(record().to_json())
    d.update(changes)
    return json.dumps(d).encode()


def test_statuses_are_the_fixed_set():
    assert STATUSES == ("running", "succeeded", "failed", "interrupted", "timed_out")


@pytest.mark.parametrize("r", [record(), record(status=SUCCEEDED, output_uuid=UUID, stopped=STARTED),
                               record(status=FAILED, error="boom", stopped=STARTED, input_uuid=None, job_id=None,
                                      host=None, upstream={}, inputs={}, attempt=3)])
def test_run_record_round_trips(r):
    assert RunRecord.from_json(r.to_json(), NODE) == r


@pytest.mark.parametrize("changes, message", [
    ({"status": "done"}, "field status has a value that is not allowed"),
    ({"status": "Running"}, "field status has a value that is not allowed"),
    ({"status": None}, "field status has a value that is not allowed"),
    ({"error": "boom\x1b[2J"}, "field error is not a line of text"),
    ({"error": "first\nsecond"}, "field error is not a line of text"),
    ({"error": "x" * (MAX_TEXT + 1)}, "field error is not a line of text"),
    ({"started": "yesterday"}, "field started: 'yesterday' is not a UTC timestamp"),
    ({"started": STARTED + "\n"}, "field started: "),
    ({"stopped": "2026-01-31"}, "field stopped: '2026-01-31' is not a UTC timestamp"),
    ({"node_id": "XYZ"}, "field node_id: 'XYZ' is not a hex id"),
    ({"run_id": None}, "field run_id: None is not a hex id"),
    ({"output_uuid": "nope"}, "field output_uuid: 'nope' is not a uuid"),
    ({"input_uuid": UUID.upper()}, "field input_uuid: "),
    ({"upstream": {"words": "zz"}}, "field upstream[words]: 'zz' is not a hex id"),
    ({"inputs": {"words": "zz"}}, "field inputs[words]: 'zz' is not a uuid"),
    ({"params": {"n": 1}}, "field params[n] is not a line of text"),
    ({"params": ["n"]}, "field params is not an object"),
    ({"pipe_cls": "x\ry"}, "field pipe_cls is not a line of text"),
    ({"host": "h\x00"}, "field host is not a line of text"),
    ({"attempt": "1"}, "field attempt has a value that is not allowed"),
    ({"bundle_name": "../x"}, f"the run record of {NODE} is refused: invalid bundle name '../x'"),
    ({"format": 2}, f"the run record of {NODE} is not a format 1 record"),
])
def test_run_record_from_json_refuses_a_bad_field(changes, message):
    with pytest.raises(IntegrityError) as err:
        RunRecord.from_json(raw_with(**changes), NODE)
    assert str(err.value).startswith(message), str(err.value)


def test_run_record_of_another_node_is_refused():
    with pytest.raises(IntegrityError) as err:
        RunRecord.from_json(record().to_json(), "f" * 32)
    assert str(err.value) == f"the run record of {'f' * 32} names node {NODE}"


def test_run_record_succeeded_without_output_is_refused():
    with pytest.raises(IntegrityError) as err:
        RunRecord.from_json(raw_with(status=SUCCEEDED, output_uuid=None), NODE)
    assert str(err.value) == f"the run record of {NODE} says succeeded without an output"


@pytest.mark.parametrize("raw, message", [(b"{", "is not valid JSON: "), (b"\xff", "is not valid JSON: "),
                                          (b"[]", "is not a format 1 record"), (b"{}", "is not a format 1 record")])
def test_run_record_unreadable_is_refused(raw, message):
    with pytest.raises(IntegrityError) as err:
        RunRecord.from_json(raw, NODE)
    assert str(err.value).startswith(f"the run record of {NODE} {message}")


def test_finished_cuts_the_error_to_its_first_line_and_sets_stopped():
    before = time.time()
    done = record().finished(FAILED, "ValueError: bad\n  File x, line 3\n")
    assert (done.status, done.error) == (FAILED, "ValueError: bad")
    assert check_created(done.stopped) == done.stopped
    assert done.duration is not None and done.duration > 0
    stopped = datetime.strptime(done.stopped, CREATED_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    assert before - 1 <= stopped <= time.time() + 1
    assert replace(done, status=RUNNING, error=None, stopped=None) == record()


def test_finished_without_error_and_with_changes():
    done = record().finished(SUCCEEDED, output_uuid=UUID)
    assert (done.status, done.error, done.output_uuid) == (SUCCEEDED, None, UUID)
    assert RunRecord.from_json(done.to_json(), NODE) == done


def test_finished_cuts_a_long_error_to_max_text():
    done = record().finished(FAILED, "x" * (MAX_TEXT + 50))
    assert done.error == "x" * MAX_TEXT
    assert RunRecord.from_json(done.to_json(), NODE) == done


@pytest.mark.parametrize("error", ["ValueError: expected columns a\tb", "ValueError: \x1b[31mred\x1b[0m",
                                   "nul\x00byte"])
def test_finished_record_can_be_read_back_whatever_the_error_text(error):
    """A pipe's exception text goes into the record: the record finished() makes must pass from_json."""
    done = record().finished(FAILED, error)
    back = RunRecord.from_json(done.to_json(), NODE)
    assert back.status == FAILED and back.error


def test_duration_is_stopped_minus_started():
    assert record(stopped="2026-01-31T12:00:02.500000Z").duration == 2.5
    assert record().duration is None


# ---------------------------------------------------------------------------------------------------
# leases
# ---------------------------------------------------------------------------------------------------

def dead_pid() -> int:
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    for pid in range(pid_max - 1, 1, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid")


def test_a_lease_of_this_process_is_not_stale_while_it_is_renewed():
    lease = Lease.mine("Local")
    assert (lease.host, lease.pid) == (host_id(), os.getpid())
    assert lease.pid_start is not None
    assert lease.stale() is False
    assert lease.stale(now=lease.renewed + LEASE_TTL) is False
    # a live process proves nothing by itself: a lease on this host must be renewed like any other
    assert lease.stale(now=lease.renewed + LEASE_TTL + 0.01) is True


def test_a_forged_lease_naming_this_host_and_a_long_lived_pid_blocks_for_lease_ttl_at_most():
    """Issue 15, finding 1: a lease planted on the shared remote with this host's id (visible in every lease
    the victim wrote) and pid 1 (whose start time is guessable) used to count as alive for ever."""
    from disdat_luigi.runs.lease import _process_start

    forged = Lease(owner="attacker", host=host_id(), pid=1, pid_start=_process_start(1), renewed=time.time())
    assert forged.stale() is False                                   # as fresh as a real one, for now
    assert forged.stale(now=forged.renewed + LEASE_TTL + 1) is True  # but nobody renews it
    assert replace(forged, renewed=time.time() + 10 * LEASE_TTL).stale() is True  # a renewal "from the future"


def test_a_waiter_judges_a_lease_by_its_changes_not_by_what_it_says():
    """A lease whose version never changes for LEASE_TTL seconds of the waiter's clock is stale, whatever its
    'renewed' field claims (it could claim a time just under LEASE_TTL in the future)."""
    from disdat_luigi.runs.lease import LeaseWatch

    lease = replace(Lease.mine("Local"), renewed=time.time() + LEASE_TTL - 1)
    watch = LeaseWatch("v1", ttl=0.2)
    assert watch.stale(lease, "v1") is False
    time.sleep(0.25)
    assert watch.stale(lease, "v1") is True          # no renewal seen for the ttl
    assert watch.stale(lease, "v2") is False         # a renewal: a new version, alive again


def test_a_lease_of_a_dead_process_on_this_host_is_stale():
    lease = replace(Lease.mine("Local"), pid=dead_pid())
    assert lease.stale(now=lease.renewed) is True


def test_a_lease_of_a_reused_pid_on_this_host_is_stale():
    lease = replace(Lease.mine("Local"), pid_start="1")
    assert lease.stale(now=lease.renewed) is True


def test_a_lease_from_another_host_is_stale_only_after_lease_ttl():
    lease = replace(Lease.mine("Local"), host="elsewhere/0123456789ab", renewed=1000.0)
    assert lease.stale(now=1001.0) is False
    assert lease.stale(now=1000.0 + LEASE_TTL) is False
    assert lease.stale(now=1000.0 + LEASE_TTL + 0.01) is True
    assert replace(lease, pid=dead_pid()).stale(now=1001.0) is False  # another host's pids mean nothing here


def test_a_lease_round_trips_through_json():
    lease = replace(Lease.mine("Local"), job_id="disdat-x")
    assert Lease.from_json(lease.to_json()) == lease


@pytest.mark.parametrize("raw", [b"{bad", b"\xff", b"[]", b"null", b'{"owner": "x"}',
                                 b'{"owner": "o", "host": "h", "pid": "one", "renewed": 1}'])
def test_an_unreadable_lease_is_stale(raw):
    lease = Lease.from_json(raw)
    assert lease.stale() is True
    assert lease.owner == "?"


def test_a_lease_whose_renewal_time_is_not_a_number_is_stale():
    raw = b'{"owner": "o", "host": "elsewhere/0123456789ab", "pid": 1, "pid_start": null, "renewed": NaN}'
    assert Lease.from_json(raw).stale(now=time.time()) is True
