"""Run one pipe instance in this process and store what it returns as a bundle.

The one place a ``pipe_run`` is called, by ``dsdt apply`` (for each node of its graph) and by the container
entrypoint (for the one node it runs): it gets only the arguments it declares, writes its files into the
bundle's staging directory, and its return value becomes the output bundle, with its lineage. A failure
leaves nothing behind.
"""
from __future__ import annotations

import inspect
from typing import Any, Dict, Mapping, Optional

from ..errors import DisdatError
from ..store.context import Bundle, Context
from ..store.manifest import now_utc
from .task import PipeTask


def pipe_run_arguments(task: PipeTask, upstream: Mapping[str, Bundle],
                       input_bundle: Optional[Bundle]) -> Dict[str, Any]:
    """Only what pipe_run declares (everything it may receive when it takes **kwargs)."""
    available = {name: b.data(mark_text=True) for name, b in upstream.items()}
    available["pipeline_input"] = input_bundle.data(mark_text=True) if input_bundle is not None else None
    params = dict(task.param_kwargs)
    signature = inspect.signature(task.pipe_run)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return available
    kwargs = {}
    for name, p in signature.parameters.items():
        if p.kind is p.VAR_POSITIONAL:
            continue
        if name in available:
            kwargs[name] = available[name]
        elif name in params:
            kwargs[name] = params[name]
        elif p.default is p.empty:
            raise DisdatError(f"{type(task).__name__}.pipe_run takes {name!r}, which is neither an upstream "
                              f"dependency ({', '.join(upstream) or 'none'}), pipeline_input nor a parameter")
    return kwargs


def produce(ctx: Context, task: PipeTask, *, name: str, tags: Mapping[str, str], upstream: Mapping[str, Bundle],
            input_bundle: Optional[Bundle], lineage: Mapping[str, Any], commit: bool = False) -> Bundle:
    """Call ``task.pipe_run`` and store its value as bundle ``name`` in ``ctx`` (see the module docstring)."""
    kwargs = pipe_run_arguments(task, upstream, input_bundle)
    staging = task._staging = ctx.stage()
    inputs = {dep: b.uuid for dep, b in upstream.items()}
    if input_bundle is not None:
        inputs["pipeline_input"] = input_bundle.uuid
    start = now_utc()
    try:
        value = task.pipe_run(**kwargs)
        full = {"pipe": task.pipe_path(), "params": task.to_str_params(), "inputs": inputs, **lineage,
                "start": start, "stop": now_utc()}
        return ctx.add_value(name, value, tags=dict(tags), committed=commit,
                             lineage={k: v for k, v in full.items() if v is not None}, staging=staging)
    except BaseException:
        staging.abandon()
        raise
    finally:
        task._staging = None
