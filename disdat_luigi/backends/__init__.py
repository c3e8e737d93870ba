"""Container backends behind one small interface: Local (Docker engine) now, AWSBatch to come."""
from __future__ import annotations

from .. import config
from ..errors import DisdatError
from .base import Backend, ContainerSpec

BACKENDS = ("Local", "AWSBatch")


def backend_name(override: str = "") -> str:
    name = override or config.setting("run", "backend") or "Local"
    if name not in BACKENDS:
        raise DisdatError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)} ([run] backend)")
    return name


def get_backend(name: str) -> Backend:
    if backend_name(name) == "Local":
        from .local import LocalDocker

        return LocalDocker()
    raise DisdatError("the AWSBatch backend is not available in this version: use --backend Local")


__all__ = ["BACKENDS", "Backend", "ContainerSpec", "backend_name", "get_backend"]
