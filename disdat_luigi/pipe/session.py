"""The apply session: where an in-process run of pipe classes reads its input and writes its bundles.

:func:`disdat_luigi.apply.apply` opens one for the length of a ``luigi.build``; every PipeTask of that run
finds it with :func:`current`. Pipe classes keep only their own Luigi parameters, as in Disdat, so the
context, the input bundle and the output naming travel here instead of as task parameters.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

from ..store.context import Bundle, Context
from ..errors import DisdatError


@dataclass
class ApplySession:
    context: Context
    input_bundle: Optional[Bundle]
    output_name: str
    output_tags: Dict[str, str]
    root_task_id: str
    code_version: str
    nonce: str = ""                  # set by --force: every processing id changes, so everything runs again
    commit: bool = False             # bundles made in a container are committed (they are pushed)
    run_id: Optional[str] = None     # the run this apply is the body of (in a container)
    image_id: Optional[str] = None
    produced: List[Bundle] = field(default_factory=list)
    failure: Optional[BaseException] = None


_current: Optional[ApplySession] = None


def current() -> ApplySession:
    if _current is None:
        raise DisdatError("pipe classes run through `dsdt apply`, `dsdt run` or `luigi --module disdat_luigi "
                          "RunPipe`, not on their own")
    return _current


@contextlib.contextmanager
def active(session: ApplySession) -> Iterator[ApplySession]:
    global _current
    if _current is not None:
        raise DisdatError("an apply is already running in this process")
    _current = session
    try:
        yield session
    finally:
        _current = None
