"""A pipe's own resources, retries and timeout on AWS Batch (moto, behind the limits proxy): each pipe's job
definition asks what that pipe needs, a plain pipe of the same graph keeps the [run] defaults, and none of it
is part of a node's id (moto stores what a definition says without applying it: what is checked is what AWS
would run)."""
from __future__ import annotations

import re

from conftest import TOKEN, assert_user_error, batch_records, run_batch

HOST = {"onStatusReason": "Host EC2*", "action": "RETRY"}


def _definition(batch, job_id: str) -> dict:
    job = batch.describe_jobs(jobs=[job_id])["jobs"][0]
    return batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"][0]


def _retries(definition: dict) -> dict:
    """A definition's retry strategy, its actions in capitals (AWS takes them in any case; moto keeps lower)."""
    strategy = definition["retryStrategy"]
    return {**strategy, "evaluateOnExit": [{**rule, "action": rule["action"].upper()}
                                           for rule in strategy.get("evaluateOnExit", [])]}


def _requirements(definition: dict) -> dict:
    return {r["type"]: r["value"] for r in definition["containerProperties"]["resourceRequirements"]}


def test_each_pipes_job_asks_what_that_pipe_needs(aws, home):
    batch, url = aws
    r = run_batch("--wait", *TOKEN, "-", "pipeline", "sized.Pipeline")
    assert r.code == 0, r.err
    assert home.context().latest("pipeline").data() == ["trained", "plain"]
    records = batch_records(url)
    trainer = _definition(batch, records["pipeline-trained"].job_id)
    assert _requirements(trainer) == {"VCPU": "2", "MEMORY": "512", "GPU": "1"}
    assert _retries(trainer) == {"attempts": 3, "evaluateOnExit": [
        HOST, {"onStatusReason": "*", "action": "RETRY"}]}
    assert trainer["timeout"] == {"attemptDurationSeconds": 900}
    for plain in (_definition(batch, records["pipeline-plain"].job_id), _definition(batch, records["pipeline"].job_id)):
        assert _requirements(plain) == {"VCPU": "1", "MEMORY": "2048"}   # the [run] defaults
        assert _retries(plain) == {"attempts": 2, "evaluateOnExit": [
            HOST, {"onStatusReason": "*", "action": "EXIT"}]}   # one more attempt for a host's failure only
        assert "timeout" not in plain or not plain["timeout"]


def test_settings_are_not_part_of_a_nodes_id(aws, home, monkeypatch):
    """More memory for every pipe, and the same graph again: every node is done already, nothing submitted."""
    batch, url = aws
    first = run_batch("--wait", *TOKEN, "-", "pipeline", "sized.Pipeline")
    assert first.code == 0, first.err
    monkeypatch.setenv("DISDAT_RUN_MEMORY", "4096")
    again = run_batch(*TOKEN, "-", "pipeline", "sized.Pipeline")
    assert again.code == 0, again.err
    assert again.out.strip().splitlines()[-1] == "every node is done already: dsdt pull pipeline"
    assert len(re.findall(r"\(succeeded\)", again.out)) == 3


def test_a_timeout_under_a_minute_is_refused_before_anything_is_submitted(aws, home, monkeypatch):
    batch, url = aws
    monkeypatch.setenv("DISDAT_RUN_TIMEOUT", "30")
    assert_user_error(run_batch(*TOKEN, "-", "quick", "slow.Sleep", "--seconds", "0"),
                      "slow.Sleep has a timeout of 30 s (@timeout or [run] timeout): AWS Batch stops a job after 60 s "
                      "at the soonest; give it 60 or more")
    assert batch_records(url) == {}


def test_job_definitions_are_reused_while_a_pipe_asks_the_same(aws, home):
    """Two runs of the same pipes with the same settings: no new revision (moto keeps a retry strategy's actions
    in lower case: a comparison that minded the case would register one revision a run)."""
    batch, url = aws
    assert run_batch("--wait", *TOKEN, "-", "p1", "sized.Pipeline").code == 0
    revisions = lambda: {d["revision"] for d in batch.describe_job_definitions(  # noqa: E731
        jobDefinitionName="disdat-sized-job-definition", status="ACTIVE")["jobDefinitions"]}
    before = revisions()
    assert run_batch("--wait", *TOKEN, "--force", "-", "p2", "sized.Pipeline").code == 0
    assert revisions() == before
