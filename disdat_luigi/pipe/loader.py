"""Finding pipe classes under a pipe_root, reading their parameters, and naming their code version.

The pipe_root is ``[disdat] pipe_root`` in luigi.cfg, or ``DISDAT_PIPE_ROOT``, default the current
directory; ``module.submodule.PipeClass`` is imported from it and from nowhere else. Importing runs a
module, so its top-level module is looked for under the pipe_root first (a module, or a package with an
``__init__.py``) and anything else is refused before it runs: ``this.X`` must not print the Zen of Python,
nor ``os.system`` be looked up in ``os``. A module under the pipe_root whose name another module already
has in this process (one already imported, a built-in, the standard library's, an installed package's) is
refused too: the pipe_root goes on ``sys.path`` so that pipe modules import each other, and one name cannot
mean two modules in a process, so whichever was imported first would silently replace the other for every
later import.

Parameters come in Luigi's own command-line form (``--min-len 3``) or as a JSON object (``{"min_len": 3}``)
and always end up in one canonical form: ``{name: luigi-serialized string}`` for every parameter, which is
what run ids hash and what the container receives.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from importlib.machinery import PathFinder
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence, Type

import luigi

from ..errors import DisdatError, NotFound
from ..store.values import nests_too_deep, too_deep
from .task import PipeTask

_SKIP_DIRS = {"__pycache__", "build", "dist"}


def _on_path(pipe_root: Path) -> None:
    root = str(pipe_root)
    if root not in sys.path:
        sys.path.insert(0, root)


def _under(path: str, pipe_root: Path) -> bool:
    return Path(path).resolve().is_relative_to(pipe_root.resolve())


def _loaded_from(module: ModuleType) -> Optional[str]:
    """The file (or package directory) a loaded module came from; None for a module built into Python."""
    return getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", None) or []), None)


def _elsewhere(top: str, pipe_root: Path) -> Optional[str]:
    """What else the top-level name ``top`` is in this process, outside the pipe_root: a module already
    imported, or one an import would find (built-in, frozen, on sys.path, from an installed package's
    finder). None when the pipe_root's module is the only one. Namespace directories do not count: a
    regular module wins over them."""
    loaded = sys.modules.get(top)
    if loaded is not None:
        origin = _loaded_from(loaded)
        if origin is None:
            return "a module built into Python"
        return None if _under(origin, pipe_root) else f"the module already imported from {origin}"
    others = [p for p in sys.path if isinstance(p, str) and Path(p or ".").resolve() != pipe_root.resolve()]
    for finder in sys.meta_path:
        if finder is PathFinder:
            spec = PathFinder.find_spec(top, others)
        else:
            find = getattr(finder, "find_spec", None)
            spec = find(top, None) if find else None
        if spec is None or spec.origin is None:
            continue
        if not spec.has_location:
            return f"a {spec.origin} module of Python"
        if not _under(spec.origin, pipe_root):
            return f"the module at {spec.origin}"
    return None


def import_pipe_module(module_name: str, pipe_root: Path) -> ModuleType:
    """``module.submodule`` from the pipe_root, and only from there (see the module docstring): nothing is
    imported, so nothing runs, unless its top-level module is the pipe_root's and has no other meaning."""
    top = module_name.partition(".")[0]
    spec = PathFinder.find_spec(top, [str(pipe_root)])
    if spec is None:
        raise NotFound(f"no module {top} under the pipe_root {pipe_root} (set [disdat] pipe_root or "
                       f"DISDAT_PIPE_ROOT)")
    if spec.origin is None:
        raise NotFound(f"{pipe_root / top} is not a package: add an __init__.py to it")
    other = _elsewhere(top, pipe_root)
    if other:
        raise DisdatError(f"module {top} under the pipe_root {pipe_root} has the name of {other}: rename it (one "
                          f"name is one module in a process)")
    _on_path(pipe_root)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NotFound(f"no module {exc.name} under the pipe_root {pipe_root} (set [disdat] pipe_root or "
                           f"DISDAT_PIPE_ROOT)") from None
        raise DisdatError(f"importing {module_name} failed: {exc}") from None
    except Exception as exc:  # the user's module itself is broken
        raise DisdatError(f"importing {module_name} failed: {type(exc).__name__}: {exc}") from None


