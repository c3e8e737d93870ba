"""The AWSBatch backend: each node a job on ``[run] aws_batch_queue``.

Its choices:

* **Job definitions** are named ``disdat-<module>-job-definition`` after the pipe's module (as images are),
  and the latest ACTIVE revision is reused when its image, vCPUs, memory, GPUs, job role, retry attempts and
  timeout are the ones wanted; only a difference registers a new revision, never one per run.
* **Credentials:** none of the host's. With ``--use-aws-session-token N`` the job gets temporary STS
  credentials in its environment; without it, it relies on its job role (``[run] job_role_arn``). The S3
  endpoint, when one is configured, goes along, so S3-compatible stores work.
* **Waiting** (``--wait``): the job's state is polled with backoff and jitter (botocore retries throttling),
  every change is reported (SUBMITTED, RUNNABLE, STARTING, RUNNING, ...), and the CloudWatch log of the
  job's *last* attempt is streamed line by line. A failure carries Batch's status reason and the last log
  lines; a job that failed before it started has no log stream, and says so. ``cancel`` terminates the job.
* **Where the data is:** jobs run elsewhere, so a ``file://`` remote is refused.
* **Finding a node's jobs:** a job is named ``disdat-<node id, 12>-<module>`` and tagged with its node and
  remote, so ``orphans`` finds it by name prefix (ListJobs) and keeps it only if its tags agree: even a job
  whose client was killed between submitting it and recording its id is found, and is then adopted
  (non-blocking runs) or terminated (a dead ``--wait`` client's) instead of run a second time.
* **Images** are named by content, so that a job definition changes exactly when the image does: by their
  digest in ``[dockerize] registry`` (``registry/repository@sha256:...``, after ``dsdt dockerize --push``);
  without a registry, by their local id, which only a Batch emulation on this machine's engine can run.
"""
from __future__ import annotations

import random
import re
import time
from typing import Any, Dict, List, Optional
from urllib.parse import urlparse

from .. import config
from ..errors import DisdatError
from .backend import LOG_TAIL, Backend, JobResult, OnLine, OnStatus, RunRequest
from .batch_client import BatchClient, check_queue
from .registry import registry

FINAL = ("SUCCEEDED", "FAILED")
LIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
POLL_FIRST, POLL_MAX = 1.0, 10.0
# how AWS Batch (and moto) say that an attempt ran past the job definition's timeout
TIMEOUT_REASONS = ("Job attempt duration exceeded timeout", "exceeded the configured attemptDurationSeconds")


def definition_name(family: str) -> str:
    """``a.b`` -> ``disdat-a-b-job-definition`` (Disdat's name for the module's job definition)."""
    return f"disdat-{family.replace('.', '-').lower()}-job-definition"


def job_name(family: str, node_id: str) -> str:
    """``disdat-<node id, 12>-<module>``: letters, digits, hyphens and underscores, at most 128. The node comes
    first so that a job can be found by its node alone (ListJobs matches name prefixes)."""
    return job_name_prefix(node_id) + re.sub(r"[^A-Za-z0-9_-]", "-", family)[:100]


def job_name_prefix(node_id: str) -> str:
    """What the names of a node's jobs begin with, whatever their module."""
    return f"disdat-{node_id[:12]}-"


