"""Typed errors. A DisdatError is a user error: its message is one line saying what is wrong and what to do.

The CLI prints it as ``dsdt: error: <message>`` and exits non-zero, without a traceback. Anything that is
not a DisdatError is a bug and keeps its traceback.
"""
from __future__ import annotations


class DisdatError(Exception):
    """A user-facing error with a one-line message."""


class NotFound(DisdatError):
    """A context, bundle, remote object, pipe class or image does not exist."""


class IntegrityError(DisdatError):
    """Bytes that do not match their recorded sha256, or a manifest that breaks the format's rules."""


class StoreDamaged(DisdatError):
    """The local store is not as it was written (a file, manifest or index damaged or gone); the message says
    what and that `dsdt check --repair` fixes it."""


class DiskFull(DisdatError):
    """A write ran out of space; the message says what, where and how much was needed."""


class RemoteError(DisdatError):
    """The remote cannot be reached, refuses the credentials, or lacks a bucket."""


class PipeFailed(DisdatError):
    """A pipe class raised while running in-process (dsdt apply, or inside the container)."""


class ContainerFailed(DisdatError):
    """A container (local Docker or AWS Batch job) exited non-zero; carries its last log lines."""

    def __init__(self, message: str, logs: list[str] | None = None, exit_code: int | None = None,
                 cause: str = ""):
        super().__init__(message)
        self.logs = list(logs or [])
        self.exit_code = exit_code
        self.cause = cause      # what kind of failure (containers.backend.CAUSES), when known

    def __str__(self) -> str:
        text = super().__str__()
        if self.logs:
            text += "\n--- last container log lines ---\n" + "\n".join(self.logs)
        return text
