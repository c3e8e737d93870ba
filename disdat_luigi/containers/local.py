"""The Local backend: the container runs on the local Docker engine (docker-py)."""
from __future__ import annotations

import collections
import contextlib
import signal
import threading
from typing import Deque, Iterator

from .docker_engine import docker_client
from ..errors import ContainerFailed
from .backend import LOG_TAIL, Backend, ContainerSpec, OnLine


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a killed ``dsdt run``, a Luigi worker timeout) unwinds like Ctrl-C, so the container is
    removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class LocalDocker(Backend):
    name = "Local"

    def execute(self, spec: ContainerSpec, on_line: OnLine) -> None:
        import docker
        import requests

        client = docker_client()
        tail: Deque[str] = collections.deque(maxlen=LOG_TAIL)
        with _sigterm_interrupts():
            try:
                container = client.containers.create(
                    spec.image, spec.command, name=spec.name, environment=spec.environment, labels=spec.labels,
                    volumes={path: {"bind": path, "mode": "rw"} for path in spec.mounts},
                    network_mode=spec.network_mode, user=spec.user, detach=True)
            except docker.errors.ImageNotFound:
                raise ContainerFailed(f"image {spec.image} is gone from the Docker engine: run `dsdt dockerize`"
                                      ) from None
            try:
                container.start()
                follower = threading.Thread(target=_follow, args=(container, tail, on_line), daemon=True)
                follower.start()
                try:
                    status = container.wait(timeout=spec.timeout)
                except requests.exceptions.RequestException:
                    container.kill()
                    follower.join(5)
                    raise ContainerFailed(f"container {spec.name} ran longer than [run] timeout = {spec.timeout} s and "
                                          f"was stopped", list(tail)) from None
                follower.join(10)
                code = status.get("StatusCode")
                if code != 0:
                    raise ContainerFailed(f"container {spec.name} exited with status {code}", list(tail), code)
            finally:
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    container.remove(force=True)


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
