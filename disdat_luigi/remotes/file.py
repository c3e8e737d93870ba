"""A remote in a local directory (``file:///dir``): the embedded default that needs no server.

Writes are atomic (temporary file, then rename), so a reader sees a whole object or none, as on S3.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Tuple

from ..errors import NotFound, RemoteError
from ..fsutil import atomic_write, disk_space
from .base import ObjectStore, OnBytes, TooLarge
from .faults import checkpoint


class FileStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = root
        self.url = root.as_uri()

    def _path(self, key: str) -> Path:
        """Keys are built from validated names and hashes; refuse anything that could leave the root anyway."""
        parts = key.split("/")
        if not key or key.startswith("/") or "\\" in key or "\0" in key or any(p in (".", "..") for p in parts):
            raise RemoteError(f"refusing the remote key {key!r}: it would leave the remote's directory")
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

    def size(self, key: str) -> Optional[int]:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        for root, _dirs, names in os.walk(base):
            for n in names:
                if not n.startswith("."):  # skip in-flight temporary files
                    yield (Path(root) / n).relative_to(self.root).as_posix()

    def get_bytes(self, key: str, limit: Optional[int] = None) -> bytes:
        checkpoint("get", key)
        try:
            with open(self._path(key), "rb") as f:
                data = f.read() if limit is None else f.read(limit + 1)
        except FileNotFoundError:
            raise NotFound(f"{key} is not on the remote {self.url}") from None
        if limit is not None and len(data) > limit:
            raise TooLarge(key, limit)
        return data

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, length: int) -> Iterator[BinaryIO]:
        checkpoint("get", key)
        try:
            f = open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFound(f"{key} is not on the remote {self.url}") from None
        with f:
            f.seek(start)
            yield f

    def put_bytes(self, key: str, data: bytes) -> None:
        checkpoint("put", key)
        with self._writing(key, len(data)):
            atomic_write(self._path(key), data)

    def upload_file(self, key: str, path: Path, on_bytes: OnBytes) -> None:
        checkpoint("put", key)
        dst = self._path(key)
        size = path.stat().st_size
        with self._writing(key, size):
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
        on_bytes(size)

    def _writing(self, key: str, size: int):
        return disk_space(f"writing {key} to the remote", self.root, size)

    def get_versioned(self, key: str, limit: Optional[int] = None) -> Tuple[bytes, str]:
        data = self.get_bytes(key, limit)
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, version: Optional[str]) -> Optional[str]:
        checkpoint("put", key)
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "a") as lock:  # one writer at a time, across processes
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(path, "rb") as f:
                    current: Optional[str] = _sha256_of(f)
            except FileNotFoundError:
                current = None
            if current != version:
                return None
            self.put_bytes(key, data)
            return hashlib.sha256(data).hexdigest()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _sha256_of(f: BinaryIO) -> str:
    """The version of an object: the sha256 of its bytes, read in blocks (whatever its size)."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()
