"""``$DISDAT_HOME``: the set of local contexts and which one is active.

Layout::

    $DISDAT_HOME/active_context            name of the active context
    $DISDAT_HOME/contexts/<ctx>/           one Context (index.sqlite, objects/, tmp/, remote.json)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import List, Optional

from .. import config
from .context import Context
from ..errors import DisdatError, NotFound
from ..fsutil import atomic_write, disk_space
from .manifest import check_name


class Home:
    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else config.disdat_home()
        self.contexts_dir = self.path / "contexts"
        self._active_file = self.path / "active_context"

    @property
    def initialized(self) -> bool:
        return self.contexts_dir.is_dir()

    def init(self) -> bool:
        """Create the home; False when it already existed."""
        existed = self.initialized
        self.contexts_dir.mkdir(parents=True, exist_ok=True)
        return not existed

    def require(self) -> None:
        if not self.initialized:
            raise DisdatError(f"disdat is not initialized at {self.path}: run `dsdt init` (or set DISDAT_HOME)")

    def contexts(self) -> List[str]:
        self.require()
        return sorted(p.name for p in self.contexts_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    @property
    def active_name(self) -> Optional[str]:
        try:
            name = self._active_file.read_text().strip()
        except FileNotFoundError:
            return None
        return name if name and (self.contexts_dir / name).is_dir() else None

    def context(self, name: Optional[str] = None) -> Context:
        """The named context, or the active one."""
        self.require()
        if name is None:
            name = self.active_name
            if name is None:
                raise DisdatError("no active context: create one with `dsdt context NAME` (then `dsdt switch NAME`)")
        check_name(name, "context name")
        root = self.contexts_dir / name
        if not root.is_dir():
            raise NotFound(f"no context named {name} (see `dsdt context`)")
        return Context(root, name)

    def create_context(self, name: str) -> bool:
        """Create a context (the first one also becomes active); False when it already existed."""
        self.require()
        check_name(name, "context name")
        root = self.contexts_dir / name
        existed = root.is_dir()
        try:
            with disk_space(f"creating context {name}", self.contexts_dir):
                root.mkdir(exist_ok=True)
                Context(root, name).index.close()
                if self.active_name is None:
                    self.switch(name)
        except BaseException:
            if not existed:
                shutil.rmtree(root, ignore_errors=True)
            raise
        return not existed

    def switch(self, name: str) -> None:
        self.context(name)  # must exist
        atomic_write(self._active_file, name.encode())

    def delete_context(self, name: str) -> None:
        ctx = self.context(name)
        if name == self.active_name:
            raise DisdatError(f"context {name} is the active context: `dsdt switch` to another one first")
        trash = self.contexts_dir / f".deleting-{name}-{os.getpid()}"
        os.rename(ctx.path, trash)
        shutil.rmtree(trash, ignore_errors=True)
