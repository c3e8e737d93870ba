"""A thin wrapper over the AWS Batch and CloudWatch Logs clients: what the AWSBatch backend calls, nothing more.

One botocore session and one client per service (created on first use), the standard retry mode (backoff
with jitter on throttling and 5xx) as the one place retries happen, and botocore's failures turned into one
line. boto's own endpoint settings apply (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_BATCH``,
``AWS_ENDPOINT_URL_LOGS``, ...), so an emulator or a VPC endpoint works as for every AWS tool; the region
is ``[s3] region_name`` or boto's.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import DisdatError, NotFound, RemoteError

LOG_GROUP = "/aws/batch/job"


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


class BatchClient:
    def __init__(self) -> None:
        self._clients: Dict[str, Any] = {}

    def _client(self, service: str):
        if service not in self._clients:
            from botocore.config import Config

            from ..remotes.s3 import make_session
            from .request import region

            session = make_session()
            self._clients[service] = session.create_client(
                service, region_name=region(session),
                config=Config(retries={"mode": "standard", "max_attempts": 8}, connect_timeout=10, read_timeout=60))
        return self._clients[service]

    @property
    def region(self) -> str:
        return self._client("batch").meta.region_name

    # -- queues ----------------------------------------------------------------------------------------
    def job_queue(self, name: str) -> Optional[dict]:
        with aws_errors("AWS Batch"):
            queues = self._client("batch").describe_job_queues(jobQueues=[name])["jobQueues"]
        return queues[0] if queues else None

    # -- job definitions ---------------------------------------------------------------------------------
    def active_definitions(self, name: str) -> List[dict]:
        with aws_errors("AWS Batch"):
            pages = self._client("batch").get_paginator("describe_job_definitions").paginate(
                jobDefinitionName=name, status="ACTIVE")
            return [d for page in pages for d in page["jobDefinitions"]]

    def register_definition(self, name: str, container: dict, attempts: int, timeout: Optional[int]) -> dict:
        kwargs: Dict[str, Any] = dict(jobDefinitionName=name, type="container", containerProperties=container,
                                      retryStrategy={"attempts": attempts})
        if timeout:
            kwargs["timeout"] = {"attemptDurationSeconds": timeout}
        with aws_errors("AWS Batch"):
            return self._client("batch").register_job_definition(**kwargs)

    # -- jobs ----------------------------------------------------------------------------------------------
    def submit(self, name: str, queue: str, definition: str, command: List[str], environment: Dict[str, str],
               depends_on: List[str], tags: Dict[str, str]) -> str:
        overrides = {"command": command, "environment": [{"name": k, "value": v} for k, v in environment.items()]}
        with aws_errors("AWS Batch"):
            return self._client("batch").submit_job(
                jobName=name, jobQueue=queue, jobDefinition=definition, containerOverrides=overrides,
                dependsOn=[{"jobId": j} for j in depends_on], tags=tags)["jobId"]

    def describe(self, job_ids: List[str]) -> Dict[str, dict]:
        out: Dict[str, dict] = {}
        with aws_errors("AWS Batch"):
            for i in range(0, len(job_ids), 100):  # the API's limit per call
                for job in self._client("batch").describe_jobs(jobs=job_ids[i:i + 100])["jobs"]:
                    out[job["jobId"]] = job
        return out

    def jobs_named(self, queue: str, prefix: str) -> List[str]:
        """Ids of the queue's jobs, in any state, whose name begins with ``prefix``."""
        with aws_errors("AWS Batch"):
            pages = self._client("batch").get_paginator("list_jobs").paginate(
                jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [prefix + "*"]}])
            return [job["jobId"] for page in pages for job in page.get("jobSummaryList", ())]

    def job(self, job_id: str) -> dict:
        job = self.describe([job_id]).get(job_id)
        if job is None:
            raise NotFound(f"AWS Batch has no job {job_id}")
        return job

    def terminate(self, job_id: str, reason: str) -> None:
        with aws_errors("AWS Batch"):
            self._client("batch").terminate_job(jobId=job_id, reason=reason[:256])

    # -- logs ----------------------------------------------------------------------------------------------
    def log_events(self, stream: str, token: Optional[str]) -> Tuple[List[str], Optional[str]]:
        """The next lines of a job's log stream after ``token`` (and the token to continue from)."""
        kwargs: Dict[str, Any] = dict(logGroupName=LOG_GROUP, logStreamName=stream, startFromHead=True)
        if token:
            kwargs["nextToken"] = token
        try:
            with aws_errors("CloudWatch Logs"):
                response = self._client("logs").get_log_events(**kwargs)
        except RemoteError as exc:
            if "ResourceNotFoundException" in str(exc):
                return [], token  # the stream is not there yet
            raise
        return [e["message"] for e in response.get("events", ())], response.get("nextForwardToken", token)


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
