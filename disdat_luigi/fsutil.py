"""Small filesystem helpers shared by the local store, the file remote and the transfer engine."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Optional, Tuple

CHUNK = 1 << 20


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _hash_stream(src: BinaryIO, sink: Optional[BinaryIO] = None) -> Tuple[str, int]:
    h, size = hashlib.sha256(), 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return h.hexdigest(), size
        h.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)


def copy_and_hash(src: BinaryIO, dst_path: Path) -> Tuple[str, int]:
    """Copy a stream into a new file, hashing on the way (one read of the source). Returns (sha256, size)."""
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with open(dst_path, "wb") as out:
        return _hash_stream(src, out)


def sha256_file(path: Path) -> Tuple[str, int]:
    with open(path, "rb") as f:
        return _hash_stream(f)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
