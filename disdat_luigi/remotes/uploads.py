"""Multipart uploads that a killed push left open on S3, found and aborted by the next push from the context.

A failed or interrupted upload is aborted by s3transfer itself; only a process killed outright (SIGKILL,
a lost machine) leaves its upload open, where S3 keeps (and bills) the parts for ever. Upload ids are not
exposed by s3transfer, so every multipart upload is journaled in ``tmp/uploads/`` (remote, key, start time)
and the journal file is flock'ed while the upload runs. A journal whose lock is free belongs to a dead
process: the uploads of that key that it started (initiated within a minute of the journal's start) are
aborted. Uploads of the same key by anyone else, at any other time, are left alone.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Iterator

from ..store.context import Context, lock_is_free
from .base import ObjectStore

_WINDOW = 60.0  # seconds between journaling an upload and S3 recording its start


def _journal_dir(ctx: Context) -> Path:
    return ctx.tmp / "uploads"


@contextlib.contextmanager
def journaled(ctx: Context, store: ObjectStore, key: str) -> Iterator[None]:
    """Record a multipart upload of ``key`` for as long as it runs (a no-op on stores without them)."""
    if not store.leaves_partial_uploads:
        yield
        return
    directory = _journal_dir(ctx)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(f'{store.url} {key} {os.getpid()}'.encode()).hexdigest()[:32]}.json"
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps({"url": store.url, "key": key, "started": time.time()}))
        f.flush()
        try:
            yield
        finally:
            path.unlink(missing_ok=True)


def abort_orphaned(ctx: Context, store: ObjectStore) -> int:
    """Abort the open uploads of dead pushes to ``store`` from this context; returns how many."""
    directory = _journal_dir(ctx)
    if not store.leaves_partial_uploads or not directory.is_dir():
        return 0
    aborted = 0
    for path in directory.glob("*.json"):
        if not lock_is_free(path):
            continue
        try:
            entry = json.loads(path.read_text())
            if entry["url"] != store.url:
                continue
            key, started = str(entry["key"]), float(entry["started"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        for upload_id, initiated in store.pending_uploads(key):
            if started - _WINDOW <= initiated <= started + _WINDOW:
                store.abort_upload(key, upload_id)
                aborted += 1
        path.unlink(missing_ok=True)
    return aborted
