"""Planning and running one containerized run: what ``dsdt run`` and RunPipe share.

:func:`plan_run` turns what the user typed (names, tags, a pipe class, parameters) into exact identities
(input uuid, image id, canonical parameters) and the run id, checking everything that can be checked
before anything is pushed or started: context, remote, pipe class, parameters, image (present and built
from the code on disk), input (present, committed, on the remote with --no-push-input).

``run_id`` = hash(pipe class, parameters, input uuid, image id, output name, output tags): the same inputs
and code make the same run, which is already complete; ``--force`` adds a nonce.
"""
from __future__ import annotations

import hashlib
import json
import sys
import uuid as uuidlib
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

import luigi

from .. import config
from ..containers.backend import backend_name, get_backend
from ..store.context import Bundle, Context
from ..errors import DisdatError, NotFound
from ..store.home import Home
from ..store.manifest import check_name


@dataclass(frozen=True)
class RunPlan:
    context: str
    pipe_cls: str
    pipe_params: str            # canonical JSON: every parameter as a Luigi string
    input_uuid: str             # "" when the pipe has no input
    output_bundle: str
    output_tags: Dict[str, str]
    image: str                  # image id
    backend: str
    run_id: str
    push_input: bool
    session_token_seconds: int

    def task_params(self) -> dict:
        """The parameters of ExecuteContainer and PullOutput."""
        return asdict(self)


def make_run_id(pipe_cls: str, pipe_params: str, input_uuid: str, image_id: str, output_bundle: str,
                output_tags: Dict[str, str], nonce: str = "") -> str:
    key = json.dumps([pipe_cls, json.loads(pipe_params), input_uuid, image_id, output_bundle,
                      sorted(output_tags.items()), nonce])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _resolve_input(ctx: Context, name: Optional[str], tags: Dict[str, str], push_input: bool) -> str:
    if name is None:
        if tags:
            raise DisdatError("input tags (-it) need an input bundle, not -")
        return ""
    if push_input:
        bundle: Bundle = ctx.latest(name, tags)
        if not bundle.committed:
            raise DisdatError(f"input {name} ({bundle.uuid}) is not committed: `dsdt commit -u {bundle.uuid}` "
                              f"first (runs push their input)")
        return bundle.uuid
    from ..remotes import remote_of

    with remote_of(ctx) as remote:
        if ctx.index.latest(name, tags) is not None:
            uuid = ctx.latest(name, tags).uuid
            if not remote.has_bundle(uuid):
                raise NotFound(f"input {name} ({uuid}) is not on the remote {remote.url}: push it (`dsdt push "
                               f"{name}`) or drop --no-push-input")
            return uuid
        return remote.latest(name, tags).uuid


def plan_run(*, context: Optional[str], input_bundle: Optional[str], output_bundle: str, pipe_cls: str,
             pipe_params: str, backend: str, input_tags: Dict[str, str], output_tags: Dict[str, str], force: bool,
             push_input: bool, session_token_seconds: int) -> RunPlan:
    from ..containers.dockerize import resolve_image
    from ..pipe.loader import canonical_params, load_pipe_class, params_from_json

    ctx = Home().context(context)
    check_name(output_bundle)
    ctx.require_remote()
    backend = get_backend(backend_name(backend)).name  # an unavailable backend fails here, before any push
    root = config.pipe_root()
    cls = load_pipe_class(pipe_cls, root)
    canonical = canonical_params(cls, params_from_json(cls, pipe_params))
    image = resolve_image(cls.__module__, root)
    input_uuid = _resolve_input(ctx, input_bundle, input_tags, push_input)
    nonce = uuidlib.uuid4().hex if force else ""
    run_id = make_run_id(pipe_cls, canonical, input_uuid, image.id, output_bundle, output_tags, nonce)
    return RunPlan(context=ctx.name, pipe_cls=pipe_cls, pipe_params=canonical, input_uuid=input_uuid,
                   output_bundle=output_bundle, output_tags=dict(output_tags), image=image.id, backend=backend,
                   run_id=run_id, push_input=push_input, session_token_seconds=session_token_seconds)


_failures: List[BaseException] = []


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _remember_failure(task: luigi.Task, exception: BaseException) -> None:
    """The failure to report in dsdt run's one error line."""
    _failures.append(exception)


def run(*, input_bundle: Optional[str], output_bundle: str, pipe_cls: str, pipe_args: Sequence[str],
        backend: Optional[str], input_tags: Dict[str, str], output_tags: Dict[str, str], force: bool,
        push_input: bool, session_token_seconds: int) -> int:
    """``dsdt run``: plan (one-line errors), then the RunPipe chain on the local or central scheduler."""
    from ..pipe.loader import canonical_params, load_pipe_class, parse_pipe_args
    from .tasks import RunPipe

    cls = load_pipe_class(pipe_cls, config.pipe_root())
    task = RunPipe(input_bundle=input_bundle or "-", output_bundle=output_bundle, pipe_cls=pipe_cls,
                   pipe_params=canonical_params(cls, parse_pipe_args(cls, pipe_args)), backend=backend or "",
                   input_tags=input_tags, output_tags=output_tags, force=force, no_push_input=not push_input,
                   use_aws_session_token=session_token_seconds)
    plan = task.plan()
    print(f"run {plan.run_id}: {pipe_cls} on {plan.backend}, image {plan.image[:19]}", file=sys.stderr)

    _failures.clear()
    local = config.get("run", "local_scheduler")
    result = luigi.build([task], local_scheduler=local, workers=1, detailed_summary=True,
                         log_level=config.get_config().get("core", "log_level", fallback="INFO"))
    if result.status not in (luigi.LuigiStatusCode.SUCCESS, luigi.LuigiStatusCode.SUCCESS_WITH_RETRY):
        reason = str(_failures[-1]).splitlines()[0] if _failures else result.status.value[1]
        raise DisdatError(f"the run failed: {reason}")
    bundle = task.output().bundle()
    print(f"{bundle.name} {bundle.uuid} is in context {plan.context} (`dsdt cat {bundle.name}`)")
    return 0
