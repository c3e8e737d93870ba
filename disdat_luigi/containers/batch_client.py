"""A thin wrapper over the AWS Batch and CloudWatch Logs clients: what the AWSBatch backend calls, nothing more.

One botocore session and one client per service (created on first use, shared by every thread), the
standard retry mode (backoff with jitter on throttling and 5xx) as the one place retries happen, and
botocore's failures turned into one line. boto's own endpoint settings apply (``AWS_ENDPOINT_URL``,
``AWS_ENDPOINT_URL_BATCH``, ``AWS_ENDPOINT_URL_LOGS``, ...), so an emulator or a VPC endpoint works as for
every AWS tool; the region is ``[s3] region_name`` or boto's.

AWS's limits are kept here, where the calls are made, because an emulator enforces none of them
(https://docs.aws.amazon.com/batch/latest/userguide/service_limits.html):

* every Batch call is paced to ``[run] batch_calls_per_second`` (default 40): the account has 50 a second
  for SubmitJob and the Batch API, shared with everything else it runs;
* a job depends on at most :data:`MAX_DEPENDS_ON` (20) jobs: more is a bug of the caller (the backend
  builds barrier jobs for wider fan-ins), refused before anything is sent;
* DescribeJobs takes at most 100 ids a call; a SubmitJob request at most 30 KiB;
* CloudWatch Logs' GetLogEvents is paced to :data:`LOG_CALLS_PER_SECOND` (its quota is 10 a second per
  account and region; https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/cloudwatch_limits_cwl.html).
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .. import config
from ..errors import DisdatError, NotFound, RemoteError

LOG_GROUP = "/aws/batch/job"
MAX_DEPENDS_ON = 20             # job dependencies a job may have (Batch service quota)
DESCRIBE_MAX = 100              # job ids per DescribeJobs call
SUBMIT_MAX_BYTES = 30 * 1024    # a SubmitJob request
LOG_CALLS_PER_SECOND = 5        # half of GetLogEvents' 10 TPS: other readers of the account's logs share it


@contextlib.contextmanager
def aws_errors(service: str) -> Iterator[None]:
    """botocore's exceptions as one line that says what to do."""
    from botocore import exceptions as bx

    try:
        yield
    except (bx.NoCredentialsError, bx.PartialCredentialsError):
        raise RemoteError(f"no AWS credentials for {service}: set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                          f"AWS_SECRET_ACCESS_KEY") from None
    except bx.ClientError as exc:
        error = exc.response.get("Error", {})
        raise RemoteError(f"{service} refused {exc.operation_name}: {error.get('Code', '')} "
                          f"{error.get('Message', '')}".rstrip()) from None
    except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError) as exc:
        raise RemoteError(f"cannot reach {service} ({type(exc).__name__}): check the region and AWS_ENDPOINT_URL"
                          ) from None
    except bx.BotoCoreError as exc:
        raise RemoteError(f"{service} request failed: {exc}") from None


class Pacer:
    """``rate`` calls a second, spread evenly, across every thread that shares it. A slot a caller came too
    late for is made up by the next callers, up to ``CATCH_UP`` of them at once: so that the threads' own delays
    do not lower the rate, while no second ever sees more than ``rate + CATCH_UP`` calls."""

    CATCH_UP = 4

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now - self.CATCH_UP * self.interval, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


