"""Large-object download: ranged parts fetched by the transfer's pool, written in place, hashed in order.

Pulled files must be checked against their sha256, and SHA-256 is sequential. Every large object of a pull is
cut into parts of ``PART`` bytes, and every part is one task of the transfer's thread pool: parts of one
object and of the next ones are fetched at the same time by all the workers, so a single large file gets as
many connections as the pool has, and the last files of a pull never leave workers idle. A worker reads its
part from the socket in slices of ``WRITE_SLICE``, into a buffer of its own that it reuses, and writes each
slice at its offset as it comes (large writes are slow on VMs, see :data:`~disdat_luigi.fsutil.WRITE_SLICE`).
The part the object's hash is waiting for is hashed slice by slice as it arrives; any other part is hashed
later from the file (the page cache, read back into the same reused buffer): whichever worker lands the part
the hash is waiting for hashes it and every landed part after it, in order. Nothing of a part is held in
memory: on this machine a pull that kept the parts waiting for the hash in fresh memory paid a page fault for
every 4 KiB it pulled (64k faults and ~0.3 s of system time for 256 MiB; s5cmd: 5k), more than reading them
back costs; and what is hashed is what the file holds.

How far ahead of the hash a pull may go is bounded by a window: a part may start only when it is among the
``window`` oldest parts of the pull not hashed yet (parts are numbered in the order they are handed to the
pool; the oldest never waits, so the pool always makes progress), so the parts read back are still in the page
cache (:func:`window_for`).

Measured on this machine (2 cores, SeaweedFS on loopback, whole ``dsdt pull`` processes): see bench/transfer.py
and the closing note of issue 18.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, List, Optional, Set, Tuple

from ..errors import IntegrityError
from ..fsutil import WRITE_SLICE, write_at
from .base import ObjectStore

MiB = 1024 * 1024
# One ranged GET; an object of more than one part is fetched by several workers at once. Measured pulling 16 x 64
# MiB from SeaweedFS: the server spends ~1.95 s of CPU with 8 MiB parts, ~1.65 s with 16 MiB, ~1.55 s with 64 MiB
# (on 2 cores that CPU is the wire's speed); larger parts hold more memory and give one object fewer streams.
PART = 16 * MiB


def part_bounds(size: int, part: Optional[int] = None) -> List[Tuple[int, int]]:
    """Contiguous [start, end) ranges of at most ``part`` (default ``PART``) bytes covering ``size`` bytes (one
    empty range for 0)."""
    part = part or PART
    if size <= 0:
        return [(0, 0)]
    return [(start, min(size, start + part)) for start in range(0, size, part)]


def window_for(held_bytes: int) -> int:
    """How many parts may be in flight or waiting to be hashed so that at most ``held_bytes`` are ahead of the
    hash."""
    return max(2, held_bytes // PART)


_buffers = threading.local()


def slice_buffer() -> memoryview:
    """This thread's buffer of ``WRITE_SLICE`` bytes, reused by every slice it reads (fresh memory costs a page
    fault every 4 KiB)."""
    buf = getattr(_buffers, "view", None)
    if buf is None or len(buf) < WRITE_SLICE:
        buf = _buffers.view = memoryview(bytearray(WRITE_SLICE))
    return buf


def read_slices(store: ObjectStore, key: str, start: int, length: int) -> Iterator[memoryview]:
    """Exactly ``length`` bytes of ``key`` from ``start`` (one request), as :func:`slices_of` gives them."""
    with store.open_range(key, start, length) as body:
        yield from slices_of(body, key, length)


def slices_of(body: BinaryIO, key: str, length: int) -> Iterator[memoryview]:
    """The next ``length`` bytes of ``body`` (a stream of object ``key``), in slices of at most ``WRITE_SLICE``
    bytes read into this thread's :func:`slice_buffer` (each slice is valid until the next one is asked for).
    An object that ends early is damaged (a dropped connection is raised by the store as such, never taken for
    that)."""
    buf = slice_buffer()
    got = 0
    while got < length:
        n = body.readinto(buf[:min(WRITE_SLICE, length - got)])
        if not n:
            raise IntegrityError(f"{key} on the remote is shorter than its manifest says: the remote copy is "
                                 f"damaged, re-push the bundle from a good copy")
        got += n
        yield buf[:n]


def read_back(fd: int, start: int, end: int) -> Iterator[memoryview]:
    """Bytes ``start`` to ``end`` of the file ``fd``, in slices read into this thread's :func:`slice_buffer`."""
    buf = slice_buffer()
    pos = start
    while pos < end:
        n = os.preadv(fd, [buf[:min(WRITE_SLICE, end - pos)]], pos)
        if not n:
            raise IntegrityError(f"a pulled file is shorter than was written to it at {pos}: it was changed "
                                 f"while being pulled")
        pos += n
        yield buf[:n]


