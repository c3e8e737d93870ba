"""The one way to reach the local Docker engine, with the one error line when it cannot be reached."""
from __future__ import annotations

import os

from ..errors import DisdatError


def docker_client():
    """A docker-py client that has answered a ping (``DOCKER_HOST`` and friends are honoured)."""
    import docker
    import requests

    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DisdatError(f"cannot reach the Docker engine at {where}: is dockerd running and DOCKER_HOST right? "
                          f"({type(exc).__name__})") from None
    return client
