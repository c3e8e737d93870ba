"""The AWSBatch backend: each node a job on ``[run] aws_batch_queue``.

Its choices:

* **Job definitions** are named ``disdat-<module>-job-definition`` after the pipe's module (as images are),
  and the latest ACTIVE revision is reused when its image, vCPUs, memory, GPUs, job role, retry attempts and
  timeout are the ones wanted; only a difference registers a new revision, never one per run.
* **An init** as PID 1 in every job (``linuxParameters.initProcessEnabled``), as Local runs containers:
  a pipe's own signals work and abandoned processes are reaped.
* **Credentials:** none of the host's. With ``--use-aws-session-token N`` the job gets temporary STS
  credentials in its environment; without it, it relies on its job role (``[run] job_role_arn``). The S3
  endpoint, when one is configured, goes along, so S3-compatible stores work.
* **Fan-in within Batch's limit.** A job may depend on at most 20 jobs. A node with more upstream jobs
  depends on *barrier jobs* for the rest: each waits for up to 20 jobs and does nothing else (the node's image
  run with ``--barrier``, which exits at once, under ``disdat-<module>-barrier-job-definition``: 1 vCPU,
  256 MiB, no GPU). A barrier's start latency is paid only when its jobs are the last to finish, so the node
  keeps as many direct dependencies as fit, barriers gather the earliest-submitted jobs, and there are as few
  of them as the limit allows (a fan-in of 24: 19 direct and one barrier of 5; of 1,000: 52). A failed
  upstream fails its barrier, and so the node, as a direct dependency would. Barriers are named
  ``disdat-barrier-<node id, 12>-...`` and tagged ``disdat.barrier``: they are never taken for a node's job.
  A client that waits for its run needs none: it submits a wide fan-in once at most 20 of its upstream jobs
  have not succeeded (:meth:`AWSBatch.unfinished_when_few`, runs/submit.py).
  (Array jobs would need fewer calls for a fan of one pipe class, but every node is its own pipe instance
  with its own parameters, record and retries, and a child learns its index only from the environment.)
* **Waiting** (``--wait``): one :class:`~.batch_monitor.BatchMonitor` per process follows every job (100 a
  DescribeJobs call), each state change is reported (SUBMITTED, RUNNABLE, STARTING, RUNNING, ...), and the
  CloudWatch log of a job's *last* attempt is read only for the jobs that need it: a job whose lines are
  followed, and a failed job (its last lines). ``cancel`` terminates the job.
* **Where the data is:** jobs run elsewhere, so a ``file://`` remote is refused.
* **Finding a node's jobs:** a job is named ``disdat-<node id, 12>-<module>`` and tagged with its node and
  remote, so ``jobs_of`` finds it by name prefix (ListJobs) and keeps it only if its tags agree: even a job
  whose client was killed between submitting it and recording its id is found, and adopted instead of run a
  second time.
* **Images** are named by content, so that a job definition changes exactly when the image does: by their
  digest in ``[dockerize] registry`` (``registry/repository@sha256:...``, after ``dsdt dockerize --push``);
  without a registry, by their local id, which only a Batch emulation on this machine's engine can run.
"""
from __future__ import annotations

import collections
import contextlib
import json
import re
import threading
import time
from typing import Any, Deque, Dict, List, Optional
from urllib.parse import urlparse

from .. import config
from ..errors import DisdatError
from .backend import (INFRASTRUCTURE, INTERRUPTED, LOG_TAIL, OUT_OF_MEMORY, TIMED_OUT, USER_ERROR, Backend, Job,
                      JobResult, OnLines, OnStatus, Resources, RunRequest)
from .batch_client import MAX_DEPENDS_ON, BatchClient, check_queue
from .batch_monitor import BatchMonitor
from .registry import registry

FINAL = ("SUCCEEDED", "FAILED")
LIVE = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
BARRIER_TAG = "disdat.barrier"
BARRIER_RESOURCES = Resources(vcpus=1, memory=256, gpus=0)
BARRIER_TIMEOUT = 600
MIN_TIMEOUT = 60            # AWS Batch's shortest attemptDurationSeconds (retries: [run] allows 9, Batch 10 attempts)
MAX_LOG = 16 << 20
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


def retry_strategy(attempts: int) -> Dict[str, Any]:
    """A job's retry strategy for a pipe that may run ``attempts`` times (its retries + 1). A failure of the host
    (an instance terminated, a Spot instance reclaimed: "Host EC2 ... terminated") is always tried again, so a
    pipe without retries gets one more attempt for that alone; any other failure is tried again only while the
    pipe has retries left. (Batch never retries an attempt that ran past its timeout.)"""
    host = {"onStatusReason": "Host EC2*", "action": "RETRY"}
    if attempts == 1:
        return {"attempts": 2, "evaluateOnExit": [host, {"onStatusReason": "*", "action": "EXIT"}]}
    return {"attempts": attempts, "evaluateOnExit": [host, {"onStatusReason": "*", "action": "RETRY"}]}


