"""Run a pipe class in this process (``dsdt apply``, and the body of every container run).

The pipe and its upstream pipes run as one ``luigi.build`` on the local scheduler; the apply session says
where they read and write. Pipes whose output bundle already exists (same processing id) are skipped, so
an unchanged apply is a no-op; ``force`` changes every processing id so that all of them run again.
"""
from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Type

import luigi
from luigi.task_register import Register

from . import session as sessions
from ..store.context import Bundle, Context
from ..errors import PipeFailed
from ..store.manifest import check_name
from .task import PipeTask


@dataclass
class ApplyResult:
    bundle: Bundle               # the output bundle of the pipe that was named
    produced: List[Bundle]       # every bundle this apply made (upstream ones first); empty when up to date

    @property
    def up_to_date(self) -> bool:
        return not self.produced


def apply(ctx: Context, pipe_cls: Type[PipeTask], params: Dict[str, Any], input_bundle: Optional[Bundle],
          output_name: str, output_tags: Optional[Dict[str, str]] = None, *, code_version: str, force: bool = False,
          commit: bool = False, run_id: Optional[str] = None, image_id: Optional[str] = None) -> ApplyResult:
    check_name(output_name)
    Register.clear_instance_cache()  # pipe instances cache requirements and names per session
    root = pipe_cls(**params)
    session = sessions.ApplySession(
        context=ctx, input_bundle=input_bundle, output_name=output_name, output_tags=dict(output_tags or {}),
        root_task_id=root.task_id, code_version=code_version, nonce=uuidlib.uuid4().hex if force else "",
        commit=commit, run_id=run_id, image_id=image_id)
    with sessions.active(session):
        existing = root.output().bundle()
        if existing is not None:
            return ApplyResult(existing, [])
        # Luigi's INFO chatter (scheduling, summaries) is noise for one in-process apply; failures still show,
        # with the pipe's own traceback.
        result = luigi.build([root], local_scheduler=True, workers=1, detailed_summary=True, no_lock=True,
                             log_level="WARNING")
        bundle = root.output().bundle()
        if bundle is None or result.status not in (luigi.LuigiStatusCode.SUCCESS,
                                                    luigi.LuigiStatusCode.SUCCESS_WITH_RETRY):
            raise PipeFailed(_failure_line(pipe_cls, session.failure))
        return ApplyResult(bundle, list(session.produced))


def _failure_line(pipe_cls: Type[PipeTask], failure: Optional[BaseException]) -> str:
    if failure is None:
        return f"{pipe_cls.pipe_path()} did not complete (see the Luigi log above)"
    return f"{pipe_cls.pipe_path()} failed: {type(failure).__name__}: {failure}"

