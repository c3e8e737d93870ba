"""The backend interface: where a node's container runs. ``Backend.submit`` returns a :class:`Job`, a handle
that says how the job is, waits for it, reads its log and stops it, whatever the backend (Metaflow's
``RunningJob`` is the model), so callers never branch on what kind of backend they hold.

A :class:`RunRequest` says *what* to run and nothing about *how*: an image reference, the entrypoint's
arguments, the non-secret environment, the secrets (credentials) apart, labels, a timeout and resources,
and where the data lives. Each backend makes its own choices: the Local one decides mounts (a file://
remote's directory), the network, the user, and hands secrets over on the container's stdin so that
``docker inspect`` never shows them; the AWS Batch one decides job definitions, roles and retries, and takes
only short-lived session credentials, which travel in the job's environment (Batch has no other way: whoever
may describe the job sees them, which is why long-lived keys never go there). So a backend is one module
(``local.py``, ``aws_batch.py``) and nothing else changes.

Two things do differ, and are said once here: a backend that **chains jobs** (AWS Batch's ``dependsOn``)
takes a whole graph at once, and its jobs then own their nodes (they outlive the client that submitted
them); the others run a node while their client waits, and the client owns the node.

Backends are chosen by name (``[run] backend``, ``--backend``): :func:`get_backend` gives each process one
instance per backend (one Docker client, one Batch client and one job monitor for every node of a run).
"""
from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .. import config
from ..errors import DisdatError

OnLines = Callable[[List[str]], None]   # lines of the job's output, as they come (a block at a time)
OnStatus = Callable[[str], None]        # a backend state worth showing (RUNNABLE, STARTING, RUNNING, ...)
LOG_TAIL = 50                           # the log lines a failure carries

BACKENDS = ("Local", "AWSBatch")


@dataclass(frozen=True)
class Resources:
    vcpus: int = 1
    memory: int = 2048                  # MiB
    gpus: int = 0


@dataclass(frozen=True)
class RunRequest:
    image: str                          # an image reference the backend can run (local name or registry URI)
    args: List[str]                     # arguments of the image's entrypoint (never secret)
    environment: Dict[str, str]         # never secret: it shows in `docker inspect` and the Batch console
    secrets: Dict[str, str]             # credentials: the backend decides how they travel (see the docstring)
    name: str                           # container or job name
    family: str                         # the pipe's module: names the image and the job definition
    remote_url: str                     # where the job reads and writes its data
    labels: Dict[str, str] = field(default_factory=dict)
    timeout: Optional[int] = None       # seconds, per attempt
    resources: Resources = Resources()
    depends_on: List[str] = field(default_factory=list)   # job ids that must succeed first (Batch)
    attempts: int = 1                   # Batch: its job's attempts (Local: each attempt is a request of its own)


# why an attempt failed, by kind (run records keep it: `dsdt runs` tells a pipe's bug from an out-of-memory kill)
USER_ERROR, OUT_OF_MEMORY, TIMED_OUT, INTERRUPTED, INFRASTRUCTURE = (
    "user_error", "out_of_memory", "timed_out", "interrupted", "infrastructure")
CAUSES = (USER_ERROR, OUT_OF_MEMORY, TIMED_OUT, INTERRUPTED, INFRASTRUCTURE)


@dataclass(frozen=True)
class JobResult:
    status: str                         # "succeeded", "failed" or "timed_out"
    reason: str = ""                    # why it failed, in one line
    exit_code: Optional[int] = None
    log_tail: List[str] = field(default_factory=list)
    cause: str = ""                     # one of CAUSES when it failed ("" when the backend cannot tell)


