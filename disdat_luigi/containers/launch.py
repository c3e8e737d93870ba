"""What a run's container gets: the entrypoint's arguments, its environment and its mounts.

* the remote by argument (URL and remote context: not secret);
* the S3 endpoint as ``AWS_ENDPOINT_URL_S3`` and the region, when configured on the host;
* credentials by environment only: the host's (boto's usual chain), or with ``--use-aws-session-token N``
  only temporary ones from STS ``get_session_token``; never as arguments, task parameters or log lines;
* for a ``file://`` remote, that directory alone, mounted at the same path (never DISDAT_HOME or ~/.aws);
* the transfer settings of ``[disdat]`` that the host has, so the container moves data the same way.
"""
from __future__ import annotations

import os
import uuid as uuidlib
from typing import Dict
from urllib.parse import unquote, urlparse

from .. import config
from .backend import ContainerSpec
from ..store.context import RemoteBinding
from ..errors import RemoteError

_PASSED_SETTINGS = ("pack_threshold", "transfer_workers", "s3_max_attempts")


def credentials_env(session_token_seconds: int = 0) -> Dict[str, str]:
    """AWS credentials for the container ({} when the host has none)."""
    from ..remotes.s3 import make_session, s3_errors

    session = make_session()
    if session_token_seconds:
        with s3_errors("(sts)", "STS"):
            sts = session.create_client("sts", region_name=_region(session))
            token = sts.get_session_token(DurationSeconds=session_token_seconds)["Credentials"]
        return {"AWS_ACCESS_KEY_ID": token["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": token["SecretAccessKey"],
                "AWS_SESSION_TOKEN": token["SessionToken"]}
    creds = session.get_credentials()
    if creds is None:
        return {}
    frozen = creds.get_frozen_credentials()
    env = {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
    if frozen.token:
        env["AWS_SESSION_TOKEN"] = frozen.token
    return env


def _region(session) -> str:
    from ..remotes.s3 import client_kwargs

    return client_kwargs().get("region_name") or session.get_config_variable("region") or "us-east-1"


def _s3_env() -> Dict[str, str]:
    from ..remotes.s3 import client_kwargs, make_session

    env = {"AWS_DEFAULT_REGION": _region(make_session())}
    endpoint = (client_kwargs().get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    return env


def container_spec(*, binding: RemoteBinding, image: str, pipe_cls: str, pipe_params: str, input_uuid: str,
                   output_bundle: str, output_tags: str, run_id: str, session_token_seconds: int = 0) -> ContainerSpec:
    url = urlparse(binding.url)
    env: Dict[str, str] = {}
    mounts = []
    if url.scheme == "file":
        mounts.append(unquote(url.path))
    else:
        env.update(_s3_env())
    credentials = credentials_env(session_token_seconds)
    if url.scheme == "s3" and not credentials:
        raise RemoteError("no AWS credentials to give the container for the S3 remote: set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    env.update(credentials)
    for key in _PASSED_SETTINGS:
        env[config.env_name("disdat", key)] = str(config.get("disdat", key))
    command = ["--remote-url", binding.url, "--remote-context", binding.remote_context, "--input-uuid", input_uuid,
               "--output-bundle", output_bundle, "--output-tags", output_tags, "--pipe-cls", pipe_cls,
               "--pipe-params", pipe_params, "--run-id", run_id, "--image-id", image]
    return ContainerSpec(
        image=image, command=command, environment=env, name=f"disdat-{run_id[:12]}-{uuidlib.uuid4().hex[:6]}",
        labels={"disdat.run_id": run_id, "disdat.pipe_cls": pipe_cls}, mounts=mounts,
        network_mode=config.get("run", "network_mode"), timeout=config.get("run", "timeout"),
        user=f"{os.getuid()}:{os.getgid()}")
