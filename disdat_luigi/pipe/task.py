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

A pipe instance knows only its own parameters and dependencies. Who it is (its node id) and what its
output is called come from :mod:`.graph` and :mod:`.identity`; where it reads and writes comes from whoever
runs it: :mod:`.apply` in this process (``dsdt apply``), the container entrypoint in a container.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Type

import luigi

from ..errors import DisdatError
from ..store.manifest import check_name


class PipeTask(luigi.Task):
    """Base class of pipe classes (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._dependencies: Dict[str, Tuple[Type["PipeTask"], dict]] = {}
        self._required: Optional[Dict[str, "PipeTask"]] = None
        self._bundle_name: Optional[str] = None
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
        if name == "pipeline_input":
            raise DisdatError(f"{type(self).__name__}: 'pipeline_input' is the input bundle; name the dependency "
                              f"otherwise")
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

    # -- what the graph reads ------------------------------------------------------------------------
    def requires(self) -> Dict[str, "PipeTask"]:
        """The upstream pipe instances by dependency name (pipe_requires, called once)."""
        if self._required is None:
            self._dependencies = {}
            try:
                self.pipe_requires()
                self._required = {name: cls(**params) for name, (cls, params) in self._dependencies.items()}
            except DisdatError:
                raise
            except Exception as exc:  # a missing required parameter, a typo in pipe_requires
                raise DisdatError(f"{self.pipe_path()}.pipe_requires failed: {type(exc).__name__}: {exc}") from None
        return self._required

    @property
    def set_name(self) -> Optional[str]:
        """The output name pipe_requires chose with set_bundle_name, if any."""
        self.requires()
        return self._bundle_name

    @classmethod
    def pipe_path(cls) -> str:
        return f"{cls.__module__}.{cls.__name__}"

    # -- Luigi, in process (dsdt apply) -------------------------------------------------------------
    def output(self) -> luigi.Target:
        from .session import current

        return current().output_target(self)

    def run(self) -> None:
        from .session import current

        current().run(self)
