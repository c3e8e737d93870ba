"""The Local backend: a node's container on this machine's Docker engine (docker-py).

Its choices:

* **Secrets on stdin.** The container is created with stdin open and attached; the credentials go in as one
  JSON line on stdin, so they are in no part of the container's configuration (``docker inspect``) and no
  log. The attachment then stays open for the container's life: when this client dies, even by SIGKILL,
  Docker closes the container's stdin, and the entrypoint takes that EOF as "my client is gone", records
  the run as interrupted and exits, instead of running on unowned.
* **Mounts:** a ``file://`` remote's directory alone, at the same path; nothing else of the host.
* **User:** the host's uid:gid and umask, so files written to a file:// remote belong to the user, with the
  modes the user's own dsdt would give them.
* **Network:** ``[run] network_mode`` (Docker's default network unless set; ``host`` where the engine has no
  bridge or the S3 server listens on the host's loopback).
* **Labels:** ``disdat.node_id``, ``disdat.remote`` and ``disdat.run_id``, so a dead client's container is
  found and removed (and never another remote's container of the same node).
* **An init** (Docker's ``--init``, tini) is PID 1, so a pipe's own signals work (a pipe that SIGKILLs
  itself dies, instead of being ignored as PID 1 would be) and processes it abandons are reaped.
* **Resources** (a pipe's ``@resources``): its vCPUs (at most the engine's own), its memory with no swap
  beyond it, its GPUs (refused before anything runs where the engine has none). A container the kernel kills
  for memory fails with "out of memory: limit N MiB".
* **Logs** are bounded everywhere: the engine keeps at most :data:`ENGINE_LOG_BYTES` of a container's output
  (json-file rotation), and reading them back keeps the last MAX_LOG bytes, whatever a pipe prints.
"""
from __future__ import annotations

import collections
import json
import os
import threading
from typing import Any, Deque, Dict, List, Optional
from urllib.parse import unquote, urlparse

from .. import config
from ..errors import DisdatError
from .backend import (INFRASTRUCTURE, INTERRUPTED, LOG_TAIL, OUT_OF_MEMORY, TIMED_OUT, USER_ERROR, Backend, Job,
                      JobResult, OnLines, OnStatus, Resources, RunRequest)
from .docker_engine import docker_client

STDIN_FLAG = "DISDAT_CLIENT_ON_STDIN"     # tells the entrypoint to read secrets from, and watch, its stdin
UMASK = "DISDAT_UMASK"                    # the client's umask, which the container writes a file:// remote with
MAX_LOG = 16 << 20                        # the last bytes of a container's output that logs() returns
MAX_LINE = 64 << 10                       # a longer line is cut when it is streamed
ENGINE_LOG_BYTES = "20m"                  # what the engine keeps of a container's output (json-file max-size)
LIVE = ("created", "running", "restarting")


