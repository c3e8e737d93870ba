"""Run a pipe class and its upstream pipes in this process (``dsdt apply``).

The graph is expanded first (:mod:`.graph`), its node ids computed with the pipe_root's code version as
the code, then run as one ``luigi.build`` on the local scheduler. A node whose output bundle already exists
(same processing id) is skipped, so an unchanged apply is a no-op; ``force`` adds a nonce to every id so
that all of them run again.
"""
from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Type

import luigi

from ..errors import PipeFailed
from ..store.context import Bundle, Context
from . import session as sessions
from .graph import expand, fresh_root
from .task import PipeTask


@dataclass
class ApplyResult:
    bundle: Bundle               # the output bundle of the pipe that was named
    produced: List[Bundle]       # every bundle this apply made (upstream ones first); empty when up to date

    @property
    def up_to_date(self) -> bool:
        return not self.produced


def apply(ctx: Context, pipe_cls: Type[PipeTask], params: Dict[str, Any], input_bundle: Optional[Bundle],
          output_name: Optional[str], output_tags: Optional[Dict[str, str]] = None, *, code_version: str,
          force: bool = False) -> ApplyResult:
    """``output_name`` None: the root names its output (set_bundle_name, else its class name; see
    :mod:`.identity`)."""
    root = fresh_root(pipe_cls, params)
    graph = expand(root, output_name)
    tags = dict(output_tags or {})
    ids = graph.node_ids(lambda node: code_version, input_bundle.uuid if input_bundle else "",
                         uuidlib.uuid4().hex if force else "", tags)
    session = sessions.ApplySession(context=ctx, input_bundle=input_bundle, graph=graph, ids=ids, output_tags=tags,
                                    code_version=code_version)
    with sessions.active(session):
        existing = session.output_target(root).bundle()
        if existing is not None:
            return ApplyResult(existing, [])
        # Luigi's INFO chatter (scheduling, summaries) is noise for one in-process apply; failures still show,
        # with the pipe's own traceback.
        result = luigi.build([root], local_scheduler=True, workers=1, detailed_summary=True, no_lock=True,
                             log_level="WARNING")
        bundle = session.output_target(root).bundle()
        if bundle is None or result.status not in (luigi.LuigiStatusCode.SUCCESS,
                                                    luigi.LuigiStatusCode.SUCCESS_WITH_RETRY):
            raise PipeFailed(_failure_line(pipe_cls, session.failure))
        return ApplyResult(bundle, list(session.produced))


def _failure_line(pipe_cls: Type[PipeTask], failure: Optional[BaseException]) -> str:
    if failure is None:
        return f"{pipe_cls.pipe_path()} did not complete (see the Luigi log above)"
    return f"{pipe_cls.pipe_path()} failed: {type(failure).__name__}: {failure}"