def load_pipe_class(dotted: str, pipe_root: Path) -> Type[PipeTask]:
    """``module.submodule.PipeClass`` under ``pipe_root`` (clear errors before anything is pushed or run)."""
    module_name, _, class_name = dotted.rpartition(".")
    if not module_name or not all(part.isidentifier() for part in dotted.split(".")):
        raise DisdatError(f"pipe class {dotted!r} must be module.PipeClass (module path under the pipe_root)")
    if not pipe_root.is_dir():
        raise NotFound(f"pipe_root {pipe_root} is not a directory: set [disdat] pipe_root or DISDAT_PIPE_ROOT")
    try:
        module = import_pipe_module(module_name, pipe_root)
    except NotFound as exc:
        raise NotFound(f"unknown pipe class {dotted}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise NotFound(f"unknown pipe class {dotted}: module {module_name} has no {class_name}")
    if not (isinstance(cls, type) and issubclass(cls, PipeTask)):
        raise DisdatError(f"{dotted} is not a pipe class: it must subclass disdat_luigi.PipeTask")
    return cls


def _params(cls: Type[PipeTask]) -> Dict[str, luigi.Parameter]:
    return dict(cls.get_params())


def _parse_one(cls: Type[PipeTask], name: str, param: luigi.Parameter, raw: Any) -> Any:
    """A parameter's value from its Luigi string, or from a typed JSON value taken through that string form,
    so that ``3``, ``"3"`` and ``--x 3`` give one value (and ``3.7`` for an IntParameter is refused)."""
    try:
        text = raw if isinstance(raw, str) else param.serialize(param.normalize(raw))
        if not isinstance(raw, (str, bool)) and isinstance(param, luigi.BoolParameter):
            raise ValueError("use true or false")
        value = param.parse(text)
        param.serialize(value)
        return value
    except Exception as exc:
        raise DisdatError(f"bad value {raw!r} for --{name.replace('_', '-')} of {cls.__name__}: {exc}") from None


def _unknown(cls: Type[PipeTask], flag: str) -> DisdatError:
    known = ", ".join("--" + n.replace("_", "-") for n in _params(cls)) or "none"
    return DisdatError(f"{cls.__name__} has no parameter {flag} (its parameters: {known})")


def parse_pipe_args(cls: Type[PipeTask], args: Sequence[str]) -> Dict[str, Any]:
    """Luigi's command-line form: ``--min-len 3``, ``--min-len=3``, ``--flag`` for a BoolParameter."""
    params = _params(cls)
    values: Dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise DisdatError(f"unexpected pipe argument {arg!r}: write pipe parameters as --name value")
        flag, eq, inline = arg.partition("=")
        name = flag[2:].replace("-", "_")
        if name not in params:
            raise _unknown(cls, flag)
        param = params[name]
        if eq:
            raw = inline
        elif isinstance(param, luigi.BoolParameter) and (i + 1 == len(args) or args[i + 1].startswith("--")):
            raw = "true"
        elif i + 1 < len(args):
            i += 1
            raw = args[i]
        else:
            raise DisdatError(f"{flag} needs a value")
        values[name] = _parse_one(cls, name, param, raw)
        i += 1
    return values


def params_from_json(cls: Type[PipeTask], text: str) -> Dict[str, Any]:
    """``{"min_len": 3}`` (values typed or as Luigi strings) -> parameter values."""
    try:
        obj = json.loads(text or "{}")
    except ValueError as exc:
        raise DisdatError(f"pipe params must be a JSON object: {exc}") from None
    except RecursionError:  # deeper than json's parser goes
        raise too_deep("pipe params") from None
    if nests_too_deep(obj):
        raise too_deep("pipe params")
    if not isinstance(obj, dict):
        raise DisdatError("pipe params must be a JSON object, e.g. '{\"min_len\": 3}'")
    params = _params(cls)
    values = {}
    for name, raw in obj.items():
        if name not in params:
            raise _unknown(cls, "--" + name.replace("_", "-"))
        values[name] = _parse_one(cls, name, params[name], raw)
    return values


def canonical_params(task: PipeTask) -> Dict[str, str]:
    """Every parameter of a pipe instance (defaults included) as Luigi strings, sorted: what node ids hash
    and what the container receives. The same values given on the command line or as JSON give the same."""
    return dict(sorted(task.to_str_params().items()))


def from_canonical(cls: Type[PipeTask], canonical: Dict[str, str]) -> PipeTask:
    """The inverse of canonical_params (in the container): every value parsed by its own parameter."""
    params = _params(cls)
    unknown = sorted(set(canonical) - set(params))
    if unknown:
        raise _unknown(cls, "--" + unknown[0].replace("_", "-"))
    return make_pipe(cls, {name: _parse_one(cls, name, params[name], text) for name, text in canonical.items()})


def make_pipe(cls: Type[PipeTask], values: Dict[str, Any]) -> PipeTask:
    """A pipe instance; a missing required parameter (or a constructor that raises) is one line, not Luigi's
    traceback."""
    try:
        return cls(**values)
    except Exception as exc:
        raise DisdatError(f"cannot make {cls.pipe_path()} with {values}: {exc}") from None


def files_of(pipe_root: Path) -> List[Path]:
    """The pipe_root's files that go into an image and into its code version."""
    out = []
    for root, dirs, names in os.walk(pipe_root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                         and not d.endswith(".egg-info"))
        out += [Path(root) / n for n in sorted(names) if not n.startswith(".") and not n.endswith((".pyc", ".pyo"))]
    return out


def content_hash(paths: Sequence[Path], base: Path) -> str:
    """sha256 over (relative path, content sha256) of each file: the same tree always gives the same hash."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(base).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def code_version(pipe_root: Path) -> str:
    return content_hash(files_of(pipe_root), pipe_root)


def pipe_modules(pipe_root: Path) -> List[str]:
    """Modules under the pipe_root that define pipe classes (each gets an image name)."""
    found = []
    for path in files_of(pipe_root):
        if path.suffix != ".py" or path.name == "setup.py":
            continue
        rel = path.relative_to(pipe_root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            continue
        if any(not (pipe_root.joinpath(*parts[:i]) / "__init__.py").exists() for i in range(1, len(parts))):
            continue  # not importable as a package module
        name = ".".join(parts)
        module = import_pipe_module(name, pipe_root)
        if any(isinstance(v, type) and issubclass(v, PipeTask) and v is not PipeTask and v.__module__ == name
               for v in vars(module).values()):
            found.append(name)
    return found