class LocalDocker(Backend):
    name = "Local"
    long_lived_keys_allowed = True    # they go on stdin, never into the container's configuration

    def __init__(self) -> None:
        self._client = None
        self._info: Optional[Dict[str, Any]] = None
        self._lock = threading.Lock()
        self._stdin: Dict[str, object] = {}     # job id -> the attached stdin socket, held while the job runs
        self._containers: Dict[str, object] = {}   # job id -> the Container this backend started

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                self._client = docker_client()
            return self._client

    @property
    def info(self) -> Dict[str, Any]:
        """The engine's ``docker info`` (its CPUs, its runtimes), asked once (two threads may both ask)."""
        if self._info is None:
            self._info = self.client.info()
        return self._info

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

    def submit(self, request: RunRequest) -> "LocalJob":
        import docker
        from docker.types import LogConfig

        url = urlparse(request.remote_url)
        mounts = [unquote(url.path)] if url.scheme == "file" else []
        mode = config.get("run", "network_mode")
        try:
            container = self.client.containers.create(
                request.image, request.args, name=request.name,
                environment={**request.environment, STDIN_FLAG: "1", UMASK: f"{umask():03o}"},
                labels=request.labels, volumes={path: {"bind": path, "mode": "rw"} for path in mounts},
                network_mode=None if mode == "default" else mode, user=f"{os.getuid()}:{os.getgid()}",
                log_config=LogConfig(type="json-file", config={"max-size": ENGINE_LOG_BYTES, "max-file": "1"}),
                init=True,  # an init as PID 1 (tini): signals reach the pipe, orphans are reaped
                **self._limits(request.resources),
                stdin_open=True, detach=False)  # detach=False: Docker closes stdin when this client goes
        except docker.errors.ImageNotFound:
            raise DisdatError(f"image {request.image} is not on the Docker engine: run `dsdt dockerize`") from None
        except docker.errors.APIError as exc:
            raise DisdatError(f"the Docker engine refused the container: {exc.explanation or exc}") from None
        job = LocalJob(self, container.name)
        self._containers[container.name] = container
        try:
            stdin = self._stdin[container.name] = container.attach_socket(params={"stdin": 1, "stream": 1})
            container.start()
            stdin._sock.sendall(json.dumps(request.secrets).encode() + b"\n")
        except (docker.errors.APIError, OSError) as exc:
            job.release()  # a container that could not start is not left behind
            reason = exc.explanation if isinstance(exc, docker.errors.APIError) else exc
            raise DisdatError(f"the Docker engine could not start the container: {reason}") from None
        return job

    def _limits(self, resources: Resources) -> Dict[str, Any]:
        """The container's limits: its vCPUs (at most the engine's CPUs: a pipe sized for Batch still runs
        here, slower), its memory with no swap beyond it (killed past it, as on Batch), its GPUs."""
        from docker.types import DeviceRequest

        cpus = min(resources.vcpus, self.info.get("NCPU") or resources.vcpus)
        limits: Dict[str, Any] = {"nano_cpus": int(cpus * 1e9), "mem_limit": f"{resources.memory}m",
                                  "memswap_limit": f"{resources.memory}m"}
        if resources.gpus:
            limits["device_requests"] = [DeviceRequest(count=resources.gpus, capabilities=[["gpu"]])]
        return limits

    def check_settings(self, pipe_cls: str, settings) -> None:
        if settings.gpus and "nvidia" not in (self.info.get("Runtimes") or {}):
            raise DisdatError(f"{pipe_cls} asks for {settings.gpus} GPU(s) (@resources or [run {pipe_cls}] gpus) and "
                              f"this Docker engine has none (no nvidia runtime): run it on AWS Batch, or ask for 0")

    def job(self, job_id: str) -> "LocalJob":
        return LocalJob(self, job_id)

    def jobs_of(self, node_id: str, remote: str, hint: Optional[str] = None) -> List["LocalJob"]:
        labels = [f"disdat.node_id={node_id}", f"disdat.remote={remote}"]
        found = self.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
        return [LocalJob(self, c.name) for c in found]

    def live_jobs(self, hints: Dict[str, str], remote: str) -> Dict[str, "LocalJob"]:
        out = {}
        for node_id, job_id in hints.items():
            container = self.container(job_id)
            labels = container.labels if container is not None else {}
            if (labels.get("disdat.node_id") == node_id and labels.get("disdat.remote") == remote
                    and LocalJob(self, job_id).is_live()):
                out[node_id] = LocalJob(self, job_id)
        return out

    def container(self, job_id: str):
        """The container of a job: the one this backend started, else the engine's (None when gone)."""
        import docker

        if job_id in self._containers:
            return self._containers[job_id]
        try:
            return self.client.containers.get(job_id)
        except docker.errors.NotFound:
            return None

    def forget(self, job_id: str) -> None:
        """Close the job's stdin and remove its container (no error when it is gone already)."""
        import docker

        stdin = self._stdin.pop(job_id, None)
        if stdin is not None:
            stdin.close()
        container = self.container(job_id)
        self._containers.pop(job_id, None)
        if container is not None:
            try:
                container.remove(force=True)
            except (docker.errors.NotFound, docker.errors.APIError):
                pass

    def close(self) -> None:
        for job_id in list(self._stdin):
            self.forget(job_id)
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class LocalJob(Job):
    """One container on the local engine, known by its name."""

    def __init__(self, backend: LocalDocker, job_id: str):
        super().__init__(job_id)
        self.backend = backend

    def status(self) -> Optional[str]:
        import docker

        try:
            return self.backend.client.containers.get(self.id).status  # always fresh: a cached object is stale
        except docker.errors.NotFound:
            return None

    def is_live(self) -> bool:
        return self.status() in LIVE

    def result(self) -> Optional[JobResult]:
        import docker

        try:
            inspected = self.backend.client.api.inspect_container(self.id)
        except docker.errors.NotFound:
            return None
        if inspected["State"].get("Status") in LIVE:
            return None
        return _ended(self.id, inspected, _tail(self.logs()))

    def wait(self, on_lines: Optional[OnLines], on_status: OnStatus, timeout: Optional[int] = None) -> JobResult:
        import requests

        container = self.backend.container(self.id)
        if container is None:
            return JobResult("failed", f"container {self.id} is gone from the Docker engine")
        on_status("running")
        tail: Deque[str] = collections.deque(maxlen=LOG_TAIL)
        follower = threading.Thread(target=_follow, args=(container, tail, on_lines), daemon=True,
                                    name=f"log-{self.id}")
        follower.start()
        try:
            status = container.wait(timeout=timeout)
        except requests.exceptions.RequestException:
            container.kill()
            follower.join(5)
            return JobResult("timed_out", f"container {self.id} ran longer than its timeout of {timeout} s and was "
                                          f"stopped", None, list(tail), TIMED_OUT)
        follower.join(10)
        if status.get("StatusCode") == 0:
            return JobResult("succeeded", exit_code=0, log_tail=list(tail))
        import docker

        try:
            inspected = self.backend.client.api.inspect_container(self.id)
        except docker.errors.NotFound:  # removed meanwhile (an interrupted run): only its status is known
            inspected = {"State": {"ExitCode": status.get("StatusCode")}}
        return _ended(self.id, inspected, list(tail))

    def logs(self) -> List[str]:
        """The container's output, at most its last MAX_LOG bytes (read as a stream: never all of it at once);
        [] when the engine has no more of it (the container is gone, or being removed)."""
        import docker

        container = self.backend.container(self.id)
        if container is None:
            return []
        kept: Deque[bytes] = collections.deque()
        size = 0
        try:
            for chunk in container.logs(stream=True, follow=False):
                kept.append(chunk)
                size += len(chunk)
                while size > MAX_LOG and len(kept) > 1:
                    size -= len(kept.popleft())
        except (docker.errors.NotFound, docker.errors.APIError):
            pass
        return b"".join(kept)[-MAX_LOG:].decode(errors="replace").splitlines()

    def cancel(self, reason: str) -> None:
        """Kill the container (it stays, with its log, until it is released)."""
        import docker

        container = self.backend.container(self.id)
        if container is not None:
            try:
                container.kill()
            except (docker.errors.NotFound, docker.errors.APIError):  # not running, or gone already
                pass

    def release(self) -> None:
        self.backend.forget(self.id)


