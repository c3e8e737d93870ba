"""A remote in a local directory (``file:///dir``): the embedded default that needs no server.

Writes are atomic (temporary file, then rename), so a reader sees a whole object or none, as on S3.

Such a directory is shared, possibly between Unix users, and untrusted:

* what is written gets the mode any new file or directory gets (the umask's, or the directory's default
  ACL), so that the others the directory is shared with can read it;
* nothing is read or written through a symbolic link below the root: a link planted there (a log pointing at
  /etc/passwd, a context's ``runs/`` pointing elsewhere) is refused with one line naming its key. Every path is
  opened one directory at a time, relative to the last one opened and without following links, so a link
  swapped in between a check and a use is never followed either. (The root itself is the user's choice.)
* what is not a regular file (a directory, a FIFO a reader would block on) is not an object.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO, Iterator, List, Optional, Tuple

from ..errors import NotFound, RemoteError
from ..fsutil import CHUNK, disk_space, replacing
from .base import ObjectStore, OnBytes, TooLarge
from .faults import checkpoint

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 16      # deeper than any key of the layout (remotes/remote.py, runs/store.py): list() goes no further


class FileStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = root
        self.url = root.as_uri()

    def _parts(self, key: str) -> List[str]:
        """The path components of a key (``a//b`` is ``a/b``, as a path). Keys are built from validated names
        and hashes; refuse anything that could leave the root anyway."""
        parts = [p for p in key.split("/") if p]
        if not parts or key.startswith("/") or "\\" in key or "\0" in key or any(p in (".", "..") for p in parts):
            raise RemoteError(f"refusing the remote key {key!r}: it would leave the remote's directory")
        return parts

    def _refused(self, key: str, what: str) -> RemoteError:
        return RemoteError(f"{key} on the remote {self.url} is {what}: refused (a remote is shared, and disdat-luigi "
                           f"never makes one there): remove it")

    def _open_dir(self, parts: List[str], create: bool = False) -> int:
        """The directory ``parts`` below the root, opened one component at a time without following a link
        (``create``: making the missing ones). FileNotFoundError when it does not exist."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for depth, part in enumerate(parts, 1):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                try:
                    sub = os.open(part, _DIR, dir_fd=fd)
                except OSError as exc:   # of a link, O_NOFOLLOW | O_DIRECTORY says ENOTDIR (or ELOOP)
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    where = "/".join(parts[:depth])
                    raise self._refused(where, "a symbolic link" if _is_link(part, fd) else "not a directory"
                                        ) from None
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _parent(self, key: str, create: bool = False) -> Iterator[Tuple[int, str]]:
        """The directory holding ``key`` (see :meth:`_open_dir`) and the key's name in it."""
        *dirs, name = self._parts(key)
        fd = self._open_dir(dirs, create)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def _stat(self, key: str) -> Optional[os.stat_result]:
        """The object's own status (None when there is none); a link is refused."""
        try:
            with self._parent(key) as (fd, name):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise self._refused(key, "a symbolic link")
        return st if stat.S_ISREG(st.st_mode) else None

    def _open_at(self, key: str, dir_fd: int, name: str, flags: int) -> int:
        """``os.open`` of ``name`` in ``dir_fd`` that never follows a link there (and says so when one is)."""
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP and _is_link(name, dir_fd):
                raise self._refused(key, "a symbolic link") from None
            raise

    def _open(self, key: str, dir_fd: int, name: str) -> BinaryIO:
        """The object ``name`` in ``dir_fd`` for reading; only a regular file is one. O_NONBLOCK: opening a FIFO
        planted on the remote must not block."""
        try:
            fd = self._open_at(key, dir_fd, name, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise NotFound(f"{key} is not on the remote {self.url}") from None
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            f.close()
            raise NotFound(f"{key} is not on the remote {self.url}")
        return f

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[BinaryIO]:
        try:
            with self._parent(key) as (fd, name):
                f = self._open(key, fd, name)
        except FileNotFoundError:
            raise NotFound(f"{key} is not on the remote {self.url}") from None
        with f:
            yield f

    def _refuse_link_at(self, key: str, dir_fd: int, name: str) -> None:
        """Writes replace an object by a rename, which never follows a link; a link there is refused all the same."""
        if _is_link(name, dir_fd):
            raise self._refused(key, "a symbolic link")

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RemoteError(f"cannot use {self.root} as a remote: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise RemoteError(f"cannot use {self.root} as a remote: not writable")

    def exists(self, key: str) -> bool:
        return self._stat(key) is not None

    def size(self, key: str) -> Optional[int]:
        st = self._stat(key)
        return None if st is None else st.st_size

    def listing(self, prefix: str) -> Iterator[Tuple[str, str]]:
        dirs = self._parts(prefix) if prefix else []
        try:
            fd = self._open_dir(dirs)
        except FileNotFoundError:
            return
        try:
            yield from _walk(fd, "".join(f"{d}/" for d in dirs), len(dirs))
        finally:
            os.close(fd)

    def get_bytes(self, key: str, limit: Optional[int] = None) -> bytes:
        checkpoint("get", key)
        with self._reading(key) as f:
            data = f.read() if limit is None else f.read(limit + 1)
        if limit is not None and len(data) > limit:
            raise TooLarge(key, limit)
        return data

    @contextlib.contextmanager
    def open_range(self, key: str, start: int, length: int) -> Iterator[BinaryIO]:
        checkpoint("get", key)
        with self._reading(key) as f:
            f.seek(start)
            yield f

    def put_bytes(self, key: str, data: bytes) -> None:
        checkpoint("put", key)
        with self._writing(key, len(data)) as (fd, name):
            self._put(key, fd, name, data)

    def _put(self, key: str, dir_fd: int, name: str, data: bytes) -> None:
        self._refuse_link_at(key, dir_fd, name)
        with replacing(Path(name), dir_fd) as f:
            f.write(data)

    def upload_file(self, key: str, path: Path, on_bytes: OnBytes) -> None:
        checkpoint("put", key)
        size = path.stat().st_size
        with self._writing(key, size) as (fd, name), open(path, "rb") as src:
            self._refuse_link_at(key, fd, name)
            with replacing(Path(name), fd) as out:
                shutil.copyfileobj(src, out, CHUNK)
        on_bytes(size)

    @contextlib.contextmanager
    def _writing(self, key: str, size: int) -> Iterator[Tuple[int, str]]:
        """The directory to write ``key`` in (made if missing), with a full disk said in one line."""
        with disk_space(f"writing {key} to the remote", self.root, size), self._parent(key, create=True) as where:
            yield where

    def get_versioned(self, key: str, limit: Optional[int] = None) -> Tuple[bytes, str]:
        data = self.get_bytes(key, limit)
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, version: Optional[str]) -> Optional[str]:
        checkpoint("put", key)
        with self._writing(key, len(data)) as (fd, name):
            lock_name = f".{name}.lock"
            lock = self._open_at(key[:-len(name)] + lock_name, fd, lock_name, os.O_RDONLY | os.O_CREAT)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)   # one writer at a time, across processes
                try:
                    with self._open(key, fd, name) as f:
                        current: Optional[str] = _sha256_of(f)
                except NotFound:
                    current = None
                if current != version:
                    return None
                self._put(key, fd, name, data)
                return hashlib.sha256(data).hexdigest()
            finally:
                os.close(lock)

    def delete(self, key: str) -> None:
        try:
            with self._parent(key) as (fd, name):
                self._refuse_link_at(key, fd, name)
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _walk(dir_fd: int, rel: str, depth: int) -> Iterator[Tuple[str, str]]:
    """The regular files below the open directory ``dir_fd`` (``rel``: its key prefix), never through a link,
    with their stamps; hidden files (in-flight temporary files, locks) are not objects."""
    with os.scandir(dir_fd) as entries:
        found = list(entries)
    for entry in found:
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:   # replaced or deleted since it was listed
                continue
            yield rel + entry.name, f"{st.st_mtime_ns}-{st.st_size}"
        elif entry.is_dir(follow_symlinks=False) and depth < MAX_DEPTH:
            try:
                sub = os.open(entry.name, _DIR, dir_fd=dir_fd)
            except OSError:   # gone, or swapped for a link since it was listed
                continue
            try:
                yield from _walk(sub, f"{rel}{entry.name}/", depth + 1)
            finally:
                os.close(sub)


def _sha256_of(f: BinaryIO) -> str:
    """The version of an object: the sha256 of its bytes, read in blocks (whatever its size)."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()
