"""The pipe API: ``from disdat_luigi import PipeTask``.

A pipe class is a Luigi task whose Luigi parameters are its parameters. As in Disdat:

* ``pipe_requires(self)`` declares upstream pipes with ``self.add_dependency(name, PipeClass, params)``
  and may name its own output with ``self.set_bundle_name(name)``;
* ``pipe_run(self, ...)`` is called with only the arguments it declares: each upstream output under its
  dependency name (the Python object that upstream returned), ``pipeline_input`` (the input bundle's data,
  files as local paths) and, for convenience, any of the pipe's own parameters by name;
* ``self.create_output_file(relpath)`` gives a ``luigi.LocalTarget`` inside the output bundle;
* whatever ``pipe_run`` returns becomes the output bundle (dict, list, scalar, str, files or targets, a
  pandas DataFrame).

Each pipe's output is a bundle found by its *processing id*: a hash of the class, its parameters, its
upstream processing ids, the input bundle, the pipe_root's code version and, for the last pipe, the output
name and tags. Luigi's completeness check is "a bundle with that processing id exists", so an unchanged
pipe is not run twice.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any, Dict, Optional, Tuple, Type

import luigi

from . import session as sessions
from ..store.context import Bundle
from ..errors import DisdatError
from ..store.manifest import check_name, now_utc


class PipeOutputTarget(luigi.Target):
    """The pipe's output bundle exists in the session's context."""

    def __init__(self, pipe: "PipeTask"):
        self.pipe = pipe

    def bundle(self) -> Optional[Bundle]:
        return sessions.current().context.by_processing_id(self.pipe.processing_id())

    def exists(self) -> bool:
        return self.bundle() is not None


class PipeTask(luigi.Task):
    """Base class of pipe classes (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._dependencies: Dict[str, Tuple[Type["PipeTask"], dict]] = {}
        self._required: Optional[Dict[str, "PipeTask"]] = None
        self._bundle_name: Optional[str] = None
        self._dependency_name: Optional[str] = None  # what the first downstream pipe calls this one
        self._staging = None

    # -- the pipe API --------------------------------------------------------------------------------
    def pipe_requires(self) -> None:
        """Declare upstream pipes with add_dependency (optional)."""

    def pipe_run(self, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define pipe_run")

    def add_dependency(self, name: str, pipe_class: Type["PipeTask"], params: Optional[dict] = None) -> None:
        if not (isinstance(pipe_class, type) and issubclass(pipe_class, PipeTask)):
            raise DisdatError(f"add_dependency({name!r}, ...): {pipe_class!r} is not a PipeTask class")
        if params is not None and not isinstance(params, dict):
            raise DisdatError(f"add_dependency({name!r}, ...): params must be a dict")
        if name in self._dependencies:
            raise DisdatError(f"{type(self).__name__} declares the dependency {name!r} twice")
        self._dependencies[name] = (pipe_class, dict(params or {}))

    def set_bundle_name(self, name: str) -> None:
        self._bundle_name = check_name(name)

    def create_output_file(self, relpath: str) -> luigi.LocalTarget:
        """A file inside this pipe's output bundle; return it (or its path) from pipe_run to keep it."""
        if self._staging is None:
            raise DisdatError("create_output_file can only be called from pipe_run")
        return luigi.LocalTarget(str(self._staging.new_file(relpath)))

    def get_output_dir(self) -> str:
        if self._staging is None:
            raise DisdatError("get_output_dir can only be called from pipe_run")
        return str(self._staging.files_dir)

    # -- Luigi ---------------------------------------------------------------------------------------
    def requires(self) -> Dict[str, "PipeTask"]:
        if self._required is None:
            self._dependencies = {}
            self.pipe_requires()
            required = {}
            for name, (cls, params) in self._dependencies.items():
                task = cls(**params)
                if task._dependency_name is None:
                    task._dependency_name = name
                required[name] = task
            self._required = required
        return self._required

    def output(self) -> PipeOutputTarget:
        return PipeOutputTarget(self)

    def run(self) -> None:
        s = sessions.current()
        upstream = {name: t.output().bundle() for name, t in self.requires().items()}
        missing = [name for name, b in upstream.items() if b is None]
        if missing:
            raise DisdatError(f"{type(self).__name__}: upstream output {missing[0]!r} is missing")
        kwargs = self._pipe_run_arguments(s, upstream)  # type: ignore[arg-type]
        staging = self._staging = s.context.stage()
        start = now_utc()
        try:
            value = self.pipe_run(**kwargs)
            bundle = s.context.add_value(self.bundle_name(), value, tags=s.output_tags if self._is_root(s) else {},
                                         committed=s.commit, lineage=self._lineage(s, upstream, start),
                                         staging=staging)
        except BaseException as exc:
            staging.abandon()
            s.failure = s.failure or exc  # the line `dsdt apply` and the entrypoint report
            raise
        finally:
            self._staging = None
        s.produced.append(bundle)

    def _lineage(self, s: sessions.ApplySession, upstream: Dict[str, Bundle], start: str) -> Dict[str, Any]:
        inputs = {name: b.uuid for name, b in upstream.items()}
        if s.input_bundle is not None:
            inputs["pipeline_input"] = s.input_bundle.uuid
        lineage = {"pipe": self.pipe_path(), "params": self.to_str_params(only_significant=True), "inputs": inputs,
                   "processing_id": self.processing_id(), "code_version": s.code_version, "image_id": s.image_id,
                   "start": start, "stop": now_utc(), ("run_id" if self._is_root(s) else "part_of_run"): s.run_id}
        return {k: v for k, v in lineage.items() if v is not None}

    # -- identity ------------------------------------------------------------------------------------
    @classmethod
    def pipe_path(cls) -> str:
        return f"{cls.__module__}.{cls.__name__}"

    def _is_root(self, s: sessions.ApplySession) -> bool:
        return self.task_id == s.root_task_id

    def bundle_name(self) -> str:
        s = sessions.current()
        if self._is_root(s):
            return s.output_name
        self.requires()  # pipe_requires may call set_bundle_name
        return self._bundle_name or f"{s.output_name}-{self._dependency_name or type(self).__name__.lower()}"

    def processing_id(self) -> str:
        s = sessions.current()
        parts: Dict[str, Any] = {
            "pipe": self.pipe_path(), "params": self.to_str_params(only_significant=True),
            "upstream": {name: t.processing_id() for name, t in sorted(self.requires().items())},
            "input": s.input_bundle.uuid if s.input_bundle else None, "code": s.code_version, "nonce": s.nonce,
        }
        if self._is_root(s):
            parts.update(output=s.output_name, tags=s.output_tags)
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def _pipe_run_arguments(self, s: sessions.ApplySession, upstream: Dict[str, Bundle]) -> Dict[str, Any]:
        """Only what pipe_run declares (everything it may receive when it takes **kwargs)."""
        available = {name: b.data(mark_text=True) for name, b in upstream.items()}
        available["pipeline_input"] = s.input_bundle.data(mark_text=True) if s.input_bundle is not None else None
        params = dict(self.param_kwargs)
        signature = inspect.signature(self.pipe_run)
        if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            return available
        kwargs = {}
        for name, p in signature.parameters.items():
            if p.kind in (p.VAR_POSITIONAL,):
                continue
            if name in available:
                kwargs[name] = available[name]
            elif name in params:
                kwargs[name] = params[name]
            elif p.default is p.empty:
                raise DisdatError(f"{type(self).__name__}.pipe_run takes {name!r}, which is neither an upstream "
                                  f"dependency ({', '.join(upstream) or 'none'}), pipeline_input nor a parameter")
        return kwargs
