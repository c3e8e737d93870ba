"""What a node's container gets: the :class:`~.backend.RunRequest` for a :class:`~.job.NodeJob`.

* the job itself as the entrypoint's one argument (remote URL, names, ids: nothing secret);
* the S3 endpoint as ``AWS_ENDPOINT_URL_S3`` and the region, when the host has them configured, and the
  transfer settings of ``[disdat]``, so the container moves data as the host would;
* credentials as *secrets*, kept apart from the environment so that each backend hands them over in a form
  nobody can inspect: only for an S3 remote (a file:// remote's container gets no AWS credentials at all);
  with ``--use-aws-session-token N`` only temporary STS credentials valid N seconds; without it, the host's
  own credentials where the backend keeps them private (Local: on stdin), else none (Batch: the job role).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence
from urllib.parse import urlparse

from .. import config
from ..errors import RemoteError
from ..pipe.settings import RunSettings, defaults
from .backend import Resources, RunRequest
from .job import NodeJob

_PASSED_SETTINGS = ("pack_threshold", "transfer_workers", "s3_max_attempts")


def session_credentials(seconds: int) -> Dict[str, str]:
    """Temporary credentials from STS ``get_session_token`` (valid ``seconds``)."""
    from ..remotes.s3 import make_session, s3_errors

    session = make_session()
    with s3_errors("(sts)", "STS"):
        sts = session.create_client("sts", region_name=region(session))
        token = sts.get_session_token(DurationSeconds=seconds)["Credentials"]
    return {"AWS_ACCESS_KEY_ID": token["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": token["SecretAccessKey"],
            "AWS_SESSION_TOKEN": token["SessionToken"]}


def host_credentials() -> Dict[str, str]:
    """The host's own credentials (boto's chain), {} when it has none."""
    from ..remotes.s3 import make_session

    creds = make_session().get_credentials()
    if creds is None:
        return {}
    frozen = creds.get_frozen_credentials()
    env = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        env["AWS_SESSION_TOKEN"] = frozen.token
    return env


def region(session=None) -> str:
    from ..remotes.s3 import client_kwargs, make_session

    return (client_kwargs().get("region_name") or (session or make_session()).get_config_variable("region")
            or "us-east-1")


def s3_endpoint() -> str:
    from ..remotes.s3 import client_kwargs

    return (client_kwargs().get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or "")


def credentials_for(remote_url: str, session_token_seconds: int, long_lived_allowed: bool) -> Dict[str, str]:
    if urlparse(remote_url).scheme != "s3":
        return {}
    if session_token_seconds:
        return session_credentials(session_token_seconds)
    if not long_lived_allowed:
        return {}
    credentials = host_credentials()
    if not credentials:
        raise RemoteError("no AWS credentials to give the container for the S3 remote: set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    return credentials


def inline(job_json: str) -> List[str]:
    return ["--job", job_json]


@dataclass(frozen=True)
class HostSettings:
    """What every node's request of a run takes from the host's settings: read once for a graph (a region
    lookup builds a botocore session; each setting stats luigi.cfg), not once for each of its nodes."""
    environment: Dict[str, str]
    labels: Dict[str, str]


def host_settings(remote_url: str) -> HostSettings:
    """The container's environment for a remote (transfer settings; the S3 region and endpoint) and [run]
    labels."""
    env: Dict[str, str] = {config.env_name("disdat", k): str(config.get("disdat", k)) for k in _PASSED_SETTINGS}
    if urlparse(remote_url).scheme == "s3":
        env["AWS_DEFAULT_REGION"] = region()
        endpoint = s3_endpoint()
        if endpoint:
            env["AWS_ENDPOINT_URL_S3"] = endpoint
    return HostSettings(env, config.get("run", "labels"))


def run_request(job: NodeJob, image: str, secrets: Dict[str, str], depends_on: Sequence[str] = (),
                attempt: int = 1, arguments: Callable[[str], List[str]] = inline,
                settings: Optional[RunSettings] = None, host: Optional[HostSettings] = None) -> RunRequest:
    """The request that runs ``job`` (as its ``attempt``) in ``image`` (an image reference the backend can
    run), after the jobs ``depends_on`` (backends that chain jobs themselves), with the pipe's ``settings``
    (its resources, timeout and attempts; ``[run]``'s when not given) and the ``host`` settings of its run
    (read now when not given). ``arguments`` turns the job's description into the entrypoint's arguments
    (inline, or a copy on the remote when it is large)."""
    settings = settings or defaults()
    host = host or host_settings(job.remote_url)
    job = replace(job, attempt=attempt)
    node = job.node
    return RunRequest(
        image=image, args=arguments(job.to_json()), environment=dict(host.environment), secrets=secrets,
        name=f"disdat-{node.node_id[:12]}-{os.urandom(3).hex()}", family=node.pipe_cls.rpartition(".")[0],
        remote_url=job.remote_url, depends_on=list(depends_on),
        labels={**host.labels, "disdat.node_id": node.node_id, "disdat.run_id": job.run_id,
                "disdat.pipe_cls": node.pipe_cls, "disdat.remote": f"{job.remote_url} {job.remote_context}"},
        timeout=settings.timeout, resources=Resources(settings.vcpus, settings.memory, settings.gpus),
        attempts=settings.attempts)
