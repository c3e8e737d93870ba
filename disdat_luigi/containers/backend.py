"""The container backend interface: run one container to completion, or fail with its logs.

A backend gets a :class:`ContainerSpec` (what to run, with which environment and mounts) and a line
callback (for streaming logs into the Luigi task's log). It returns when the container exited 0 and raises
:class:`~disdat_luigi.errors.ContainerFailed` (with the last log lines) otherwise. Interrupting the caller
stops the container (or the job) the backend started.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .. import config
from ..errors import DisdatError

OnLine = Callable[[str], None]
LOG_TAIL = 50


@dataclass
class ContainerSpec:
    image: str                                  # image id (local) or URI (registry) to run
    command: List[str]                          # arguments of the image's entrypoint
    environment: Dict[str, str]                 # holds credentials: never log it
    name: str
    labels: Dict[str, str] = field(default_factory=dict)
    mounts: List[str] = field(default_factory=list)   # host directories, mounted read-write at the same path
    network_mode: str = "host"
    timeout: Optional[int] = None               # seconds; None waits forever
    user: Optional[str] = None                  # uid:gid inside the container


class Backend(ABC):
    name: str

    @abstractmethod
    def execute(self, spec: ContainerSpec, on_line: OnLine) -> None:
        """Run the container to completion (see the module docstring)."""


BACKENDS = ("Local", "AWSBatch")


def backend_name(override: str = "") -> str:
    name = override or config.get("run", "backend")
    if name not in BACKENDS:
        raise DisdatError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)} ([run] backend)")
    return name


def get_backend(name: str) -> Backend:
    if backend_name(name) == "Local":
        from .local import LocalDocker

        return LocalDocker()
    raise DisdatError("the AWSBatch backend is not available in this version: use --backend Local")
