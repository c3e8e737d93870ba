"""Remotes: where bundles are shared (S3 or a local directory), in the layout of remote.py."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Dict, Optional
from urllib.parse import ParseResult, unquote, urlparse

from .. import config
from ..store.context import Context
from ..errors import DisdatError
from .base import ObjectStore
from .remote import Remote


def transfer_workers() -> int:
    return config.get("disdat", "transfer_workers")


def open_store(url: str, workers: Optional[int] = None) -> ObjectStore:
    """The object store behind a remote URL: ``s3://bucket[/prefix]`` or ``file:///dir``."""
    parsed = _parse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise DisdatError(f"remote URL {url!r} has no bucket: write s3://bucket/prefix")
        from .s3 import S3Store, check_bucket

        return S3Store(check_bucket(parsed.netloc), parsed.path, workers or transfer_workers())
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise DisdatError(f"remote URL {url!r} must be an absolute path: file:///dir")
        root = Path(unquote(parsed.path))
        if root.resolve() == Path("/"):
            raise DisdatError(f"remote URL {url!r} is the root directory: give a directory of its own, file:///dir")
        from .file import FileStore

        return FileStore(root)
    raise DisdatError(f"remote URL {url!r} is not supported: use s3://bucket/prefix or file:///dir")


def _parse(url: str) -> ParseResult:
    """The parts of a remote URL. One that holds a user or a password is refused without repeating it (nor is
    a URL that cannot be parsed repeated): it would be printed in errors and stored in the context's binding."""
    try:
        parsed = urlparse(url)
    except ValueError:   # an unbalanced "[" in its host part
        raise DisdatError("the remote URL is malformed: use s3://bucket/prefix or file:///dir") from None
    if "@" in parsed.netloc:
        raise DisdatError("remote URLs must not hold credentials: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                          "AWS_PROFILE (or [s3] in luigi.cfg)")
    return parsed


def open_remote(url: str, remote_context: str, workers: Optional[int] = None) -> Remote:
    return Remote(open_store(url, workers), remote_context)


_shared: Dict[tuple, Remote] = {}
_shared_lock = threading.Lock()


def shared_remote(url: str, remote_context: str) -> Remote:
    """One Remote per process (and per AWS/Disdat settings) for the small requests that many threads of a run
    make at once (run records, leases, completion checks): one S3 client and one pool of connections for a
    graph of a thousand nodes, instead of one each. Never close it: :func:`close_shared` does, at the end."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("AWS_", "DISDAT_"))))
    key = (os.getpid(), url, remote_context, env)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = open_remote(url, remote_context)
        return _shared[key]


def close_shared() -> None:
    with _shared_lock:
        mine = [r for (pid, *_), r in _shared.items() if pid == os.getpid()]
        _shared.clear()
    for remote in mine:
        remote.close()


def remote_of(ctx: Context, workers: Optional[int] = None) -> Remote:
    """The remote the local context is bound to (error with the fix when it has none)."""
    binding = ctx.require_remote()
    return open_remote(binding.url, binding.remote_context, workers)


__all__ = ["ObjectStore", "Remote", "close_shared", "open_remote", "open_store", "remote_of", "shared_remote",
           "transfer_workers"]
