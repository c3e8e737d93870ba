"""The :class:`Bundle` of :mod:`disdat_luigi.api` and the helpers the API's calls share (private: import
them from :mod:`disdat_luigi.api`).

A Bundle either wraps a closed bundle of the store (:class:`~disdat_luigi.store.context.Bundle`) or builds a new
one: ``open`` starts a :class:`~disdat_luigi.store.context.Staging` (``get_file`` paths are inside it, so files
written there are kept without a copy), and ``close`` stores the value with
:meth:`~disdat_luigi.store.context.Context.add_value`, with the tags and the lineage (params, dependencies,
code_ref, timing) recorded meanwhile: the bundle appears whole or not at all.
"""
from __future__ import annotations

import contextlib
import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

from .. import config
from ..errors import DisdatError
from ..remotes import remote_of, transfer
from ..store.context import Bundle as StoreBundle, Context, Staging
from ..store.home import Home
from ..store.manifest import CREATED_FORMAT, check_created, check_name, check_tag
from ..store.values import nests_too_deep, too_deep

Tags = Optional[Mapping[str, str]]
_UNSET = object()


def home() -> Home:
    config.validate()  # as `dsdt` does first: a bad setting is refused before anything happens
    return Home()


@contextlib.contextmanager
def opened(local_context: str) -> Iterator[Context]:
    """The named context, its index closed afterwards (a notebook makes many calls in one long process)."""
    ctx = home().context(check_name(local_context, "context name"))  # None would mean the CLI's active one
    try:
        yield ctx
    finally:
        ctx.close()


def tags_of(tags: Tags) -> Dict[str, str]:
    """Tags as Disdat passes them, a dict of str to str; a bad one is refused before anything changes."""
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise DisdatError(f"tags must be a dict of str to str, not a {type(tags).__name__}")
    return dict(check_tag(k, v) for k, v in tags.items())


def json_text(value: Any, what: str) -> str:
    """``value`` as JSON text (dates and the like as their text), or one line saying why it cannot be."""
    if nests_too_deep(value):  # json.dumps would raise RecursionError (or loop on a list holding itself)
        raise too_deep(what)
    try:
        return json.dumps(value, default=str)
    except TypeError as exc:  # a dict key that is not text
        raise DisdatError(f"{what} cannot be JSON: {exc}") from None


def _epoch(stamp: Optional[str], what: str) -> float:
    """Disdat gives times as seconds since the epoch; manifests keep UTC text."""
    if not stamp:
        return 0.0
    stamp = check_created(stamp, what)  # lineage may come from a shared remote: never trust its form
    return datetime.strptime(stamp, CREATED_FORMAT).replace(tzinfo=timezone.utc).timestamp()


def selected(ctx: Context, name: Optional[str], uuid: Optional[str], tags: Tags) -> StoreBundle:
    if not (name or uuid):
        raise DisdatError("give a bundle name or uuid")
    return ctx.resolve(name, uuid, tags_of(tags))


