"""The object-store interface the transfer engine and the remote layout are written against.

Two implementations: :mod:`.s3` (AWS S3 or any S3-compatible server) and :mod:`.file` (a local directory).
Keys are relative to the store's root (``s3://bucket/prefix`` or ``file:///dir``) and use ``/``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO, Callable, ContextManager, Iterator

OnBytes = Callable[[int], None]


class ObjectStore(ABC):
    url: str

    @abstractmethod
    def check(self) -> None:
        """Raise RemoteError unless the store can be reached and read with the configured credentials."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix`` (which ends with '/')."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's bytes; NotFound when it does not exist."""

    @abstractmethod
    def open_range(self, key: str, start: int, length: int) -> ContextManager[BinaryIO]:
        """A stream of ``length`` bytes of the object from ``start`` (one request)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Store a small object atomically (readers never see part of it)."""

    @abstractmethod
    def upload_file(self, key: str, path: Path, on_bytes: OnBytes) -> None:
        """Store a (large) file: multipart and parallel where the store supports it."""

    def close(self) -> None:
        """Release connections and threads."""
