"""The backend interface: where a node's container runs, behind four verbs (submit, wait, cancel, logs).

A :class:`RunRequest` says *what* to run and nothing about *how*: an image reference, the entrypoint's
arguments, the non-secret environment, the secrets (credentials) apart, labels, a timeout and resources,
and where the data lives. Each backend makes its own choices: the Local one decides mounts (a file://
remote's directory), the network, the user, and hands secrets over on the container's stdin so that
``docker inspect`` never shows them; the AWS Batch one decides job definitions, roles and retries, and takes
only short-lived session credentials, which travel in the job's environment (Batch has no other way: whoever
may describe the job sees them, which is why long-lived keys never go there). So a backend is one module
(``local.py``, ``aws_batch.py``) and nothing else changes.

Backends are chosen by name (``[run] backend``, ``--backend``): :func:`get_backend`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from .. import config
from ..errors import DisdatError

OnLine = Callable[[str], None]          # one line of the container's output, as it comes
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
    timeout: Optional[int] = None       # seconds
    resources: Resources = Resources()
    depends_on: List[str] = field(default_factory=list)   # job ids that must succeed first (Batch)


@dataclass(frozen=True)
class JobResult:
    status: str                         # "succeeded", "failed" or "timed_out"
    reason: str = ""                    # why it failed, in one line
    exit_code: Optional[int] = None
    log_tail: List[str] = field(default_factory=list)


class Backend(ABC):
    name: str
    job_word = "container"            # what a job is called in status messages
    tracking_url: Optional[Callable[[str], str]] = None   # job id -> a page that shows the job

    long_lived_keys_allowed = False   # may the host's own AWS keys travel to a job (as a private secret)?
    chains_jobs = False               # can a whole graph be handed over at once (jobs that wait for jobs)?
    names_jobs = False                # is a job's id the name it was submitted with (known before submit)?
    adopts_jobs = False               # do jobs outlive their client by design (so a new client waits for them)?

    def check(self, remote_url: str) -> None:
        """Refuse, with one line and before anything is pushed, what this backend cannot run."""

    def image_reference(self, image) -> str:
        """What this backend runs for a resolved image (ResolvedImage): its id on the local engine."""
        return image.id

    @abstractmethod
    def submit(self, request: RunRequest) -> str:
        """Start the job; returns its id (a container name, a Batch job id)."""

    @abstractmethod
    def wait(self, job_id: str, on_line: OnLine, on_status: OnStatus,
             timeout: Optional[int] = None) -> JobResult:
        """Follow the job to its end, streaming its output lines; never raises for a failed job."""

    @abstractmethod
    def cancel(self, job_id: str, reason: str) -> None:
        """Stop the job (and, for Local, remove the container): no error when it is already gone."""

    @abstractmethod
    def logs(self, job_id: str) -> List[str]:
        """Every line the job wrote so far ([] when none is known)."""

    def orphans(self, node_id: str, remote: str, hint: Optional[str] = None) -> List[str]:
        """Jobs of this node on this remote (``url context``) still known to the backend (a dead client's
        container, say), found by their labels; ``hint`` (a job id a run record names) is one of them only if
        its labels say so. The same node on another remote is another user's run and is left alone."""
        return []

    def status(self, job_id: str) -> Optional[str]:
        """The job's state as the backend names it (None when it does not know the job)."""
        return None

    def is_live(self, job_id: str) -> bool:
        """The job has not finished (it is queued, starting or running)."""
        return False

    def finished(self, job_id: str) -> Optional[JobResult]:
        """How the job ended, once it has (None while it runs, or when the backend no longer knows it)."""
        return None

    def release(self, job_id: str) -> None:
        """Forget a finished job (Local: remove its container)."""

    def close(self) -> None:
        """Close the backend's connections."""


def backend_name(override: str = "") -> str:
    name = override or config.get("run", "backend")
    if name not in BACKENDS:
        raise DisdatError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)} ([run] backend)")
    return name


def get_backend(name: str = "") -> Backend:
    name = backend_name(name)
    if name == "Local":
        from .local import LocalDocker

        return LocalDocker()
    from .aws_batch import AWSBatch

    return AWSBatch()
