"""Images in a registry: pushing what ``dsdt dockerize --push`` built, and pulling an image a team member
pushed when a Local run does not find it on this engine.

``[dockerize] registry`` names the registry (and ``repository_prefix`` the path in it). An Amazon ECR
registry (``<account>.dkr.ecr.<region>.amazonaws.com``, or any registry with ``[dockerize] ecr = true``)
gets its repositories created when missing and a login from ECR's ``get_authorization_token``; any other
registry uses the engine's own login (``docker login``).
"""
from __future__ import annotations

import base64
import re
from typing import Iterator, Optional

from .. import config
from ..errors import DisdatError, NotFound

_ECR_HOST = re.compile(r"[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")


def registry() -> Optional[str]:
    value = config.get("dockerize", "registry")
    return value.strip("/") if value else None


def is_ecr(host: str) -> bool:
    explicit = config.get("dockerize", "ecr")
    return explicit if explicit is not None else bool(_ECR_HOST.fullmatch(host))


def _ecr():
    from ..remotes.s3 import make_session
    from .request import region

    session = make_session()
    return session.create_client("ecr", region_name=region(session))


def _ecr_login(client, host: str) -> None:
    """Log the engine in to ECR with a token from get_authorization_token (valid 12 hours)."""
    from .batch_client import aws_errors

    with aws_errors("Amazon ECR"):
        data = _ecr().get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    client.login(username=user, password=password, registry=host, reauth=True)


def _ensure_repository(repository: str) -> bool:
    """Create the ECR repository when it is missing; True when it was created."""
    from botocore.exceptions import ClientError

    from .batch_client import aws_errors

    ecr = _ecr()
    try:
        with aws_errors("Amazon ECR"):
            ecr.describe_repositories(repositoryNames=[repository])
        return False
    except DisdatError as exc:
        if "RepositoryNotFoundException" not in str(exc):
            raise
    try:
        ecr.create_repository(repositoryName=repository)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "RepositoryAlreadyExistsException":
            raise DisdatError(f"Amazon ECR refused to create {repository}: {exc}") from None
    return True


def push(client, name: str) -> Iterator[str]:
    """Push image ``name`` (``host/path:tag``) to its registry; yields progress lines."""
    host = registry()
    if host is None or not name.startswith(host + "/"):
        raise DisdatError(f"{name} names no registry: set [dockerize] registry to push")
    repository, _, tag = name.rpartition(":")
    if is_ecr(host):
        if _ensure_repository(repository[len(host) + 1:]):
            yield f"created the ECR repository {repository[len(host) + 1:]}"
        _ecr_login(client, host)
    for item in client.images.push(repository, tag, stream=True, decode=True):
        if "error" in item:
            raise DisdatError(f"pushing {name} failed: {item['error']}")
    yield f"pushed {name}"


def pull(client, name: str):
    """Pull image ``name`` from its registry (NotFound, one line, when it is not there or no registry is set)."""
    import docker

    host = registry()
    if host is None or not name.startswith(host + "/"):
        raise NotFound(f"image {name} is not on this Docker engine and no registry is set to pull it from")
    if is_ecr(host):
        _ecr_login(client, host)
    repository, _, tag = name.rpartition(":")
    try:
        return client.images.pull(repository, tag)
    except docker.errors.APIError as exc:
        raise NotFound(f"image {name} is neither on this Docker engine nor pullable from {host} "
                       f"({exc.explanation or exc})") from None
