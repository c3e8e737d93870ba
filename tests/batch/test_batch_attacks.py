"""The second hostile review (issue 15), on moto's AWS Batch: jobs get an init, a job without credentials says
what to do about it (before it is submitted, and when it fails), and a waiting run that lost its Batch
endpoint still leaves `dsdt pull` able to say where the run is."""
from __future__ import annotations

import re
import signal
import subprocess
import time

from conftest import DSDT, REPO, TOKEN, assert_user_error, batch_records, run_batch, run_dsdt, wait_until


def test_jobs_run_with_an_init_as_pid_1(aws, home):
    """As Local containers (Docker's --init), so a pipe's own signals work and its orphans are reaped. moto does
    not emulate the init itself: what is checked is the job definition AWS would run."""
    batch, url = aws
    r = run_batch("--wait", *TOKEN, "-", "pid", "slow.Sleep", "--seconds", "0")
    assert r.code == 0, r.err
    job = batch.describe_jobs(jobs=[batch_records(url)["pid"].job_id])["jobs"][0]
    definition = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"][0]
    assert definition["containerProperties"]["linuxParameters"] == {"initProcessEnabled": True}


NO_CREDENTIALS = ("note: the jobs get no credentials of yours and no job role ([run] job_role_arn): they reach the "
                  "remote with the compute environment's instance role, or not at all; give them a role, or run "
                  "with --use-aws-session-token SECONDS")


def test_a_job_without_credentials_says_so_before_and_names_the_fixes_when_it_fails(aws, home):
    """Finding 11: a job with no job role and no session token failed in its container with advice to set AWS
    keys (wrong inside Batch), and `dsdt run` said only 'failed: no reason given'."""
    batch, url = aws
    r = run_batch("-", "nocreds", "slow.Sleep", "--seconds", "0")   # non-blocking, no token, no role
    assert r.code == 0, r.err
    assert NO_CREDENTIALS in r.err.splitlines()
    deadline = time.monotonic() + 90
    while "is not ready yet" in (pulled := run_dsdt("pull", "nocreds")).err and time.monotonic() < deadline:
        time.sleep(2)
    assert_user_error(pulled, "the latest run of nocreds failed (", "this AWS Batch job has no AWS credentials for "
                      "the S3 remote: give its jobs a role that may use the bucket ([run] job_role_arn), or run with "
                      "--use-aws-session-token SECONDS")
    assert "no reason given" not in pulled.err.split("(AWS Batch job")[0]
    waited = run_batch("--wait", "-", "nocreds2", "slow.Sleep", "--seconds", "0")
    assert waited.code == 1
    assert waited.err.strip().splitlines()[-1].startswith(
        "dsdt: error: the run failed: this AWS Batch job has no AWS credentials for the S3 remote")


def test_pull_says_where_a_waiting_run_is_after_it_lost_its_batch_endpoint(aws, home, moto_url, monkeypatch):
    """Finding 9: after a --wait run lost its Batch endpoint, `dsdt pull NAME` said 'no bundle named NAME on the
    remote' instead of the run's state. The graph is submitted whole, with its pending marker, before it is
    followed: pull finds the run, and says what its record knows while Batch cannot be asked."""
    import aws_proxy

    batch, url = aws
    with aws_proxy.aws_proxy(moto_url) as lost:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", lost.url)   # Batch through a proxy of its own
        proc = subprocess.Popen([DSDT, "run", "--wait", *TOKEN, "-", "lost", "slow.Sleep", "--seconds", "60"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_until(lambda: (batch_records(url).get("lost") or _Nobody).job_id is not None, 60, every=0.5)
        except BaseException:
            proc.kill()
            raise
    job_id = batch_records(url)["lost"].job_id   # the endpoint is gone now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "dsdt: interrupted", err
    assert "Traceback" not in err
    pulled = run_dsdt("pull", "lost")
    assert_user_error(pulled, "lost is not ready yet: its run ", f"(slow.Sleep) is running as job {job_id} (AWSBatch "
                      "cannot tell more now: cannot reach AWS Batch")
    monkeypatch.delenv("AWS_ENDPOINT_URL_BATCH")
    assert re.search(rf"job {job_id}", run_dsdt("pull", "lost").err)   # with Batch back: its state, from Batch
    batch.terminate_job(jobId=job_id, reason="the test ends")


class _Nobody:
    job_id = None


def test_run_settings_reach_the_job_definition(aws, home, monkeypatch):
    """[run] vcpus, memory, gpus, attempts and job_role_arn, as documented, are what the job definition asks
    (moto stores them without applying them: what is checked is what AWS would run)."""
    batch, url = aws
    role = "arn:aws:iam::123456789012:role/disdat-jobs"
    for key, value in (("VCPUS", "2"), ("MEMORY", "640"), ("GPUS", "1"), ("RETRIES", "2"), ("JOB_ROLE_ARN", role)):
        monkeypatch.setenv(f"DISDAT_RUN_{key}", value)
    r = run_batch("--wait", *TOKEN, "-", "sized", "slow.Sleep", "--seconds", "0")
    assert r.code == 0, r.err
    job = batch.describe_jobs(jobs=[batch_records(url)["sized"].job_id])["jobs"][0]
    definition = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"][0]
    props = definition["containerProperties"]
    assert sorted((r["type"], r["value"]) for r in props["resourceRequirements"]) == [
        ("GPU", "1"), ("MEMORY", "640"), ("VCPU", "2")]
    assert props["jobRoleArn"] == role and definition["retryStrategy"]["attempts"] == 3
