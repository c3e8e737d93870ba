"""The object-store interface the transfer engine and the remote layout are written against.

Two implementations: :mod:`.s3` (AWS S3 or any S3-compatible server) and :mod:`.file` (a local directory).
Keys are relative to the store's root (``s3://bucket/prefix`` or ``file:///dir``) and use ``/``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterator, List, Optional, Tuple

from ..errors import IntegrityError

OnBytes = Callable[[int], None]


class TooLarge(IntegrityError):
    """An object read with a limit holds more than the limit (see :meth:`ObjectStore.get_bytes`)."""

    def __init__(self, key: str, limit: int):
        super().__init__(f"{key} on the remote is larger than {limit} bytes: refused (a remote is shared; this "
                         f"file is not one disdat-luigi wrote)")


class ObjectStore(ABC):
    url: str
    leaves_partial_uploads = False   # True where a killed upload can leave parts behind (S3 multipart)

    @abstractmethod
    def check(self) -> None:
        """Raise RemoteError unless the store can be reached and read with the configured credentials."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> Optional[int]:
        """The object's size in bytes, None when it does not exist."""

    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (which ends with '/')."""
        return (key for key, _ in self.listing(prefix))

    @abstractmethod
    def listing(self, prefix: str) -> Iterator[Tuple[str, str]]:
        """Every key under ``prefix`` with a stamp that changes whenever its object does (S3: the ETag; a
        directory: mtime and size), so that one listing tells which of many small objects changed."""

    @abstractmethod
    def get_bytes(self, key: str, limit: Optional[int] = None) -> bytes:
        """The object's bytes; NotFound when it does not exist. With ``limit``, never more than that many are
        read: a larger object is :class:`TooLarge` (a remote is shared, and a crafted object can be huge)."""

    @abstractmethod
    def open_range(self, key: str, start: int, length: int) -> ContextManager[BinaryIO]:
        """A stream of ``length`` bytes of the object from ``start`` (one request)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object atomically (readers never see part of it)."""

    @abstractmethod
    def upload_file(self, key: str, path: Path, on_bytes: OnBytes) -> None:
        """Store a (large) file: multipart and parallel where the store supports it."""

    @abstractmethod
    def get_versioned(self, key: str, limit: Optional[int] = None) -> Tuple[bytes, str]:
        """The object's bytes and a version tag that changes whenever the object does (NotFound if absent;
        ``limit`` as for :meth:`get_bytes`)."""

    @abstractmethod
    def put_if(self, key: str, data: bytes, version: Optional[str]) -> Optional[str]:
        """Compare-and-swap: store ``data`` only if the object is absent (``version`` None) or still at
        ``version``. Returns the new version, or None when someone else got there first. Leases and run
        records rely on it."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (no error when it is already gone)."""

    def copy(self, key: str, to: str, limit: int) -> None:
        """Copy a small object (at most ``limit`` bytes; NotFound when it does not exist) to another key."""
        self.put_bytes(to, self.get_bytes(key, limit))

    def pending_uploads(self, key: str) -> List[Tuple[str, float]]:
        """Multipart uploads of ``key`` left open: (upload id, started as epoch seconds). None on most stores."""
        return []

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload (see :meth:`pending_uploads`)."""

    def close(self) -> None:
        """Release connections and threads."""
