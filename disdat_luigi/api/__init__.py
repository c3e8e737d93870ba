"""The Python API, for notebooks and scripts: Disdat's ``disdat.api`` names over the library ``dsdt`` uses.

``from disdat_luigi import api`` and Disdat code moves over by changing its import lines: contexts
(:func:`context`, :func:`ls_contexts`, :func:`current_context`, :func:`switch`, :func:`delete_context`),
remotes (:func:`remote`, :func:`commit`, :func:`push`, :func:`pull`), finding bundles (:func:`search`,
:func:`get`, :func:`rm`), building and reading them (:class:`Bundle`) and running pipes (:func:`apply` in this
process, :func:`run` in containers). Where this package's argument names differ from Disdat's, both are
accepted as keywords (``name``/``human_name``/``bundle_name``, ``params``/``pipeline_args``, ...).

Every call is a thin layer over the functions the CLI calls, so it refuses what ``dsdt`` refuses, with the
same typed errors (importable from here, e.g. :class:`NotFound`), and a refused call changes nothing. An
argument of the wrong type (``force="yes"``, ``workers="2"``, ``params=[...]``, values nested more than
100 levels deep) is refused the same way, with one :class:`DisdatError` line, before anything is done.
Contexts are always named, never implied by the CLI's active one, and no call prints: ``verbose=True`` on
:func:`apply` and :func:`run` shows Luigi's log and the containers' output, as ``dsdt`` does.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Type, Union

from .. import config
from .bundle import Bundle, Tags, home, json_text, opened, selected, tags_of
from ..config import SettingsError
from ..display import safe
from ..errors import (ContainerFailed, DiskFull, DisdatError, IntegrityError, NotFound, PipeFailed, RemoteError,
                     StoreDamaged)
from ..remotes import open_store, remote_of, transfer
from ..store.context import Bundle as StoreBundle, RemoteBinding
from ..store.manifest import check_name, check_uuid

if TYPE_CHECKING:
    from ..pipe.task import PipeTask

__all__ = [
    "Bundle", "apply", "commit", "context", "current_context", "delete_context", "get", "ls_contexts", "pull",
    "push", "remote", "rm", "run", "search", "switch",
    "ContainerFailed", "DiskFull", "DisdatError", "IntegrityError", "NotFound", "PipeFailed", "RemoteError",
    "SettingsError", "StoreDamaged",
]


# -- helpers ---------------------------------------------------------------------------------------------
def _alias(value: Any, alias: Any, names: str) -> Any:
    """Disdat's argument name where this API's differs; both at once is a mistake."""
    if alias is None:
        return value
    if value is not None:
        raise DisdatError(f"give {names}, not both")
    return alias


def _param_values(params: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """Parameters as JSON values (dates and the like as their text, which Luigi's parameters parse)."""
    if params is not None and not isinstance(params, Mapping):
        raise DisdatError(f"params must be a dict of parameter names to values, not a {type(params).__name__}")
    return json.loads(json_text(dict(params or {}), "params"))


def _shown(value: Any) -> str:
    return safe(repr(value))[:60]


def _flags(**flags: Any) -> None:
    """Switches take True or False: a "no" or a 0 would silently mean the opposite, or the default."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise DisdatError(f"{name} takes True or False, not {_shown(value)}")


def _whole(name: str, value: Any, low: int, high: Optional[int], what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise DisdatError(f"{name} takes a whole number {what}, not {_shown(value)}")


def _texts(**texts: Any) -> None:
    """Optional settings given as text (None: the configured default)."""
    for name, value in texts.items():
        if value is not None and not isinstance(value, str):
            raise DisdatError(f"{name} takes a str, not {_shown(value)}")


def _drop(record: logging.LogRecord) -> bool:
    return False


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    """Keep Luigi's log, the containers' output and dsdt's own lines out of a notebook unless asked for."""
    if verbose:
        yield
        return
    log = logging.getLogger("luigi-interface")  # where Luigi and the chain's tasks log
    sink = io.StringIO()
    log.addFilter(_drop)
    try:
        with contextlib.redirect_stderr(sink):
            yield
    finally:
        log.removeFilter(_drop)
        for handler in log.handlers:  # Luigi makes its handler once per process: maybe just now, on the sink
            if isinstance(handler, logging.StreamHandler) and handler.stream is sink:
                handler.setStream(sys.stderr)


# -- contexts and remotes ----------------------------------------------------------------------------------
def context(context_name: str) -> None:
    """Create a local context (an existing one is fine; the store is created first when there is none)."""
    store = home()
    store.init()
    store.create_context(context_name)


def ls_contexts() -> List[str]:
    return home().contexts()


def current_context() -> Optional[str]:
    """The CLI's active context (None when there is none). API calls never use it implicitly."""
    return home().active_name


def switch(context_name: str) -> None:
    """Make ``context_name`` the CLI's active context."""
    home().switch(context_name)


def delete_context(context_name: str) -> None:
    """Delete a local context and its bundles (not the active one; the remote is not touched)."""
    home().delete_context(context_name)


def remote(local_context: str, remote_context: str, remote_url: str) -> None:
    """Bind a local context to ``remote_context`` at ``s3://bucket/prefix`` or ``file:///dir`` (checked first)."""
    check_name(remote_context, "remote context name")
    with opened(local_context) as ctx:
        store = open_store(remote_url)
        try:
            store.check()
        finally:
            store.close()
        ctx.bind_remote(RemoteBinding(remote_context, store.url))


# -- finding -----------------------------------------------------------------------------------------------
def search(local_context: str, name: Optional[str] = None, tags: Tags = None, is_committed: Optional[bool] = None,
           find_intermediates: bool = False, find_roots: bool = False, *,
           human_name: Optional[str] = None) -> List[Bundle]:
    """Every bundle version whose name matches ``name`` (a glob pattern) and that has all ``tags``, newest
    first; ``[]`` when none. ``find_roots``/``find_intermediates``: only what a pipe graph's root (resp. an
    upstream pipe) made; bundles built here or added are roots."""
    pattern = _alias(name, human_name, "name or human_name")
    _flags(find_intermediates=find_intermediates, find_roots=find_roots)
    if is_committed is not None:
        _flags(is_committed=is_committed)
    with opened(local_context) as ctx:
        rows = sorted(ctx.find([pattern] if pattern else [], tags_of(tags), is_committed),
                      key=lambda r: r.created, reverse=True)
        found = [ctx.bundle(r.uuid) for r in rows]
    if find_roots:
        found = [b for b in found if not _is_intermediate(b)]
    if find_intermediates:
        found = [b for b in found if _is_intermediate(b)]
    return [Bundle._wrap(ctx.name, b) for b in found]


def _is_intermediate(b: StoreBundle) -> bool:
    lineage = b.manifest.lineage or {}
    return lineage.get("run_id") not in (None, lineage.get("processing_id"))


def get(local_context: str, name: Optional[str] = None, uuid: Optional[str] = None, tags: Tags = None, *,
        bundle_name: Optional[str] = None) -> Optional[Bundle]:
    """The latest version of ``name`` (or the bundle ``uuid``) that has all ``tags``; None when there is none."""
    name = _alias(name, bundle_name, "name or bundle_name")
    wanted = tags_of(tags)
    with opened(local_context) as ctx:
        if uuid:
            found = ctx.bundle(uuid) if ctx.has(uuid) else None
            found = found if found and all(found.tags.get(k) == v for k, v in wanted.items()) else None
        else:
            try:
                found = selected(ctx, name, None, wanted)
            except NotFound:
                found = None
    return Bundle._wrap(ctx.name, found) if found else None


def rm(local_context: str, name: Optional[str] = None, uuid: Optional[str] = None, tags: Tags = None,
       rm_all: bool = False, rm_old_only: bool = False, *, bundle_name: Optional[str] = None) -> List[str]:
    """Remove the latest version of ``name`` (every version with ``rm_all``, all but the latest with
    ``rm_old_only``) or the bundle ``uuid``; ``rm(ctx, rm_all=True)`` empties the context. Returns the uuids
    removed; a name or uuid that matches nothing is NotFound."""
    name = _alias(name, bundle_name, "name or bundle_name")
    _flags(rm_all=rm_all, rm_old_only=rm_old_only)  # rm_all="no" would remove every version
    wanted = tags_of(tags)
    with opened(local_context) as ctx:
        if uuid or name:
            latest = selected(ctx, name, uuid, wanted)
            versions = [r.uuid for r in ctx.find([latest.name], wanted)] if name else [latest.uuid]
            uuids = versions if rm_all else versions[1:] if rm_old_only else versions[:1]
        elif rm_all:
            uuids = [r.uuid for r in ctx.find(tags=wanted)]
        else:
            raise DisdatError("give a bundle name, a uuid, or rm_all=True (every bundle of the context)")
        ctx.remove(uuids)
    return uuids


# -- sharing -----------------------------------------------------------------------------------------------
def commit(local_context: str, name: Optional[str] = None, tags: Tags = None, uuid: Optional[str] = None, *,
           bundle_name: Optional[str] = None) -> Bundle:
    """Commit the latest version of ``name`` having ``tags`` (or the bundle ``uuid``)."""
    name = _alias(name, bundle_name, "name or bundle_name")
    with opened(local_context) as ctx:
        return Bundle._wrap(ctx.name, ctx.commit(selected(ctx, name, uuid, tags)))


def push(local_context: str, name: Optional[str] = None, tags: Tags = None, uuid: Optional[str] = None, *,
         bundle_name: Optional[str] = None) -> Union[Bundle, List[Bundle]]:
    """Push the latest version of ``name`` (or ``uuid``) to the context's remote; with neither, every committed
    bundle, as a list."""
    name = _alias(name, bundle_name, "name or bundle_name")
    with opened(local_context) as ctx:
        one = bool(name or uuid)
        bundles = ([selected(ctx, name, uuid, tags)] if one
                   else [ctx.bundle(r.uuid) for r in ctx.find(committed=True)])
        with remote_of(ctx) as rem:
            for b in bundles:
                transfer.push(ctx, rem, b, quiet=True)
    pushed = [Bundle._wrap(ctx.name, b) for b in bundles]
    return pushed[0] if one else pushed


def pull(local_context: str, name: Optional[str] = None, uuid: Optional[str] = None, localize: bool = True, *,
         bundle_name: Optional[str] = None) -> Union[Bundle, List[Bundle]]:
    """Bring the latest remote version of ``name`` (or the bundle ``uuid``) into the context, even when it was
    never here; with neither, every bundle on the remote, as a list. Files always come local and verified
    (``localize`` is Disdat's argument, kept so calls move over)."""
    name = _alias(name, bundle_name, "name or bundle_name")
    _flags(localize=localize)
    with opened(local_context) as ctx, remote_of(ctx) as rem:
        one = bool(name or uuid)
        uuids = ([check_uuid(uuid) if uuid else rem.latest(name).uuid] if one  # type: ignore[arg-type]
                 else [u for _, _, u in rem.versions()])
        pulled = [Bundle._wrap(ctx.name, transfer.pull(ctx, rem, u, quiet=True)[0]) for u in uuids]
    return pulled[0] if one else pulled


# -- running pipes -----------------------------------------------------------------------------------------
def _given(name: Optional[str], what: str = "bundle name") -> Optional[str]:
    """A bundle name as Disdat takes it: None or ``"-"`` is none (for an output: the pipe names it)."""
    return None if name in (None, "-") else check_name(name, what)  # type: ignore[arg-type]


def _pipe_class(transform: Any) -> Type[PipeTask]:
    """A PipeTask class given as itself or as ``"module.PipeClass"`` under the pipe_root."""
    from ..pipe.loader import load_pipe_class
    from ..pipe.task import PipeTask

    cls = load_pipe_class(transform, config.pipe_root()) if isinstance(transform, str) else transform
    if not (isinstance(cls, type) and issubclass(cls, PipeTask)):
        raise DisdatError(f"{_shown(cls)} is not a pipe class: it must subclass disdat_luigi.PipeTask")
    return cls


def _pipe_values(cls: Type[PipeTask], params: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    from ..pipe.loader import params_from_json

    return params_from_json(cls, json.dumps(_param_values(params)))


def _root_name(transform: Any, params: Optional[Mapping[str, Any]]) -> str:
    """The name the root pipe gives its output (set_bundle_name, else its class name): what :func:`run` names
    the output when the caller gives none, since a planned run always has its name first."""
    from ..pipe.graph import fresh_root, root_name

    cls = _pipe_class(transform)
    return root_name(fresh_root(cls, _pipe_values(cls, params)), None)


def apply(local_context: str, transform: Union[str, Type[PipeTask]], output_bundle: Optional[str] = None,
          input_tags: Tags = None, output_tags: Tags = None, force: bool = False, force_all: bool = False,
          params: Optional[Mapping[str, Any]] = None, *, input_bundle: Union[str, Bundle, None] = None,
          verbose: bool = False) -> Bundle:
    """Run a pipe class and its upstream pipes in this process, as ``dsdt apply``; returns the output bundle.

    ``transform`` is a PipeTask class or ``"module.PipeClass"`` under the pipe_root. ``params`` take Python
    values or Luigi strings. The output is named as in Disdat: ``output_bundle`` when given, else (None or
    ``"-"``) the name the pipe's ``pipe_requires`` sets with ``set_bundle_name``, else its class name, so
    ``api.get(ctx, that_name)`` finds it; upstream outputs are named by their own ``set_bundle_name``, else
    ``<output>-<dependency name>`` (see :mod:`disdat_luigi.pipe.identity`, which also lists where this
    differs from Disdat). ``input_bundle`` (a name, its latest version with ``input_tags``, or a Bundle)
    becomes ``pipeline_input``. Unchanged inputs, parameters, output name and code: the existing output is
    returned and nothing runs; ``force`` (or ``force_all``) runs the whole graph again. The code version is
    the pipe_root's (``DISDAT_PIPE_ROOT``, default the current directory), so keep pipe classes there. A
    failing pipe raises PipeFailed and leaves no bundle.
    """
    from ..pipe.apply import apply as apply_pipe
    from ..pipe.loader import code_version

    _flags(force=force, force_all=force_all, verbose=verbose)
    if not (input_bundle is None or isinstance(input_bundle, (str, Bundle))):
        raise DisdatError(f"input_bundle takes a bundle name or an api.Bundle, not {_shown(input_bundle)}")
    output_name = _given(output_bundle)
    in_tags, out_tags = tags_of(input_tags), tags_of(output_tags)
    with opened(local_context) as ctx:
        cls = _pipe_class(transform)
        values = _pipe_values(cls, params)
        if isinstance(input_bundle, Bundle):
            source: Optional[StoreBundle] = input_bundle._closed_store(ctx)
        elif input_bundle not in (None, "-"):
            source = ctx.latest(input_bundle, in_tags)  # type: ignore[arg-type]
        elif in_tags:
            raise DisdatError("input_tags need an input_bundle")
        else:
            source = None
        with _quiet(verbose):
            result = apply_pipe(ctx, cls, values, source, output_name, out_tags,
                                code_version=code_version(config.pipe_root()), force=force or force_all)
        return Bundle._wrap(ctx.name, result.bundle)


def run(local_context: str, input_bundle: Optional[str], output_bundle: Optional[str],
        pipe_cls: Union[str, Type[PipeTask]], params: Optional[Mapping[str, Any]] = None,
        backend: Optional[str] = None, force: bool = False, *, input_tags: Tags = None, output_tags: Tags = None,
        push_input: bool = True, aws_session_token_duration: int = 0, workers: Optional[int] = None,
        scheduler_url: Optional[str] = None, pull_intermediates: bool = False, force_all: bool = False,
        pipeline_args: Optional[Mapping[str, Any]] = None, verbose: bool = False) -> Bundle:
    """``dsdt run`` from Python: run a pipe class (``"module.PipeClass"`` under the pipe_root, or the class) and
    its upstream pipes in containers built by ``dsdt dockerize``, as a Luigi graph; returns the output bundle,
    pulled into ``local_context``. ``input_bundle`` is a committed bundle's name, or None for no input; it
    is pushed to the context's remote first unless ``push_input=False``. ``output_bundle`` None (or ``"-"``)
    names the output as :func:`apply` does. ``backend`` defaults to ``[run] backend`` (Local);
    ``aws_session_token_duration`` gives the containers temporary STS credentials only. An identical earlier
    run is reused; ``force`` (or ``force_all``) runs the graph again."""
    from ..chain.run import RunOptions, output_bundle as output_of, run as run_chain

    params = _alias(params, pipeline_args, "params or pipeline_args")
    _flags(force=force, force_all=force_all, push_input=push_input, pull_intermediates=pull_intermediates,
           verbose=verbose)
    _whole("aws_session_token_duration", aws_session_token_duration, 0, None, "of seconds")
    if workers is not None:
        _whole("workers", workers, 1, 64, "from 1 to 64")
    _texts(backend=backend, scheduler_url=scheduler_url)
    context = check_name(local_context, "context name")
    input_name = _given(input_bundle, "input bundle name")
    values = _param_values(params)
    in_tags, out_tags = tags_of(input_tags), tags_of(output_tags)
    pipe_path = pipe_cls if isinstance(pipe_cls, str) else _pipe_class(pipe_cls).pipe_path()
    options = RunOptions(
        input_bundle=input_name, output_bundle=_given(output_bundle) or _root_name(pipe_cls, params),
        pipe_cls=pipe_path, pipe_params=values, backend=backend or "", input_tags=in_tags, output_tags=out_tags,
        force=force or force_all, push_input=push_input, session_token_seconds=aws_session_token_duration,
        pull_intermediates=pull_intermediates, workers=workers, scheduler_url=scheduler_url, context=context,
        verbose=verbose)
    with _quiet(verbose):
        plan = run_chain(options)
    return Bundle._wrap(plan.context, output_of(plan))
