"""The Local backend: a node's container on this machine's Docker engine (docker-py).

Its choices:

* **Secrets on stdin.** The container is created with stdin open and attached; the credentials go in as one
  JSON line on stdin, so they are in no part of the container's configuration (``docker inspect``) and no
  log. The attachment then stays open for the container's life: when this client dies, even by SIGKILL,
  Docker closes the container's stdin, and the entrypoint takes that EOF as "my client is gone", records
  the run as interrupted and exits, instead of running on unowned.
* **Mounts:** a ``file://`` remote's directory alone, at the same path; nothing else of the host.
* **User:** the host's uid:gid, so files written to a file:// remote belong to the user.
* **Network:** ``[run] network_mode`` (Docker's default network unless set; ``host`` where the engine has no
  bridge or the S3 server listens on the host's loopback).
* **Labels:** ``disdat.node_id``, ``disdat.remote`` and ``disdat.run_id``, so a dead client's container is
  found and removed (and never another remote's container of the same node).
"""
from __future__ import annotations

import collections
import json
import os
import threading
from typing import Deque, Dict, List, Optional
from urllib.parse import unquote, urlparse

from .. import config
from ..errors import DisdatError
from .backend import LOG_TAIL, Backend, JobResult, OnLine, OnStatus, RunRequest
from .docker_engine import docker_client

STDIN_FLAG = "DISDAT_CLIENT_ON_STDIN"     # tells the entrypoint to read secrets from, and watch, its stdin


class LocalDocker(Backend):
    name = "Local"
    long_lived_keys_allowed = True    # they go on stdin, never into the container's configuration
    names_jobs = True                 # a container is known by its name

    def __init__(self) -> None:
        self._client = None
        self._stdin: Dict[str, object] = {}     # job id -> the attached stdin socket, held while the job runs
        self._containers: Dict[str, object] = {}   # job id -> the Container this backend started

    @property
    def client(self):
        if self._client is None:
            self._client = docker_client()
        return self._client

    def check(self, remote_url: str) -> None:
        self.client  # noqa: B018 (an unreachable engine is one line, before anything is pushed)
        mode = config.get("run", "network_mode")
        if mode not in ("default", "bridge", "host", "none") and not mode.startswith("container:"):
            import docker

            try:
                self.client.networks.get(mode)
            except docker.errors.NotFound:
                raise DisdatError(f"the Docker engine has no network {mode!r} ([run] network_mode): use host, none, "
                                  f"bridge, default or an existing network") from None

    def submit(self, request: RunRequest) -> str:
        import docker

        url = urlparse(request.remote_url)
        mounts = [unquote(url.path)] if url.scheme == "file" else []
        mode = config.get("run", "network_mode")
        try:
            container = self.client.containers.create(
                request.image, request.args, name=request.name, environment={**request.environment, STDIN_FLAG: "1"},
                labels=request.labels, volumes={path: {"bind": path, "mode": "rw"} for path in mounts},
                network_mode=None if mode == "default" else mode, user=f"{os.getuid()}:{os.getgid()}",
                stdin_open=True, detach=False)  # detach=False: Docker closes stdin when this client goes
        except docker.errors.ImageNotFound:
            raise DisdatError(f"image {request.image} is not on the Docker engine: run `dsdt dockerize`") from None
        except docker.errors.APIError as exc:
            raise DisdatError(f"the Docker engine refused the container: {exc.explanation or exc}") from None
        self._containers[container.name] = container
        try:
            stdin = self._stdin[container.name] = container.attach_socket(params={"stdin": 1, "stream": 1})
            container.start()
            stdin._sock.sendall(json.dumps(request.secrets).encode() + b"\n")
        except (docker.errors.APIError, OSError) as exc:
            self.release(container.name)  # a container that could not start is not left behind
            reason = exc.explanation if isinstance(exc, docker.errors.APIError) else exc
            raise DisdatError(f"the Docker engine could not start the container: {reason}") from None
        return container.name

    def _container(self, job_id: str):
        import docker

        if job_id in self._containers:
            return self._containers[job_id]
        try:
            return self.client.containers.get(job_id)
        except docker.errors.NotFound:
            return None

    def wait(self, job_id: str, on_line: OnLine, on_status: OnStatus, timeout: Optional[int] = None) -> JobResult:
        import requests

        container = self._container(job_id)
        if container is None:
            return JobResult("failed", f"container {job_id} is gone from the Docker engine")
        on_status("running")
        tail: Deque[str] = collections.deque(maxlen=LOG_TAIL)
        follower = threading.Thread(target=_follow, args=(container, tail, on_line), daemon=True)
        follower.start()
        try:
            status = container.wait(timeout=timeout)
        except requests.exceptions.RequestException:
            container.kill()
            follower.join(5)
            return JobResult("timed_out", f"container {job_id} ran longer than [run] timeout = {timeout} s and was "
                                          f"stopped", None, list(tail))
        follower.join(10)
        code = status.get("StatusCode")
        if code == 0:
            return JobResult("succeeded", exit_code=0, log_tail=list(tail))
        return JobResult("failed", f"container {job_id} exited with status {code}", code, list(tail))

    def cancel(self, job_id: str, reason: str) -> None:
        self.release(job_id)

    def release(self, job_id: str) -> None:
        import docker

        stdin = self._stdin.pop(job_id, None)
        if stdin is not None:
            stdin.close()
        container = self._container(job_id)
        self._containers.pop(job_id, None)
        if container is not None:
            try:
                container.remove(force=True)
            except (docker.errors.NotFound, docker.errors.APIError):
                pass

    def close(self) -> None:
        for job_id in list(self._stdin):
            self.release(job_id)
        if self._client is not None:
            self._client.close()
            self._client = None

    def logs(self, job_id: str) -> List[str]:
        container = self._container(job_id)
        if container is None:
            return []
        return container.logs().decode(errors="replace").splitlines()

    def status(self, job_id: str) -> Optional[str]:
        import docker

        try:
            return self.client.containers.get(job_id).status  # always fresh: a cached object's state is stale
        except docker.errors.NotFound:
            return None

    def is_live(self, job_id: str) -> bool:
        return self.status(job_id) in ("created", "running", "restarting")

    def orphans(self, node_id: str, remote: str, hint: Optional[str] = None) -> List[str]:
        labels = [f"disdat.node_id={node_id}", f"disdat.remote={remote}"]
        return [c.name for c in self.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)]


def _follow(container, tail: Deque[str], on_line: OnLine) -> None:
    """Stream the container's output line by line as it comes."""
    pending = b""
    for chunk in container.logs(stream=True, follow=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip("\r")
            tail.append(line)
            on_line(line)
    if pending:
        line = pending.decode(errors="replace")
        tail.append(line)
        on_line(line)