def barrier_layers(upstream: List[str], make_barrier) -> List[str]:
    """The at most MAX_DEPENDS_ON jobs a node depends on for ``upstream`` (in submission order): the upstream jobs
    themselves where they fit, the rest through barriers made by ``make_barrier(level, index, jobs)``.

    A barrier's own start is paid only when the jobs it gathers are the last to finish, so the node keeps as
    many direct dependencies as it can, and barriers gather the earliest-submitted jobs (the likeliest to be
    done first), 20 at a time, and then earlier barriers, until the node's count fits: as few barriers as a
    tree of jobs that wait for at most 20 each allows (each barrier takes at most 19 off the count)."""
    items = [(job, -1) for job in upstream]   # (job id, its barrier level; -1: an upstream job)
    made = 0
    while len(items) > MAX_DEPENDS_ON:
        take = min(MAX_DEPENDS_ON, len(items) - MAX_DEPENDS_ON + 1)
        group, items = items[:take], items[take:]
        level = max(lvl for _, lvl in group) + 1
        items.append((make_barrier(level, made, [job for job, _ in group]), level))
        made += 1
    return [job for job, _ in items]


class AWSBatch(Backend):
    name = "AWSBatch"
    job_word = "job"
    long_lived_keys_allowed = False
    chains_jobs = True

    def __init__(self, client: Optional[BatchClient] = None) -> None:
        self.client = client or BatchClient()
        self.monitor = BatchMonitor(self.client)
        self._definitions: Dict[str, str] = {}   # what a definition is for -> arn used this process
        self._lock = threading.Lock()

    def console_url(self, job_id: str) -> str:
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
    @staticmethod
    def _wanted(image: str, resources: Resources, attempts: int, timeout: Optional[int]) -> Dict[str, Any]:
        """What a job definition says, apart from its name: the container (image, resources, init, role), the
        retry strategy (see :func:`retry_strategy`) and the timeout of an attempt."""
        requirements = [{"type": "VCPU", "value": str(resources.vcpus)},
                        {"type": "MEMORY", "value": str(resources.memory)}]
        if resources.gpus:
            requirements.append({"type": "GPU", "value": str(resources.gpus)})
        container: Dict[str, Any] = {"image": image, "resourceRequirements": requirements,
                                     "linuxParameters": {"initProcessEnabled": True}}  # see the docstring
        role = config.get("run", "job_role_arn")
        if role:
            container["jobRoleArn"] = role
        wanted: Dict[str, Any] = {"containerProperties": container, "retryStrategy": retry_strategy(attempts)}
        if timeout:
            wanted["timeout"] = {"attemptDurationSeconds": timeout}
        return wanted

    @staticmethod
    def _same(existing: dict, wanted: Dict[str, Any]) -> bool:
        """An existing revision says what is wanted (resource requirements in any order)."""
        def normal(definition: dict) -> tuple:
            props = dict(definition.get("containerProperties") or {})
            requirements = sorted((r.get("type"), str(r.get("value"))) for r in props.pop("resourceRequirements", []))
            kept = {k: props.get(k) for k in ("image", "jobRoleArn", "linuxParameters")}
            retry = dict(definition.get("retryStrategy") or {})
            retry["evaluateOnExit"] = [{**rule, "action": str(rule.get("action", "")).upper()}  # any case, says AWS
                                       for rule in retry.get("evaluateOnExit", [])]
            return (requirements, kept, retry, definition.get("timeout") or None)
        return normal(existing) == normal(wanted)

    def _definition(self, name: str, wanted: Dict[str, Any]) -> str:
        """The arn of the newest ACTIVE revision of ``name`` that says what is wanted (pipes or users with
        different settings alternate between revisions, not one more per run), else of a new one; once per
        process."""
        key = f"{name} {json.dumps(wanted, sort_keys=True)}"
        with self._lock:
            if key not in self._definitions:
                same = [d for d in self.client.active_definitions(name) if self._same(d, wanted)]
                self._definitions[key] = (max(same, key=lambda d: d["revision"])["jobDefinitionArn"] if same else
                                          self.client.register_definition(name, wanted)["jobDefinitionArn"])
            return self._definitions[key]

    def definition(self, request: RunRequest) -> str:
        return self._definition(definition_name(request.family), self._wanted(
            request.image, request.resources, request.attempts, request.timeout))

    def check_settings(self, pipe_cls: str, settings) -> None:
        if settings.timeout is not None and settings.timeout < MIN_TIMEOUT:
            raise DisdatError(f"{pipe_cls} has a timeout of {settings.timeout} s (@timeout or [run] timeout): AWS "
                              f"Batch stops a job after {MIN_TIMEOUT} s at the soonest; give it {MIN_TIMEOUT} or more")

    # -- jobs ----------------------------------------------------------------------------------------------
    def submit(self, request: RunRequest) -> "BatchJob":
        queue = config.get("run", "aws_batch_queue")
        node_id = request.labels.get("disdat.node_id", "")
        depends_on = barrier_layers(request.depends_on,
                                    lambda level, n, jobs: self._barrier(request, queue, level, n, jobs))
        job_id = self.client.submit(job_name(request.family, node_id), queue, self.definition(request), request.args,
                                    {**request.environment, **request.secrets}, depends_on, dict(request.labels))
        return BatchJob(self, job_id)

    def _barrier(self, request: RunRequest, queue: str, level: int, index: int, jobs: List[str]) -> str:
        """A job that waits for ``jobs`` and does nothing (see the module docstring)."""
        definition = self._definition(definition_name(request.family + ".barrier"),
                                      self._wanted(request.image, BARRIER_RESOURCES, 1, BARRIER_TIMEOUT))
        node = request.labels.get("disdat.node_id", "")[:12]
        return self.client.submit(f"disdat-barrier-{node}-{level}-{index}", queue, definition, ["--barrier"], {},
                                  jobs, {**request.labels, BARRIER_TAG: f"level {level}"})

    def unfinished_when_few(self, job_ids: List[str], at_most: int, stopping: threading.Event) -> List[str]:
        """Follows the jobs through the monitor's rounds, as waiting nodes do (no call of its own)."""
        monitor = self.monitor
        with contextlib.ExitStack() as following:
            for job_id in job_ids:
                following.enter_context(monitor.following(job_id))
            seen, rounds = 0, 0
            while True:
                _, seen = monitor.next_round(job_ids[0], seen)
                rounds += 1
                if stopping.is_set() or monitor.released(job_ids[0]):
                    raise KeyboardInterrupt("the run stopped")
                states = {job_id: (monitor.latest(job_id) or {}).get("status") for job_id in job_ids}
                failed = [job_id for job_id, state in states.items() if state == "FAILED"]
                if failed:
                    raise DisdatError(f"its upstream job {failed[0]} failed")
                unknown = [job_id for job_id, state in states.items() if state is None]
                if unknown and rounds > 1:   # every round after the first asked about all of them
                    raise DisdatError(f"AWS Batch does not know its upstream job {unknown[0]}")
                unfinished = [job_id for job_id, state in states.items() if state != "SUCCEEDED"]
                if len(unfinished) <= at_most:
                    return unfinished

    def job(self, job_id: str) -> "BatchJob":
        return BatchJob(self, job_id)

    def jobs_of(self, node_id: str, remote: str, hint: Optional[str] = None) -> List["BatchJob"]:
        """The node's unfinished jobs on the queue, the hinted one first: found by their name, so that a job
        whose client died between submitting it and recording its id is found too, and kept only if their
        tags name this node and this remote (and no barrier)."""
        queue = config.get("run", "aws_batch_queue")
        named = self.client.jobs_named(queue, job_name_prefix(node_id)) if queue else []
        ids = list(dict.fromkeys(([hint] if hint else []) + named))
        jobs = self.client.describe(ids) if ids else {}
        return [BatchJob(self, job_id) for job_id in ids if _ours(jobs.get(job_id), node_id, remote)]

    def live_jobs(self, hints: Dict[str, str], remote: str) -> Dict[str, "BatchJob"]:
        jobs = self.client.describe(sorted(set(hints.values())))
        return {node_id: BatchJob(self, job_id) for node_id, job_id in hints.items()
                if _ours(jobs.get(job_id), node_id, remote)}

    def describe(self, job_id: str) -> Optional[dict]:
        """The job's description: the monitor's latest when it follows the job, else Batch's own."""
        return self.monitor.latest(job_id) or self.client.describe([job_id]).get(job_id)

    def result_of(self, job: dict, log: Optional["_LogFollower"] = None) -> JobResult:
        """How a finished job ended: its reason, and its last log lines when it failed."""
        attempt = (job.get("attempts") or [{}])[-1]
        exit_code = (attempt.get("container") or job.get("container") or {}).get("exitCode")
        stream = _stream_of(job)
        if job["status"] == "SUCCEEDED":
            return JobResult("succeeded", exit_code=exit_code, log_tail=list(log.tail) if log else [])
        tail = list(log.tail) if log and log.tail else (self.client.log_tail(stream, LOG_TAIL) if stream else [])
        reason = (job.get("statusReason") or attempt.get("statusReason")
                  or (attempt.get("container") or {}).get("reason") or "no reason given")
        if stream is None:
            reason += "; the job has no log stream: it failed before it started"
        status = "timed_out" if any(phrase in reason for phrase in TIMEOUT_REASONS) else "failed"
        return JobResult(status, f"AWS Batch job {job['jobId']} failed: {reason}", exit_code, tail,
                         _cause(status, reason, exit_code))


