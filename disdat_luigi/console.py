"""How the package's two commands end (``dsdt``, ``dsdt-entrypoint``): their ``main``'s exit code, without the
interpreter's last search for reference cycles.

By its end a command holds a few hundred thousand objects (luigi, botocore and its service models); at exit
the interpreter walks them all once more for cycles, about 0.1 s of CPU, just before the process's memory is
given back anyway: a tenth of a small ``dsdt pull`` and of every node's container besides its pipe.
``gc.freeze()`` puts them out of that walk's reach. Nothing else changes: atexit handlers, finalizers and
the wait for non-daemon threads all run as before (a pipe's libraries that flush at exit still do).
"""
from __future__ import annotations

import gc
from typing import Callable


def console(main: Callable[[], int]) -> int:
    """``main()``'s exit code, the process's objects frozen once it has returned (see the module docstring)."""
    code = main()
    gc.freeze()
    return code