class BatchClient:
    def __init__(self) -> None:
        self._clients: Dict[str, Any] = {}
        self._lock = threading.Lock()
        self._batch_pace = Pacer(config.get("run", "batch_calls_per_second"))
        self._logs_pace = Pacer(LOG_CALLS_PER_SECOND)
        self.calls: Dict[str, int] = {}     # API calls made, by operation (for the run's summary and tests)
        self._count_lock = threading.Lock()

    def _client(self, service: str):
        with self._lock:
            if service not in self._clients:
                from botocore.config import Config

                from ..remotes.s3 import make_session
                from .request import region

                session = make_session()
                self._clients[service] = session.create_client(
                    service, region_name=region(session),
                    # four attempts: a few seconds of backoff, not a minute, when Batch cannot be reached (our
                    # own pace keeps throttling away; the monitor backs off between its rounds itself)
                    config=Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=10,
                                  read_timeout=60, max_pool_connections=20))
            return self._clients[service]

    def _batch(self, operation: str, **kwargs) -> dict:
        """One Batch API call, paced (see the module docstring) and counted."""
        self._batch_pace.wait()
        self._count(operation)
        with aws_errors("AWS Batch"):
            return getattr(self._client("batch"), operation)(**kwargs)

    def _pages(self, operation: str, key: str, **kwargs) -> Iterator[dict]:
        """Every item of a paginated Batch call, each page paced like any call."""
        token = None
        while True:
            page = self._batch(operation, **kwargs, **({"nextToken": token} if token else {}))
            yield from page.get(key, ())
            token = page.get("nextToken")
            if not token:
                return

    def _count(self, operation: str) -> None:
        with self._count_lock:
            self.calls[operation] = self.calls.get(operation, 0) + 1

    @property
    def region(self) -> str:
        return self._client("batch").meta.region_name

    # -- queues ----------------------------------------------------------------------------------------
    def job_queue(self, name: str) -> Optional[dict]:
        queues = self._batch("describe_job_queues", jobQueues=[name])["jobQueues"]
        return queues[0] if queues else None

    # -- job definitions ---------------------------------------------------------------------------------
    def active_definitions(self, name: str) -> List[dict]:
        return list(self._pages("describe_job_definitions", "jobDefinitions", jobDefinitionName=name,
                                status="ACTIVE"))

    def register_definition(self, name: str, definition: Dict[str, Any]) -> dict:
        """A new revision of the container job definition ``name`` (containerProperties, retryStrategy, ...)."""
        return self._batch("register_job_definition", jobDefinitionName=name, type="container", **definition)

    # -- jobs ----------------------------------------------------------------------------------------------
    def submit(self, name: str, queue: str, definition: str, command: List[str], environment: Dict[str, str],
               depends_on: List[str], tags: Dict[str, str], resources: Optional[Dict[str, str]] = None) -> str:
        if len(depends_on) > MAX_DEPENDS_ON:
            raise DisdatError(f"job {name} would depend on {len(depends_on)} jobs; AWS Batch allows "
                              f"{MAX_DEPENDS_ON} (a bug: wider fan-ins go through barrier jobs)")
        overrides: Dict[str, Any] = {"command": command,
                                     "environment": [{"name": k, "value": v} for k, v in environment.items()]}
        if resources:
            overrides["resourceRequirements"] = [{"type": k, "value": v} for k, v in resources.items()]
        kwargs = dict(jobName=name, jobQueue=queue, jobDefinition=definition, containerOverrides=overrides,
                      dependsOn=[{"jobId": j} for j in depends_on], tags=tags)
        size = len(json.dumps(kwargs).encode())
        if size > SUBMIT_MAX_BYTES:
            raise DisdatError(f"the request that submits job {name} is {size} bytes; AWS Batch takes at most "
                              f"{SUBMIT_MAX_BYTES} (its parameters or environment are too large)")
        return self._batch("submit_job", **kwargs)["jobId"]

    def describe(self, job_ids: List[str]) -> Dict[str, dict]:
        out: Dict[str, dict] = {}
        for i in range(0, len(job_ids), DESCRIBE_MAX):
            for job in self._batch("describe_jobs", jobs=job_ids[i:i + DESCRIBE_MAX])["jobs"]:
                out[job["jobId"]] = job
        return out

    def jobs_named(self, queue: str, prefix: str) -> List[str]:
        """Ids of the queue's jobs, in any state, whose name begins with ``prefix``."""
        return [job["jobId"] for job in self._pages("list_jobs", "jobSummaryList", jobQueue=queue,
                                                    filters=[{"name": "JOB_NAME", "values": [prefix + "*"]}])]

    def job(self, job_id: str) -> dict:
        job = self.describe([job_id]).get(job_id)
        if job is None:
            raise NotFound(f"AWS Batch has no job {job_id}")
        return job

    def terminate(self, job_id: str, reason: str) -> None:
        self._batch("terminate_job", jobId=job_id, reason=reason[:256])

    # -- logs ----------------------------------------------------------------------------------------------
    def _log_events(self, **kwargs) -> dict:
        self._logs_pace.wait()
        self._count("get_log_events")
        try:
            with aws_errors("CloudWatch Logs"):
                return self._client("logs").get_log_events(logGroupName=LOG_GROUP, **kwargs)
        except RemoteError as exc:
            if "ResourceNotFoundException" in str(exc):
                return {}  # the stream is not there yet
            raise

    def log_events(self, stream: str, token: Optional[str]) -> Tuple[List[str], Optional[str]]:
        """The next lines of a job's log stream after ``token`` (and the token to continue from)."""
        response = self._log_events(logStreamName=stream, startFromHead=True,
                                    **({"nextToken": token} if token else {}))
        return [e["message"] for e in response.get("events", ())], response.get("nextForwardToken", token)

    def log_tail(self, stream: str, lines: int) -> List[str]:
        """The last ``lines`` lines of a job's log stream (one call)."""
        response = self._log_events(logStreamName=stream, startFromHead=False, limit=lines)
        return [e["message"] for e in response.get("events", ())]


def check_queue(client: BatchClient, name: Optional[str]) -> None:
    """The job queue exists and takes jobs (one line otherwise, before anything is pushed)."""
    if not name:
        raise DisdatError("no AWS Batch job queue: set [run] aws_batch_queue in luigi.cfg (or "
                          "DISDAT_RUN_AWS_BATCH_QUEUE)")
    queue = client.job_queue(name)
    if queue is None:
        raise DisdatError(f"AWS Batch has no job queue {name!r} in region {client.region}: create it, or fix "
                          f"[run] aws_batch_queue")
    if queue.get("state") != "ENABLED" or queue.get("status") not in (None, "VALID", "UPDATING", "CREATING"):
        raise DisdatError(f"the AWS Batch job queue {name} is {queue.get('state')}/{queue.get('status')}: it "
                          f"takes no jobs")
