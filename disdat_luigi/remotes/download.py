"""Large-object download: parallel ranged streams written in place, hashed in order as the bytes land.

Pulled files must be checked against their sha256, and SHA-256 is sequential. s3transfer's ranged download
either writes parts out of order (then the file must be read again to hash it) or, into a non-seekable
sink, funnels every byte through one I/O thread. Here each of up to ``streams`` threads reads one
contiguous range of the object and writes it at its offset, while the calling thread hashes the file in
order, from the page cache, just behind the writers. On this machine (SeaweedFS on loopback, 256 MiB):
0.5 s and 0.32 s CPU, against 0.74 s and 0.55 s CPU for s3transfer with a hashing sink. Several streams keep
the speed on real S3, where one connection tops out near 100 MB/s.
"""
from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, List, Tuple

from ..errors import IntegrityError
from .base import ObjectStore

MiB = 1024 * 1024
RANGE_MIN = 64 * MiB    # one stream per 64 MiB, at most ``streams``
READ = 4 * MiB


def range_bounds(size: int, streams: int) -> List[Tuple[int, int]]:
    """Contiguous [start, end) ranges covering ``size`` bytes: one per RANGE_MIN bytes, at most ``streams``."""
    n = max(1, min(streams, size // RANGE_MIN))
    return [(i * size // n, (i + 1) * size // n) for i in range(n)]


def download_hashed(store: ObjectStore, key: str, size: int, dst: Path, on_bytes: Callable[[int], None],
                    streams: int = 4) -> str:
    """Write object ``key`` (``size`` bytes) to ``dst``; returns the sha256 of what was written."""
    bounds = range_bounds(size, streams)
    n = len(bounds)
    landed = [start for start, _ in bounds]  # range i has bytes [start, landed[i]) on disk
    cond = threading.Condition()
    fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        def stream(i: int) -> None:
            start, end = bounds[i]
            pos = start
            with store.open_range(key, start, end - start) as body:
                while pos < end:
                    chunk = body.read(min(READ, end - pos))
                    if not chunk:
                        raise IntegrityError(f"{key} on the remote is shorter than its manifest says: the remote "
                                             f"copy is damaged, re-push the bundle from a good copy")
                    view = memoryview(chunk)
                    while view:  # a nearly full disk writes less than asked: go on until ENOSPC is raised
                        written = os.pwrite(fd, view, pos)
                        view = view[written:]
                        pos += written
                    on_bytes(len(chunk))
                    with cond:
                        landed[i] = pos
                        cond.notify_all()

        def ended(f: Future) -> None:
            with cond:
                cond.notify_all()

        sha = hashlib.sha256()
        with ThreadPoolExecutor(n) as pool:
            futures: List[Future] = [pool.submit(stream, i) for i in range(n)]
            for f in futures:
                f.add_done_callback(ended)
            try:
                for i, (start, end) in enumerate(bounds):
                    pos = start
                    while pos < end:
                        with cond:
                            cond.wait_for(lambda: landed[i] > pos or futures[i].done())
                            ready = landed[i]
                        if ready <= pos:  # the stream ended without reaching here: it failed
                            futures[i].result()
                            raise IntegrityError(f"{key} on the remote is shorter than its manifest says")
                        while pos < ready:
                            block = os.pread(fd, min(READ, ready - pos), pos)
                            if not block:  # never spin on bytes that are not on disk
                                raise OSError(f"{dst} is shorter than the bytes written to it")
                            sha.update(block)
                            pos += len(block)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            for f in futures:
                f.result()
        return sha.hexdigest()
    finally:
        os.close(fd)