class AWSBatch(Backend):
    name = "AWSBatch"
    job_word = "job"
    long_lived_keys_allowed = False
    chains_jobs = True
    adopts_jobs = True

    def __init__(self, client: Optional[BatchClient] = None) -> None:
        self.client = client or BatchClient()
        self._definitions: Dict[str, str] = {}   # definition name -> arn used this process

    def tracking_url(self, job_id: str) -> str:
        region = self.client.region
        return f"https://{region}.console.aws.amazon.com/batch/home?region={region}#jobs/detail/{job_id}"

    def check(self, remote_url: str) -> None:
        if urlparse(remote_url).scheme != "s3":
            raise DisdatError(f"AWS Batch jobs run on other machines and cannot reach the remote {remote_url}: "
                              f"bind the context to an s3:// remote (`dsdt remote REMOTE_CONTEXT s3://bucket/prefix`)")
        check_queue(self.client, config.get("run", "aws_batch_queue"))

    def image_reference(self, image) -> str:
        host = registry()
        if host is None:
            return image.id
        repository = image.name.rpartition(":")[0]
        pushed = [d for d in image.digests if d.startswith(repository + "@")]
        if not pushed:
            raise DisdatError(f"image {image.name} is not in the registry {host}: run `dsdt dockerize --push` "
                              f"(AWS Batch pulls it from there)")
        return pushed[0]

    # -- job definitions -------------------------------------------------------------------------------
    def _wanted(self, request: RunRequest) -> Dict[str, Any]:
        container: Dict[str, Any] = {"image": request.image, "vcpus": request.resources.vcpus,
                                     "memory": request.resources.memory}
        if request.resources.gpus:
            container["resourceRequirements"] = [{"type": "GPU", "value": str(request.resources.gpus)}]
        role = config.get("run", "job_role_arn")
        if role:
            container["jobRoleArn"] = role
        return container

    @staticmethod
    def _same(existing: dict, container: Dict[str, Any], attempts: int, timeout: Optional[int]) -> bool:
        props = existing.get("containerProperties", {})
        gpus = [r for r in props.get("resourceRequirements", []) if r.get("type") == "GPU"]
        return (props.get("image") == container["image"] and props.get("vcpus") == container["vcpus"]
                and props.get("memory") == container["memory"]
                and gpus == container.get("resourceRequirements", [])
                and props.get("jobRoleArn") == container.get("jobRoleArn")
                and (existing.get("retryStrategy") or {}).get("attempts", 1) == attempts
                and (existing.get("timeout") or {}).get("attemptDurationSeconds") == timeout)

    def definition(self, request: RunRequest) -> str:
        """The arn of the job definition for this request: the newest ACTIVE revision that matches it (two users
        with different settings alternate between two revisions, not one more per run), else a new one."""
        name = definition_name(request.family)
        container = self._wanted(request)
        attempts, timeout = config.get("run", "attempts"), request.timeout
        key = f"{name} {sorted(container.items())} {attempts} {timeout}"
        if key not in self._definitions:
            same = [d for d in self.client.active_definitions(name) if self._same(d, container, attempts, timeout)]
            self._definitions[key] = (max(same, key=lambda d: d["revision"])["jobDefinitionArn"] if same else
                                      self.client.register_definition(name, container, attempts,
                                                                      timeout)["jobDefinitionArn"])
        return self._definitions[key]

    # -- jobs ----------------------------------------------------------------------------------------------
    def submit(self, request: RunRequest) -> str:
        queue = config.get("run", "aws_batch_queue")
        node_id = request.labels.get("disdat.node_id", "")
        return self.client.submit(job_name(request.family, node_id), queue, self.definition(request), request.args,
                                  {**request.environment, **request.secrets}, request.depends_on,
                                  dict(request.labels))

    def status(self, job_id: str) -> Optional[str]:
        job = self.client.describe([job_id]).get(job_id)
        return job.get("status") if job else None

    def is_live(self, job_id: str) -> bool:
        return self.status(job_id) in LIVE

    def orphans(self, node_id: str, remote: str, hint: Optional[str] = None) -> List[str]:
        """The node's unfinished jobs on the queue, the hinted one first: found by their name, so that a job
        whose client died between submitting it and recording its id is found too, and kept only if their
        tags name this node and this remote."""
        queue = config.get("run", "aws_batch_queue")
        named = self.client.jobs_named(queue, job_name_prefix(node_id)) if queue else []
        ids = list(dict.fromkeys(([hint] if hint else []) + named))
        jobs = self.client.describe(ids)

        def ours(job: dict) -> bool:
            tags = job.get("tags") or {}
            return (job.get("status") in LIVE and tags.get("disdat.node_id") == node_id
                    and tags.get("disdat.remote") == remote)
        return [job_id for job_id in ids if job_id in jobs and ours(jobs[job_id])]

    def finished(self, job_id: str) -> Optional[JobResult]:
        job = self.client.describe([job_id]).get(job_id)
        if job is None or job.get("status") not in FINAL:
            return None
        log = _LogFollower(self.client, lambda line: None)
        log.follow(job)
        return self._result(job, log)

    def wait(self, job_id: str, on_line: OnLine, on_status: OnStatus, timeout: Optional[int] = None) -> JobResult:
        log = _LogFollower(self.client, on_line)
        state, delay = "", POLL_FIRST
        while True:
            job = self.client.job(job_id)
            if job["status"] != state:
                state = job["status"]
                on_status(state)
            log.follow(job)
            if state in FINAL:
                time.sleep(0.5)  # the last lines can reach CloudWatch just after the state changes
                log.follow(self.client.job(job_id))
                return self._result(job, log)
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 1.5, POLL_MAX)

    def _result(self, job: dict, log: "_LogFollower") -> JobResult:
        attempt = (job.get("attempts") or [{}])[-1]
        exit_code = (attempt.get("container") or job.get("container") or {}).get("exitCode")
        if job["status"] == "SUCCEEDED":
            return JobResult("succeeded", exit_code=exit_code, log_tail=log.tail)
        reason = (job.get("statusReason") or attempt.get("statusReason")
                  or (attempt.get("container") or {}).get("reason") or "no reason given")
        if log.stream is None:
            reason += "; the job has no log stream: it failed before it started"
        status = "timed_out" if any(phrase in reason for phrase in TIMEOUT_REASONS) else "failed"
        return JobResult(status, f"AWS Batch job {job['jobId']} failed: {reason}", exit_code, log.tail)

    def cancel(self, job_id: str, reason: str) -> None:
        self.client.terminate(job_id, f"disdat-luigi: {reason}")

    def logs(self, job_id: str) -> List[str]:
        lines: List[str] = []
        _LogFollower(self.client, lines.append).follow(self.client.job(job_id))
        return lines


class _LogFollower:
    """Reads the CloudWatch log stream of a job's latest attempt, from where it stopped last time; a new
    attempt (a retry) starts a new stream, which is followed from its start."""

    def __init__(self, client: BatchClient, on_line: OnLine):
        self.client, self.on_line = client, on_line
        self.stream: Optional[str] = None
        self.token: Optional[str] = None
        self.tail: List[str] = []

    def follow(self, job: dict) -> None:
        attempt = (job.get("attempts") or [{}])[-1]
        stream = (attempt.get("container") or {}).get("logStreamName") or (job.get("container") or {}).get(
            "logStreamName")
        if not stream:
            return
        if stream != self.stream:
            self.stream, self.token = stream, None
        while True:
            lines, token = self.client.log_events(stream, self.token)
            for line in lines:
                self.tail = (self.tail + [line])[-LOG_TAIL:]
                self.on_line(line)
            if not lines or token == self.token:
                self.token = token
                return
            self.token = token
