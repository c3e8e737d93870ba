"""Every attempt of a node is history (issue 16): a superseded attempt's record and log are kept under
``attempts/<node>/<n>``, including AWS Batch's own retries of one job (the entrypoint of attempt 2 of a job
keeps attempt 1 before it starts), and `dsdt runs` lists them. On a file:// remote, through RunStore and the
entrypoint's own function: AWS Batch retries cannot be shown on moto (it never retries a job)."""
from __future__ import annotations

from dataclasses import replace


from disdat_luigi.containers.job import NodeJob, NodeSpec
from disdat_luigi.runs.entrypoint import _this_attempt
from disdat_luigi.runs.owner import new_record
from disdat_luigi.runs.store import RunStore

NODE = "ab" * 16


def _job(runs: RunStore, attempt: int = 1) -> NodeJob:
    spec = NodeSpec(node_id=NODE, pipe_cls="m.Pipe", params={}, bundle_name="out")
    return NodeJob(remote_url=runs.remote.url, remote_context="shared", run_id=NODE, input_uuid="",
                   image="sha256:" + "e" * 64, backend="AWSBatch", node=spec, attempt=attempt)


def test_a_superseded_attempt_keeps_its_record_and_log(runs):
    first = new_record(_job(runs), "Local", 1).finished("failed", "boom", cause="user_error", exit_code=1)
    runs.write(first)
    runs.write_log(NODE, b"attempt one said this\n")
    runs.archive(first)
    assert runs.archived() == {NODE: [1]}
    assert runs.archived_record(NODE, 1) == first
    assert runs.attempt_log(NODE, 1) == b"attempt one said this\n"


def test_a_running_attempt_is_never_archived(runs):
    runs.archive(new_record(_job(runs), "Local", 1))
    assert runs.archived() == {}


def test_the_entrypoint_of_a_batch_retry_keeps_the_attempt_before_it(runs, monkeypatch):
    job = _job(runs)
    runs.write(replace(new_record(job, "AWSBatch", 1, job_id="job-1", detached=True).finished(
        "failed", "the first attempt failed", cause="user_error", exit_code=1)))
    runs.write_log(NODE, b"first\n")
    monkeypatch.setenv("AWS_BATCH_JOB_ATTEMPT", "2")
    second = _this_attempt(job, runs)
    assert second.attempt == 2
    record = runs.current(NODE)
    assert (record.status, record.attempt, record.job_id, record.detached) == ("running", 2, "job-1", True)
    kept = runs.archived_record(NODE, 1)
    assert (kept.status, kept.error, kept.cause) == ("failed", "the first attempt failed", "user_error")
    assert runs.attempt_log(NODE, 1) == b"first\n"


def test_an_attempt_that_died_without_a_word_is_kept_as_a_failure_of_the_infrastructure(runs, monkeypatch):
    job = _job(runs)
    runs.write(new_record(job, "AWSBatch", 1, job_id="job-1", detached=True))   # its host died while it ran
    monkeypatch.setenv("AWS_BATCH_JOB_ATTEMPT", "2")
    assert _this_attempt(job, runs).attempt == 2
    kept = runs.archived_record(NODE, 1)
    assert (kept.status, kept.cause) == ("failed", "infrastructure")
    assert "AWS Batch tried it again" in kept.error


def test_a_first_attempt_is_left_as_it_is(runs, monkeypatch):
    job = _job(runs, attempt=3)
    runs.write(new_record(job, "AWSBatch", 3, job_id="job-3", detached=True))
    monkeypatch.delenv("AWS_BATCH_JOB_ATTEMPT", raising=False)
    assert _this_attempt(job, runs) == job
    monkeypatch.setenv("AWS_BATCH_JOB_ATTEMPT", "1")
    assert _this_attempt(job, runs) == job
    assert runs.archived() == {}
