"""The apply session: where an in-process run of a pipe graph (``dsdt apply``) reads and writes.

:func:`disdat_luigi.pipe.apply.apply` opens one for the length of a ``luigi.build``; every PipeTask of that
build finds it with :func:`current`. Pipe classes keep only their own Luigi parameters, as in Disdat, so
the context, the input bundle and the graph's identities travel here instead of as task parameters.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional

import luigi

from ..errors import DisdatError
from ..store.context import Bundle, Context
from .graph import Graph
from .produce import produce
from .task import PipeTask


class PipeOutputTarget(luigi.Target):
    """The bundle with this processing id (node id) exists in the context."""

    def __init__(self, context: Context, processing_id: str):
        self.context = context
        self.processing_id = processing_id

    def bundle(self) -> Optional[Bundle]:
        return self.context.by_processing_id(self.processing_id)

    def exists(self) -> bool:
        return self.bundle() is not None


@dataclass
class ApplySession:
    context: Context
    input_bundle: Optional[Bundle]
    graph: Graph
    ids: Dict[str, str]              # node key -> node id (the processing id of its output)
    output_tags: Dict[str, str]
    code_version: str
    produced: List[Bundle] = field(default_factory=list)
    failure: Optional[BaseException] = None

    def output_target(self, task: PipeTask) -> PipeOutputTarget:
        return PipeOutputTarget(self.context, self.ids[task.task_id])

    def run(self, task: PipeTask) -> None:
        node = self.graph.nodes[task.task_id]
        found = {name: self.output_target(dep).bundle() for name, dep in task.requires().items()}
        missing = [name for name, b in found.items() if b is None]
        if missing:
            raise DisdatError(f"{node.pipe_cls}: upstream output {missing[0]!r} is missing")
        upstream: Dict[str, Bundle] = {name: b for name, b in found.items() if b is not None}
        try:
            bundle = produce(self.context, task, name=node.bundle_name,
                             tags=self.output_tags if node.is_root else {}, upstream=upstream,
                             input_bundle=self.input_bundle,
                             lineage={"processing_id": self.ids[task.task_id], "run_id": self.ids[self.graph.root],
                                      "code_version": self.code_version})
        except BaseException as exc:
            self.failure = self.failure or exc  # the line `dsdt apply` reports
            raise
        self.produced.append(bundle)


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