class Job(ABC):
    """A handle on one job of a backend. Cheap to make: two handles on one job id are the same job."""

    word = "container"                  # what the backend calls a job, in messages

    def __init__(self, job_id: str):
        self.id = job_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id})"

    @abstractmethod
    def status(self) -> Optional[str]:
        """The job's state as the backend names it (None when the backend does not know the job)."""

    @abstractmethod
    def is_live(self) -> bool:
        """The job has not finished (it is queued, starting or running)."""

    @abstractmethod
    def wait(self, on_lines: Optional[OnLines], on_status: OnStatus, timeout: Optional[int] = None) -> JobResult:
        """Follow the job to its end (its output lines to ``on_lines`` as they come, in blocks, when given);
        never raises for a job that failed."""

    @abstractmethod
    def result(self) -> Optional[JobResult]:
        """How the job ended, once it has (None while it runs, or when the backend no longer knows it)."""

    @abstractmethod
    def logs(self) -> List[str]:
        """The lines the job wrote so far, at most its last MAX_LOG bytes ([] when none are known)."""

    @abstractmethod
    def cancel(self, reason: str) -> None:
        """Stop the job (its log stays readable until it is released): no error when it has ended already."""

    def release(self) -> None:
        """Forget a finished or stopped job (Local: remove its container)."""

    @property
    def tracking_url(self) -> Optional[str]:
        """A page that shows the job (AWS's console), if there is one."""
        return None


class Backend(ABC):
    name: str
    job_word = "container"            # what a job is called in status messages
    long_lived_keys_allowed = False   # may the host's own AWS keys travel to a job (as a private secret)?
    chains_jobs = False               # takes a whole graph at once, and its jobs own their nodes (docstring)

    def check(self, remote_url: str) -> None:
        """Refuse, with one line and before anything is pushed, what this backend cannot run."""

    def image_reference(self, image) -> str:
        """What this backend runs for a resolved image (ResolvedImage): its id on the local engine."""
        return image.id

    def check_settings(self, pipe_cls: str, settings) -> None:
        """Refuse, with one line and before anything is pushed, what this backend cannot give a pipe (its
        RunSettings: GPUs the engine does not have, a timeout shorter than the backend allows)."""

    @abstractmethod
    def submit(self, request: RunRequest) -> Job:
        """Start the job."""

    @abstractmethod
    def job(self, job_id: str) -> Job:
        """A handle on a job known by its id (a record's job id: check it with :meth:`jobs_of` before trusting
        it with anything but a look)."""

    @abstractmethod
    def jobs_of(self, node_id: str, remote: str, hint: Optional[str] = None) -> List[Job]:
        """Jobs of this node on this remote (``url context``) that the backend still holds and a clean-up may
        have to stop (a dead client's container, a live Batch job), found by their labels; ``hint`` (a job id a
        run record names) is one of them only if its labels say so. The same node on another remote is another
        user's run and is left alone."""

    @abstractmethod
    def live_jobs(self, hints: Dict[str, str], remote: str) -> Dict[str, Job]:
        """For many nodes at once (node id -> the job id its record names): the nodes whose named job is live
        and labelled with that node and this remote (a graph's worth of checks in a few calls)."""

    def unfinished_when_few(self, job_ids: List[str], at_most: int, stopping: threading.Event) -> List[str]:
        """(Backends that chain jobs.) Wait until at most ``at_most`` of ``job_ids`` have not succeeded, and
        return those: a client that waits for its run submits a wide fan-in then, depending on them alone.
        Raises DisdatError when one of them failed, KeyboardInterrupt once ``stopping`` is set."""
        raise NotImplementedError(f"{self.name} does not chain jobs")

    def close(self) -> None:
        """Close the backend's connections."""


def backend_name(override: str = "") -> str:
    name = override or config.get("run", "backend")
    if name not in BACKENDS:
        raise DisdatError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)} ([run] backend)")
    return name


_shared: Dict[tuple, Backend] = {}
_shared_lock = threading.Lock()


def _settings_key() -> tuple:
    """What a backend's clients were made from: the environment they read (a test, or a notebook that changes
    AWS_ENDPOINT_URL, gets a backend of its own) and this process (a forked worker never shares sockets)."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "DISDAT_", "DOCKER_"))))
    return os.getpid(), env


def get_backend(name: str = "") -> Backend:
    """This process's instance of the backend ``name`` (default ``[run] backend``)."""
    name = backend_name(name)
    key = (name, _settings_key())
    with _shared_lock:
        if key not in _shared:
            _shared[key] = _make(name)
        return _shared[key]


def _make(name: str) -> Backend:
    if name == "Local":
        from .local import LocalDocker

        return LocalDocker()
    from .aws_batch import AWSBatch

    return AWSBatch()


def close_backends() -> None:
    """Close every backend this process made (at the end of a run)."""
    with _shared_lock:
        made = [b for (_, (pid, _env)), b in _shared.items() if pid == os.getpid()]
        _shared.clear()
    for backend in made:
        backend.close()
