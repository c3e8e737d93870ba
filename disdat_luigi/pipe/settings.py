"""How a pipe runs, apart from what it computes: its resources, retries and timeout. Never part of a node's id
(:mod:`.identity`): raising a pipe's memory and running again reuses every node that already ran.

Pipe classes say it with decorators, as Metaflow's steps do::

    from disdat_luigi import PipeTask, resources, retry, timeout

    @resources(vcpus=4, memory=16384, gpus=1)   # memory in MiB
    @retry(times=2)                              # attempts after the first
    @timeout(seconds=3600)                       # per attempt
    class Train(PipeTask): ...

Where they come from, the first that says wins: a luigi.cfg section ``[run module.PipeClass]`` (keys
``vcpus``, ``memory``, ``gpus``, ``retries``, ``timeout``), then the decorators (a subclass's over its base
class's), then ``[run]``, the defaults of every pipe. Every value is checked where it is written: a
decorator's when the pipe module is imported, a section's when any command starts (:func:`config.validate`).

What they do on each backend is the backend's business (containers/local.py, containers/aws_batch.py).
``luigi.Task.resources`` is Luigi's own scheduler attribute: what the decorators say is kept under
``__disdat_run__``, never under a Task attribute.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Optional, Tuple, TypeVar

from .. import config
from ..errors import DisdatError

KEYS = ("vcpus", "memory", "gpus", "retries", "timeout")
T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class RunSettings:
    vcpus: int = 1
    memory: int = 2048          # MiB
    gpus: int = 0
    retries: int = 0            # attempts after the first
    timeout: Optional[int] = None   # seconds, per attempt

    @property
    def attempts(self) -> int:
        return self.retries + 1


def _declare(decorator: str, values: Dict[str, Tuple[str, Any]]) -> Callable[[T], T]:
    """A class decorator that records ``values`` (argument -> (setting, value)), checked now, with one line
    naming the decorator and the argument as the user wrote them."""
    checked = {}
    for argument, (key, value) in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise DisdatError(f"@{decorator}({argument}={value!r}): {argument} takes a whole number, not "
                              f"{type(value).__name__}")
        try:
            checked[key] = config.check_pipe_setting(key, str(value))
        except ValueError as exc:
            raise DisdatError(f"@{decorator}({argument}={value!r}): use {exc}") from None

    def decorate(cls: T) -> T:
        if not isinstance(cls, type):
            raise DisdatError(f"@{decorator} decorates a pipe class, not {cls!r}")
        own = dict(cls.__dict__.get("__disdat_run__", {}))
        own.update(checked)
        cls.__disdat_run__ = own  # type: ignore[attr-defined]
        return cls

    return decorate


def resources(*, vcpus: Optional[int] = None, memory: Optional[int] = None,
              gpus: Optional[int] = None) -> Callable[[T], T]:
    """The vCPUs, memory (MiB) and GPUs a pipe's container gets (its limits on Local, its request on Batch)."""
    return _declare("resources", {"vcpus": ("vcpus", vcpus), "memory": ("memory", memory), "gpus": ("gpus", gpus)})


def retry(*, times: int) -> Callable[[T], T]:
    """Run a failed pipe again, up to ``times`` more attempts, each in a new container (a timed-out attempt is
    not retried, as on AWS Batch)."""
    return _declare("retry", {"times": ("retries", times)})


def timeout(*, seconds: int) -> Callable[[T], T]:
    """Stop an attempt of the pipe that runs longer than ``seconds``."""
    return _declare("timeout", {"seconds": ("timeout", seconds)})


def defaults() -> RunSettings:
    """``[run]``'s settings: every pipe's, unless its decorators or its own section say otherwise."""
    return RunSettings(**{key: config.get("run", key) for key in KEYS})


def settings_of(cls: type) -> RunSettings:
    """How ``cls`` runs: its ``[run module.Class]`` section over its decorators over ``[run]`` (docstring)."""
    settings = defaults()
    for klass in reversed(cls.__mro__):   # a subclass's decorators over its base classes'
        settings = replace(settings, **klass.__dict__.get("__disdat_run__", {}))
    path = f"{cls.__module__}.{cls.__name__}"
    return replace(settings, **config.pipe_settings(path))
