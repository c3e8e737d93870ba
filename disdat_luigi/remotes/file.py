"""A remote in a local directory (``file:///dir``): the embedded default that needs no server.

Writes are atomic (temporary file, then rename), so a reader sees a whole object or none, as on S3.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import NotFound, RemoteError
from ..fsutil import atomic_write
from .base import ObjectStore, OnBytes


class FileStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / key

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RemoteError(f"cannot use {self.root} as a remote: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise RemoteError(f"cannot use {self.root} as a remote: not writable")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        for root, _dirs, names in os.walk(base):
            for n in names:
                if not n.startswith("."):  # skip in-flight temporary files
                    yield (Path(root) / n).relative_to(self.root).as_posix()

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{key} is not on the remote {self.url}") from None

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, length: int) -> Iterator[BinaryIO]:
        try:
            f = open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"{key} is not on the remote {self.url}") from None
        with f:
            f.seek(start)
            yield f

    def put_bytes(self, key: str, data: bytes) -> None:
        atomic_write(self._path(key), data)

    def upload_file(self, key: str, path: Path, on_bytes: OnBytes) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        on_bytes(path.stat().st_size)
