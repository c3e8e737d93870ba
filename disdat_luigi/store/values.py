"""How Python values become a bundle's ``data`` (JSON plus files) and come back.

A value is stored as JSON where it can be (dict with str keys, list, tuple, int, float, bool, None, str).
Files are stored as ``{"$file": "relative/path"}`` and come back as absolute local paths; a pandas
DataFrame is stored as a file (``{"$frame": ...}``, JSON table schema, so dtypes survive) and comes back as
a DataFrame. A str is a file only when it is an absolute path to an existing file (Disdat's rule); a
``luigi.LocalTarget`` or ``pathlib.Path`` is always a file.

Lists, tuples and dicts nest at most :data:`MAX_DEPTH` levels deep. Deeper data is refused in one line, when
it is stored and when a manifest holding it is read: walking it (here, in ``json``, in ``copy.deepcopy``)
would exhaust Python's recursion limit with a RecursionError, and no table or record a pipe returns needs a
hundred levels.

Strings a pipe receives from a bundle's data are :class:`DataText` (``decode(mark_text=True)``): they stay
strings when the pipe returns them, even when they name an existing file. Otherwise an input bundle (from
a shared remote, so untrusted) holding the text ``/proc/self/environ`` or ``~/.aws/credentials`` spelled
out, passed through by a pipe, would copy that file into a new bundle and publish it.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Callable, Tuple

from ..errors import DisdatError

FILE = "$file"
FRAME = "$frame"
MAX_DEPTH = 100     # levels of lists, tuples and dicts in a bundle's data (and in what else is stored as JSON)

Adopt = Callable[[Path], str]           # put a file into the bundle; returns its relative path
NewFile = Callable[[str], Path]         # a fresh path inside the bundle for a generated file


class DataText(str):
    """A str read from a bundle's data: never taken for a file path when stored again."""

    __slots__ = ()


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _target_path(value: Any) -> str | None:
    """The local path of a luigi LocalTarget-like object, else None (avoids importing luigi here)."""
    path = getattr(value, "path", None)
    return path if isinstance(path, str) and hasattr(value, "exists") and hasattr(value, "open") else None


def too_deep(what: str) -> DisdatError:
    return DisdatError(f"{what} nests lists and dicts more than {MAX_DEPTH} levels deep: flatten it or write it "
                       f"to a file")


def nests_too_deep(value: Any) -> bool:
    """Whether the lists, tuples and dicts of ``value`` nest more than MAX_DEPTH levels (a file or frame
    reference of stored data is a leaf). Walked without recursion, so that any depth, even a list that
    holds itself, is answered rather than exhausting Python's stack."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if _is_ref(v, FILE) or _is_ref(v, FRAME) or not isinstance(v, (dict, list, tuple)):
            continue
        if depth == MAX_DEPTH:
            return True
        stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
    return False


def encode(value: Any, adopt: Adopt, new_file: NewFile) -> Tuple[str, Any]:
    """(presentation, data) for ``value``; files are handed to ``adopt``."""
    counter = itertools.count()

    def enc(v: Any, depth: int = 0) -> Any:
        if v is None or isinstance(v, (bool, int, float)):
            return v
        if isinstance(v, DataText):
            return str(v)
        if isinstance(v, str):
            return {FILE: adopt(Path(v))} if os.path.isabs(v) and os.path.isfile(v) else v
        if isinstance(v, os.PathLike) or _target_path(v) is not None:
            path = Path(_target_path(v) or os.fspath(v))
            if not path.is_file():
                raise DisdatError(f"output file {path} does not exist: write it before returning it")
            return {FILE: adopt(path)}
        if isinstance(v, (dict, list, tuple)) and depth == MAX_DEPTH:
            raise too_deep("a bundle's data")
        if isinstance(v, dict):
            bad = [k for k in v if not isinstance(k, str)]
            if bad:
                raise DisdatError(f"a bundle can hold dicts with str keys only, got key {bad[0]!r}")
            if _is_ref(v, FILE) or _is_ref(v, FRAME):
                raise DisdatError(f"a dict whose only key is {next(iter(v))!r} is reserved for files in a bundle: "
                                  f"add another key or rename it")
            return {k: enc(x, depth + 1) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [enc(x, depth + 1) for x in v]
        if _is_dataframe(v):
            path = new_file(f"frame-{next(counter)}.json")
            v.to_json(path, orient="table", index=True)
            return {FRAME: adopt(path)}
        if type(v).__module__ == "numpy" and hasattr(v, "item"):
            return enc(v.item(), depth)
        raise DisdatError(f"a bundle cannot hold a {type(v).__name__}: return dicts, lists, numbers, strings, "
                          f"files (paths or targets) or a pandas DataFrame")

    data = enc(value)
    return presentation_of(data), data


def _is_ref(d: Any, key: str) -> bool:
    return isinstance(d, dict) and len(d) == 1 and key in d


def presentation_of(data: Any) -> str:
    if _is_ref(data, FRAME):
        return "dataframe"
    if _is_ref(data, FILE) or (isinstance(data, list) and data and all(_is_ref(x, FILE) for x in data)):
        return "files"
    if isinstance(data, dict):
        return "dict"
    if isinstance(data, list):
        return "list"
    return "scalar"


def decode(data: Any, files_root: Path, load_frames: bool = True, mark_text: bool = False) -> Any:
    """The Python value of ``data``: file refs as absolute paths under ``files_root``, frames loaded, and
    strings as :class:`DataText` with ``mark_text`` (what pipes receive)."""
    if _is_ref(data, FILE):
        return str(files_root / data[FILE])
    if _is_ref(data, FRAME):
        path = files_root / data[FRAME]
        if not load_frames:
            return str(path)
        import pandas

        return pandas.read_json(path, orient="table")
    if isinstance(data, dict):
        return {k: decode(v, files_root, load_frames, mark_text) for k, v in data.items()}
    if isinstance(data, list):
        return [decode(v, files_root, load_frames, mark_text) for v in data]
    return DataText(data) if mark_text and isinstance(data, str) else data


def file_refs(data: Any) -> list[str]:
    """Every relative path that ``data`` refers to."""
    if _is_ref(data, FILE) or _is_ref(data, FRAME):
        return [next(iter(data.values()))]
    if isinstance(data, dict):
        return [r for v in data.values() for r in file_refs(v)]
    if isinstance(data, list):
        return [r for v in data for r in file_refs(v)]
    return []