class _Object:
    """One large object being fetched: its file, its hash, and the parts landed but not yet hashed."""

    def __init__(self, key: str, size: int, dst: Path, on_bytes: Callable[[int], None],
                 verified: Callable[[str], None], first_seq: int):
        self.key, self.size, self.dst = key, size, dst
        self.on_bytes, self.verified = on_bytes, verified
        self.parts = part_bounds(size)
        self.first_seq = first_seq
        self.lock = threading.Lock()
        self.fd: Optional[int] = None
        self.sha = hashlib.sha256()
        self.landed: Set[int] = set()
        self.next = 0               # the next part to hash
        self.hashing = False        # a worker is hashing this object now
        self.finished = False       # verified (or rejected) and closed

    def open(self) -> int:
        with self.lock:
            if self.fd is None:
                self.fd = os.open(self.dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            return self.fd

    def close(self) -> None:
        with self.lock:
            fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


class Downloads:
    """The large objects of one pull, as part tasks for the pull's pool (see the module's docstring).

    ``add`` returns one task per part, to be run in the order given, by any number of threads; the callback
    ``verified(sha256)`` of an object runs on the worker that hashed its last part, after its file is closed
    (it checks the sha256 and raises when wrong). ``abort`` removes every file not verified: call it when the
    pull fails, after the pool has stopped."""

    def __init__(self, store: ObjectStore, window: int, stopping: Optional[threading.Event] = None):
        self.store = store
        self.window = max(1, window)
        self.stopping = stopping or threading.Event()
        self.cond = threading.Condition()
        self.issued = 0                     # parts handed out (sequence numbers 0 .. issued-1)
        self.oldest = 0                     # every part before this one is hashed
        self.hashed: set = set()            # parts hashed at or after ``oldest``
        self.objects: List[_Object] = []

    def add(self, key: str, size: int, dst: Path, on_bytes: Callable[[int], None],
            verified: Callable[[str], None]) -> List[Callable[[], None]]:
        obj = _Object(key, size, dst, on_bytes, verified, self.issued)
        self.issued += len(obj.parts)
        self.objects.append(obj)
        return [(lambda i=i: self._part(obj, i)) for i in range(len(obj.parts))]

    def abort(self) -> None:
        for obj in self.objects:
            obj.close()
            if not obj.finished:
                obj.dst.unlink(missing_ok=True)   # never keep bytes that were not verified

    def _part(self, obj: _Object, i: int) -> None:
        seq = obj.first_seq + i
        with self.cond:
            while seq >= self.oldest + self.window:
                if self.stopping.is_set():
                    raise RuntimeError("transfer cancelled")
                self.cond.wait(0.1)
        start, end = obj.parts[i]
        fd = obj.open()
        with obj.lock:
            hashing = not obj.hashing and obj.next == i   # the hash waits for this part: hash it as it comes
            obj.hashing = obj.hashing or hashing
        pos = start
        for chunk in read_slices(self.store, obj.key, start, end - start) if end > start else ():
            write_at(fd, chunk, pos)
            pos += len(chunk)
            if hashing:
                obj.sha.update(chunk)
        obj.on_bytes(end - start)
        if hashing:
            if self._hashed(obj):
                self._hash_landed(obj)
            return
        with obj.lock:
            obj.landed.add(i)
            if obj.hashing:
                return            # the worker hashing this object takes this part too
            obj.hashing = True
        self._hash_landed(obj)

    def _hashed(self, obj: _Object) -> bool:
        """The part the hash was waiting for is hashed: the window moves on; at the object's last part, its file
        is closed and checked. Whether the object has more parts."""
        with self.cond:
            self.hashed.add(obj.first_seq + obj.next)
            while self.oldest in self.hashed:
                self.hashed.discard(self.oldest)
                self.oldest += 1
            self.cond.notify_all()
        obj.next += 1
        if obj.next < len(obj.parts):
            return True
        obj.close()
        obj.finished = True     # from here on its fate is the callback's: verified, or removed by it
        obj.verified(obj.sha.hexdigest())
        return False

    def _hash_landed(self, obj: _Object) -> None:
        """Hash the landed parts of ``obj`` in order, as far as they go, read back from its file (one worker at a
        time per object)."""
        while True:
            with obj.lock:
                if obj.next not in obj.landed:
                    obj.hashing = False
                    return
                obj.landed.discard(obj.next)
                fd = obj.fd
            for chunk in read_back(fd, *obj.parts[obj.next]):
                obj.sha.update(chunk)
            if not self._hashed(obj):
                return