class BatchJob(Job):
    word = "job"

    def __init__(self, backend: AWSBatch, job_id: str):
        super().__init__(job_id)
        self.backend = backend

    @property
    def tracking_url(self) -> Optional[str]:
        return self.backend.console_url(self.id)

    def status(self) -> Optional[str]:
        job = self.backend.describe(self.id)
        return job.get("status") if job else None

    def is_live(self) -> bool:
        return self.status() in LIVE

    def result(self) -> Optional[JobResult]:
        job = self.backend.describe(self.id)
        if job is None or job.get("status") not in FINAL:
            return None
        return self.backend.result_of(job)

    def wait(self, on_lines: Optional[OnLines], on_status: OnStatus, timeout: Optional[int] = None) -> JobResult:
        """Follow the job through the monitor's rounds (its timeout is the job definition's, Batch's own)."""
        monitor = self.backend.monitor
        log = _LogFollower(self.backend.client, on_lines) if on_lines else None
        state, seen = "", 0
        with monitor.following(self.id):
            while True:
                job, seen = monitor.next_round(self.id, seen)
                if monitor.released(self.id):
                    return JobResult("failed", f"AWS Batch job {self.id} was stopped by its client")
                if job is None:
                    return JobResult("failed", f"AWS Batch has no job {self.id}")
                if job["status"] != state:
                    state = job["status"]
                    on_status(state)
                if log is not None:
                    log.follow(job)
                if state in FINAL:
                    if log is not None:
                        time.sleep(0.5)  # the last lines can reach CloudWatch just after the state changes
                        log.follow(job)
                    return self.backend.result_of(job, log)

    def logs(self) -> List[str]:
        job = self.backend.describe(self.id)
        if job is None:
            return []
        follower = _LogFollower(self.backend.client, lambda lines: None, keep=MAX_LOG)
        follower.follow(job)
        return list(follower.kept)

    def cancel(self, reason: str) -> None:
        """Terminate the job; whoever waits for it stops waiting at once (even when Batch cannot be reached to
        terminate it: then the error says so)."""
        try:
            self.backend.client.terminate(self.id, f"disdat-luigi: {reason}")
        finally:
            self.backend.monitor.release(self.id)