def umask() -> int:
    """This process's umask, read without changing it (os.umask would, for every thread, for a moment)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _tail(lines: List[str]) -> List[str]:
    return lines[-LOG_TAIL:]


def _ended(job_id: str, inspected: Dict[str, Any], tail: List[str]) -> JobResult:
    """How a container that stopped ended (from ``docker inspect``): its status, why, and what kind of failure."""
    state = inspected.get("State") or {}
    code = state.get("ExitCode")
    if code == 0:
        return JobResult("succeeded", exit_code=0, log_tail=tail)
    if state.get("OOMKilled"):
        limit = ((inspected.get("HostConfig") or {}).get("Memory") or 0) >> 20
        return JobResult("failed", f"out of memory: limit {limit} MiB (container {job_id} was killed by the kernel)",
                         code, tail, OUT_OF_MEMORY)
    if code is not None and 128 < code < 160:
        name = _signal_name(code - 128)
        return JobResult("failed", f"container {job_id} was killed by signal {code - 128} ({name})", code, tail,
                         INFRASTRUCTURE)
    cause = USER_ERROR if code in (1, 2) else INTERRUPTED if code == 130 else INFRASTRUCTURE
    return JobResult("failed", f"container {job_id} exited with status {code}", code, tail, cause)


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown signal"


def _follow(container, tail: Deque[str], on_lines: Optional[OnLines]) -> None:
    """Stream the container's output as it comes, a block of lines at a time (keeping the last lines for a
    failure); a line longer than MAX_LINE is cut, so that output without newlines never piles up here."""
    pending = b""
    for chunk in container.logs(stream=True, follow=True):
        pending += chunk
        *raw, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE:
            raw.append(pending[:MAX_LINE])
            pending = b""
        _deliver(raw, tail, on_lines)
    if pending:
        _deliver([pending], tail, on_lines)


def _deliver(raw: List[bytes], tail: Deque[str], on_lines: Optional[OnLines]) -> None:
    lines = [line.decode(errors="replace").rstrip("\r") for line in raw]
    tail.extend(lines)
    if lines and on_lines is not None:
        on_lines(lines)