class Bundle:
    """A bundle of a local context: read one (from :func:`search`, :func:`get`, :func:`apply`, ...) or build one.

    Reading: ``name``, ``uuid``, ``data``, ``tags``, ``params``, ``creation_date``, ``timing``, ``committed``,
    ``lineage``, ``dependencies``, ``code_ref``; sharing: :meth:`commit`, :meth:`push`, :meth:`pull`.
    """

    def __init__(self, local_context: str, name: Optional[str] = None, data: Any = None, tags: Tags = None,
                 params: Optional[Mapping[str, Any]] = None, dependencies: Optional[Mapping[str, Bundle]] = None,
                 code_method: Optional[str] = None, start_time: float = 0, stop_time: float = 0):
        """A new bundle in ``local_context``, as in Disdat. Given ``data`` it is created at once::

            b = api.Bundle("ctx", name="model", data="/tmp/model.pkl", tags={"stage": "dev"})

        otherwise it is built, then closed (the closed bundle is immutable; until then anything may change)::

            with api.Bundle("ctx", name="scores") as b:       # or b = api.Bundle(...).open(); ...; b.close()
                with open(b.get_file("scores.csv"), "w") as f:  # a file written in place, with no copy
                    f.write("a,1\\n")
                b.add_data({"scores": b.get_file("scores.csv"), "n": 1})
                b.add_tags({"stage": "dev"}).add_params({"alpha": 0.5})

        An exception in the ``with`` block (or :meth:`abandon`) leaves no bundle and no staged file.
        """
        with opened(local_context) as ctx:  # an unknown context is refused before anything is staged
            self._begin(ctx.name)
        if name is not None:
            self.name = name
        self.add_tags(tags or {}).add_params(params or {})
        if dependencies:
            self.add_dependencies(dependencies)
        if code_method is not None:
            self.add_code_ref(code_method)
        if start_time or stop_time:
            self.add_timing(start_time, stop_time)
        if data is not None:
            self.open().add_data(data).close()

    def _begin(self, context: str) -> None:
        self._context = context
        self._state = "new"                 # new -> open -> closed, or abandoned
        self._store: Optional[StoreBundle] = None
        self._ctx: Optional[Context] = None
        self._staging: Optional[Staging] = None
        self._name: Optional[str] = None
        self._data: Any = None
        self._decoded: Any = _UNSET
        self._tags: Dict[str, str] = {}
        self._lineage: Dict[str, Any] = {}

    @classmethod
    def _wrap(cls, context: str, bundle: StoreBundle) -> Bundle:
        b = cls.__new__(cls)
        b._begin(context)
        b._store, b._state = bundle, "closed"
        return b

    def __repr__(self) -> str:
        return f"Bundle(context={self._context!r}, name={self.name!r}, uuid={self.uuid!r}, {self._state})"

    # -- reading -------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._state == "closed"

    @property
    def name(self) -> Optional[str]:
        return self._store.name if self._store else self._name

    @name.setter
    def name(self, name: str) -> None:
        self._editable()
        self._name = check_name(name)

    @property
    def uuid(self) -> Optional[str]:
        """None until the bundle is closed."""
        return self._store.uuid if self._store else None

    @property
    def data(self) -> Any:
        """The value as it was stored: scalars, lists, dicts, file items as local paths, a DataFrame as one."""
        if self._store is None:
            return self._data
        if self._decoded is _UNSET:
            self._decoded = self._store.data()
        return self._decoded

    @property
    def tags(self) -> Dict[str, str]:
        return self._store.tags if self._store else dict(self._tags)

    @property
    def committed(self) -> bool:
        return bool(self._store and self._store.committed)

    @property
    def creation_date(self) -> Optional[float]:
        """Seconds since the epoch (None until closed)."""
        return _epoch(self._store.manifest.created, "created") if self._store else None

    @property
    def lineage(self) -> Dict[str, Any]:
        """How it was made: pipe (or code_ref), params, inputs (uuids by argument name), start, stop, ..."""
        if self._store:
            return copy.deepcopy(self._store.manifest.lineage or {})
        return {k: copy.deepcopy(v) for k, v in self._lineage.items() if v}

    @property
    def params(self) -> Dict[str, str]:
        """The pipe's parameters (every one, as Luigi strings), or what :meth:`add_params` recorded."""
        params = self.lineage.get("params")
        return dict(params) if isinstance(params, dict) else {}

    @property
    def dependencies(self) -> Dict[str, str]:
        """The uuids of the bundles it was made from, by argument name (``pipeline_input`` for a pipe's input)."""
        return dict(self.lineage.get("inputs") or {})

    @property
    def code_ref(self) -> Optional[str]:
        return self.lineage.get("pipe")

    @property
    def timing(self) -> Tuple[float, float]:
        """(start, stop) in seconds since the epoch; (0.0, 0.0) when none was recorded (as in Disdat)."""
        lineage = self.lineage
        return _epoch(lineage.get("start"), "lineage.start"), _epoch(lineage.get("stop"), "lineage.stop")

    # -- building ------------------------------------------------------------------------------------
    def _editable(self) -> None:
        if self._state not in ("new", "open"):
            raise DisdatError(f"bundle {self.name} is {self._state}: it can no longer change")

    def open(self) -> Bundle:
        """Start staging the bundle's files (``with`` does this)."""
        if self._state != "new":
            raise DisdatError(f"bundle {self.name} is {self._state}: only a new bundle can be opened")
        self._ctx = home().context(self._context)
        try:
            self._staging = self._ctx.stage()
        except BaseException:
            self._ctx.close()
            raise
        self._state = "open"
        return self

    def add_data(self, data: Any) -> Bundle:
        """The bundle's value (replacing an earlier one): what ``dsdt add`` and a pipe's return take: a scalar,
        list, dict, a path or list of paths to local files (copied in; paths from :meth:`get_file` are not), a
        pandas DataFrame; lists and dicts nested at most 100 levels deep. Checked when the bundle is closed."""
        self._editable()
        self._data = data
        return self

    def get_file(self, filename: str) -> Path:
        """A path inside the open bundle: write the file there, then add it with :meth:`add_data` (no copy)."""
        if self._state != "open":
            raise DisdatError(f"bundle {self.name} is {self._state}: open it first (`with api.Bundle(...) as b:`)")
        return self._staging.new_file(filename)  # type: ignore[union-attr]

    def add_tags(self, tags: Mapping[str, str]) -> Bundle:
        self._editable()
        self._tags.update(tags_of(tags))
        return self

    def add_params(self, params: Mapping[str, Any]) -> Bundle:
        """Parameters that made the data; values that are not str are kept as JSON text (Disdat keeps str)."""
        self._editable()
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise DisdatError("params must be a dict with str keys")
        texts = {k: v if isinstance(v, str) else json_text(v, f"param {k}") for k, v in params.items()}
        self._lineage.setdefault("params", {}).update(texts)
        return self

    def add_dependencies(self, bundles: Union[Bundle, Iterable[Bundle], Mapping[str, Bundle]],
                         arg_names: Union[str, Iterable[str], None] = None) -> Bundle:
        """Closed bundles this one was made from (named ``_arg_0``, ... unless ``arg_names`` or a dict names them)."""
        self._editable()
        if isinstance(bundles, Mapping):
            arg_names, bundles = list(bundles), list(bundles.values())
        bundles = [bundles] if isinstance(bundles, Bundle) else list(bundles)
        inputs = self._lineage.setdefault("inputs", {})
        names = ([arg_names] if isinstance(arg_names, str) else list(arg_names) if arg_names is not None
                 else [f"_arg_{len(inputs) + i}" for i in range(len(bundles))])
        if len(names) != len(bundles):
            raise DisdatError("give one argument name per dependency")
        for arg, b in zip(names, bundles):
            if not (isinstance(b, Bundle) and b.closed):
                raise DisdatError(f"dependency {arg!r} is not a closed bundle: close it (or get it) first")
        inputs.update({str(arg): b.uuid for arg, b in zip(names, bundles)})
        return self

    def add_code_ref(self, code_ref: str) -> Bundle:
        """What made the data, e.g. ``"package.module.function"`` (kept as the lineage's ``pipe``)."""
        self._editable()
        if not isinstance(code_ref, str):
            raise DisdatError("code_ref must be a str")
        self._lineage["pipe"] = code_ref
        return self

    def add_timing(self, start_time: float, stop_time: float) -> Bundle:
        """When the data was made, in seconds since the epoch (``time.time()``)."""
        self._editable()
        try:
            start, stop = (datetime.fromtimestamp(float(t), timezone.utc).strftime(CREATED_FORMAT)
                           for t in (start_time, stop_time))
        except (TypeError, ValueError, OverflowError, OSError):
            raise DisdatError("add_timing takes two times in seconds since the epoch, as time.time() gives") from None
        self._lineage.update(start=start, stop=stop)
        return self

    def close(self) -> Bundle:
        """Store the bundle (atomically: all of it or nothing) and return it, closed and immutable."""
        if self._state != "open":
            raise DisdatError(f"bundle {self.name} is {self._state}: only an open bundle can be closed")
        if self._name is None:
            raise DisdatError("the bundle has no name: set b.name (or Bundle(ctx, name=...)) before closing it")
        ctx, staging = self._ctx, self._staging
        try:
            self._store = ctx.add_value(self._name, self._data, tags=self._tags,  # type: ignore[union-attr]
                                        lineage=self.lineage or None, staging=staging)
            self._state = "closed"
        except BaseException:
            self.abandon()
            raise
        finally:
            ctx.close()  # type: ignore[union-attr]
        return self

    def abandon(self) -> None:
        """Drop an unclosed bundle and everything staged for it."""
        self._editable()
        if self._staging is not None:
            self._staging.abandon()
            self._ctx.close()  # type: ignore[union-attr]
        self._state = "abandoned"

    def __enter__(self) -> Bundle:
        return self.open() if self._state == "new" else self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._state != "open":  # closed or abandoned inside the block
            return
        if exc_type is not None:
            self.abandon()
            return
        try:
            self.close()
        except BaseException:
            if self._state == "open":  # refused before staging was touched (no name): still leave nothing
                self.abandon()
            raise

    # -- sharing -------------------------------------------------------------------------------------
    def _closed_store(self, ctx: Context) -> StoreBundle:
        if self._store is None:
            raise DisdatError(f"bundle {self.name} is {self._state}: close it first")
        return ctx.bundle(self._store.uuid)

    def commit(self) -> Bundle:
        """Commit it (committed bundles can be pushed)."""
        with opened(self._context) as ctx:
            self._store = ctx.commit(self._closed_store(ctx))
        return self

    def push(self) -> Bundle:
        """Send it to the context's remote (it must be committed)."""
        with opened(self._context) as ctx, remote_of(ctx) as rem:
            transfer.push(ctx, rem, self._closed_store(ctx), quiet=True)
        return self

    def pull(self, localize: bool = True) -> Bundle:
        """Bring it (back) from the remote. Files always come local and verified here: ``localize`` is Disdat's
        argument, kept so calls move over."""
        if self._store is None:
            raise DisdatError(f"bundle {self.name} is {self._state}: close it first")
        with opened(self._context) as ctx, remote_of(ctx) as rem:
            self._store, _ = transfer.pull(ctx, rem, self._store.uuid, quiet=True)
        self._decoded = _UNSET
        return self