def _cause(status: str, reason: str, exit_code: Optional[int]) -> str:
    """What kind of failure Batch's reason and the container's exit code say it was."""
    if status == "timed_out":
        return TIMED_OUT
    if "OutOfMemoryError" in reason:
        return OUT_OF_MEMORY
    if reason.startswith("disdat-luigi: interrupted"):
        return INTERRUPTED
    return USER_ERROR if exit_code in (1, 2) else INFRASTRUCTURE


def _ours(job: Optional[dict], node_id: str, remote: str) -> bool:
    """A live job of this node on this remote, by its tags (a barrier is no node's job)."""
    tags = (job or {}).get("tags") or {}
    return ((job or {}).get("status") in LIVE and tags.get("disdat.node_id") == node_id
            and tags.get("disdat.remote") == remote and BARRIER_TAG not in tags)


def _stream_of(job: dict) -> Optional[str]:
    attempt = (job.get("attempts") or [{}])[-1]
    return (attempt.get("container") or {}).get("logStreamName") or (job.get("container") or {}).get(
        "logStreamName")


class _LogFollower:
    """Reads the CloudWatch log stream of a job's latest attempt, from where it stopped last time; a new
    attempt (a retry) starts a new stream, which is followed from its start. With ``keep``, it also keeps the
    last ``keep`` bytes of what it read."""

    def __init__(self, client: BatchClient, on_lines: OnLines, keep: int = 0):
        self.client, self.on_lines, self.keep = client, on_lines, keep
        self.stream: Optional[str] = None
        self.token: Optional[str] = None
        self.tail: Deque[str] = collections.deque(maxlen=LOG_TAIL)
        self.kept: Deque[str] = collections.deque()
        self._kept_bytes = 0

    def follow(self, job: dict) -> None:
        stream = _stream_of(job)
        if not stream:
            return
        if stream != self.stream:
            self.stream, self.token = stream, None
        while True:
            lines, token = self.client.log_events(stream, self.token)
            self.tail.extend(lines)
            if self.keep:
                for line in lines:
                    self._keep(line)
            elif lines:
                self.on_lines(lines)
            if not lines or token == self.token:
                self.token = token
                return
            self.token = token

    def _keep(self, line: str) -> None:
        self.kept.append(line)
        self._kept_bytes += len(line) + 1
        while self._kept_bytes > self.keep and len(self.kept) > 1:
            self._kept_bytes -= len(self.kept.popleft()) + 1
