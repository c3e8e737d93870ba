"""The transfer engine: push a local bundle to a remote, pull a remote bundle into a local context.

Used by ``dsdt push``/``pull``, the Luigi tasks and the container entrypoint. Its rules:

* **Small files travel packed.** Files below ``[disdat] pack_threshold`` (default 1 MiB; 0 turns packing
  off) are concatenated into pack objects (``packs/<sha256>``) of at most 8 MiB; the remote manifest
  records each file's pack and offset, so a pull fetches whole packs or byte ranges. A bundle of
  thousands of small files costs a handful of requests. Large files are one content-addressed blob each
  (``blobs/<sha[:2]>/<sha>``), readable on S3 by any tool.
* **Nothing is sent twice.** The previous version's manifest (one LIST, one GET) says which packed files
  and blobs are already up; other blobs are found with one LIST per sha prefix, never a request per file.
  A pull copies files it already has in any local bundle instead of fetching them.
* **Integrity.** Every pulled file is checked against its sha256 before it is kept; a mismatch fails the
  pull and the bad bytes are dropped.
* **Atomic and resumable.** The remote manifest is written last, after every object it names; a pull
  builds the bundle in ``tmp/pull-<uuid>/`` (verified files survive an interruption) and renames it into
  place. Running an interrupted push or pull again completes it.
* **Bounded.** One thread pool of ``[disdat] transfer_workers`` (default 10) per transfer over one shared
  client; a pack is built or read in memory, so at most workers x 8 MiB are held at once.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

from .. import config
from ..store.context import Bundle, Context, Staging
from .download import Downloads, slices_of, window_for
from ..errors import DiskFull, DisdatError, IntegrityError, NotFound, StoreDamaged
from ..fsutil import disk_space, require_space, sha256_file, write_at, write_new
from ..store.manifest import FileEntry, Manifest
from .progress import Listener, Progress
from . import Remote, transfer_workers
from .remote import blob_key, pack_key
from .s3 import MULTIPART
from .uploads import abort_orphaned, journaled

MiB = 1024 * 1024
# Packs of 1-8 MiB: enough of them to keep every worker busy, none so large that one PUT dominates
# (measured on SeaweedFS: 200 MB as 10 x 20 MB PUTs took 2.2 s, as 40 x 5 MB 1.3 s).
PACK_MAX = 8 * MiB
PACK_MIN = 1 * MiB
COALESCE_GAP = 1 * MiB      # ranged reads of one pack closer than this become one request
T = TypeVar("T")


@dataclass
class TransferStats:
    files: int = 0          # files whose bytes crossed the network
    bytes: int = 0          # payload bytes that crossed the network
    reused: int = 0         # files already at the destination (remote objects, or local copies on pull)


def pack_threshold() -> int:
    return config.get("disdat", "pack_threshold")


class _Pool:
    """A bounded thread pool for network requests. Many-small-file work (reading files into packs, cutting
    packs into files) stays on the calling thread: ten Python threads each opening and writing thousands
    of small files fight over the GIL (measured: a 2,000-file pull spent 1.4 s of system time in futex
    calls with 10 writer threads, against 0.1 s with one). ``window`` bounds the packs held in memory
    between the two sides; the first failure cancels what has not started and is raised."""

    def __init__(self, workers: int):
        self.executor = ThreadPoolExecutor(max_workers=workers)
        self.window = threading.BoundedSemaphore(2 * workers)
        self.futures: List[Future] = []
        self.stopping = threading.Event()

    def acquire(self) -> None:
        """A place in the window; gives up when the pool is being torn down after a failure (the calling
        thread then no longer frees places, and a worker waiting here would wait for ever)."""
        while not self.window.acquire(timeout=0.1):
            if self.stopping.is_set():
                raise RuntimeError("transfer cancelled")

    def submit(self, fn: Callable[..., T], *args) -> None:
        self.futures.append(self.executor.submit(fn, *args))

    def failed(self) -> None:
        """Raise the first failure so far (checked while the calling thread still has work to hand out)."""
        for f in self.futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]

    def results(self) -> Iterator:
        for f in as_completed(self.futures):
            yield f.result()

    def __enter__(self) -> "_Pool":
        return self

    def stop(self) -> None:
        """After a failure: nothing queued starts, and every task running now has ended when this returns."""
        self.stopping.set()
        self.executor.shutdown(wait=True, cancel_futures=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.stopping.set()
        self.executor.shutdown(wait=True, cancel_futures=exc_type is not None)


# ---------------------------------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------------------------------

def _known_locations(remote: Remote, name: str) -> Dict[str, FileEntry]:
    """sha256 -> remote location of every file in the newest remote version of ``name``."""
    try:
        previous = remote.latest(name)
    except NotFound:
        return {}
    return {e.sha256: e for e in previous.files.values()}


def plan_packs(items: List[Tuple[str, Path, int]], workers: int) -> List[List[Tuple[str, Path, int]]]:
    """Split (sha, path, size) items, in a fixed order, into packs sized so that the pool stays busy."""
    total = sum(size for _, _, size in items)
    target = min(PACK_MAX, max(PACK_MIN, math.ceil(total / max(1, workers))))
    packs: List[List[Tuple[str, Path, int]]] = []
    current: List[Tuple[str, Path, int]] = []
    filled = 0
    for item in items:
        if current and filled + item[2] > target:
            packs.append(current)
            current, filled = [], 0
        current.append(item)
        filled += item[2]
    if current:
        packs.append(current)
    return packs


def push(ctx: Context, remote: Remote, bundle: Bundle, quiet: bool = False,
         workers: Optional[int] = None, listener: Optional[Listener] = None) -> TransferStats:
    """Make ``bundle`` complete on the remote; a no-op when its manifest is already there."""
    if not bundle.committed:
        raise DisdatError(f"bundle {bundle.name} ({bundle.uuid}) is not committed: `dsdt commit -u {bundle.uuid}` "
                          f"first (only committed bundles are shared)")
    ctx.check_files_present(bundle)
    m = bundle.manifest
    if remote.has_bundle(m.uuid):
        return TransferStats(reused=len(m.files))
    abort_orphaned(ctx, remote.store)
    workers = workers or transfer_workers()
    by_sha: Dict[str, Tuple[FileEntry, Path]] = {}
    for rel in sorted(m.files):
        by_sha.setdefault(m.files[rel].sha256, (m.files[rel], bundle.path(rel)))

    known = _known_locations(remote, m.name)
    threshold = pack_threshold()
    blob_shas = {s for s, (e, _) in by_sha.items() if threshold == 0 or e.size >= threshold}
    located: Dict[str, FileEntry] = {s: known[s] for s in by_sha if s in known
                                     and (known[s].pack is None) == (s in blob_shas)}
    unknown_blobs = blob_shas - set(located)
    for s in remote.existing_blobs(unknown_blobs, workers):
        located[s] = FileEntry(s, by_sha[s][0].size)
    new_blobs = sorted(blob_shas - set(located))
    to_pack = [(s, p, e.size) for s, (e, p) in by_sha.items() if s not in blob_shas and s not in located]
    packs = plan_packs(to_pack, workers)

    stats = TransferStats(reused=sum(1 for rel in m.files if m.files[rel].sha256 in located))
    lock = threading.Lock()
    total_bytes = sum(by_sha[s][0].size for s in new_blobs) + sum(i[2] for i in to_pack)
    with Progress(f"push {m.name}", total_bytes, len(new_blobs) + len(to_pack),
                  enabled=False if quiet else None, listener=listener) as progress:

        def changed(path: Path) -> StoreDamaged:
            return StoreDamaged(f"bundle {m.name} ({m.uuid}) in context {ctx.name} is damaged: file "
                                f"{path.relative_to(bundle.files_dir)} was changed after it was added (its sha256 "
                                f"no longer matches); run `dsdt check --repair`")

        def upload_blob(sha: str) -> Dict[str, FileEntry]:
            """Only bytes that still match their sha256 go up under it: a file edited in place would otherwise
            poison the content address for everybody (and a later good push would skip it as present)."""
            entry, path = by_sha[sha]
            if entry.size <= MULTIPART:
                body = path.read_bytes()
                if hashlib.sha256(body).hexdigest() != sha:
                    raise changed(path)
                remote.store.put_bytes(blob_key(sha), body)
                progress.add_bytes(entry.size)
            else:
                if sha256_file(path)[0] != sha:
                    raise changed(path)
                with journaled(ctx, remote.store, blob_key(sha)):
                    remote.store.upload_file(blob_key(sha), path, progress.add_bytes)
            progress.add_files()
            with lock:
                stats.files += 1
                stats.bytes += entry.size
            return {sha: FileEntry(sha, entry.size)}

        def build_pack(items: List[Tuple[str, Path, int]]) -> bytes:
            parts = [p.read_bytes() for _, p, _ in items]
            for (sha, p, size), part in zip(items, parts):
                if len(part) != size or hashlib.sha256(part).hexdigest() != sha:
                    raise changed(p)
            return b"".join(parts)

        def upload_pack(items: List[Tuple[str, Path, int]], body: bytes) -> Dict[str, FileEntry]:
            try:
                pack = hashlib.sha256(body).hexdigest()
                sent = not remote.store.exists(pack_key(pack))  # it is there when resuming an interrupted push
                if sent:
                    remote.store.put_bytes(pack_key(pack), body)
            finally:
                pool.window.release()
            progress.add_bytes(len(body))
            progress.add_files(len(items))
            offsets: Dict[str, FileEntry] = {}
            offset = 0
            for sha, _, size in items:
                offsets[sha] = FileEntry(sha, size, pack, offset)
                offset += size
            with lock:
                if sent:
                    stats.files += len(items)
                    stats.bytes += len(body)
                else:
                    stats.reused += len(items)
            return offsets

        with _Pool(workers) as pool:
            for sha in new_blobs:
                pool.submit(upload_blob, sha)
            for items in packs:
                pool.acquire()
                try:
                    pool.failed()
                    body = build_pack(items)
                except BaseException:
                    pool.window.release()
                    raise
                pool.submit(upload_pack, items, body)
            for result in pool.results():
                located.update(result)

    files = {rel: replace(located[e.sha256], size=e.size) for rel, e in m.files.items()}
    remote.publish(replace(m, files=files, committed=True))
    return stats


# ---------------------------------------------------------------------------------------------------
# pull
# ---------------------------------------------------------------------------------------------------

def _is_intact(path: Path, entry: FileEntry) -> bool:
    try:
        if path.stat().st_size != entry.size:
            return False
    except FileNotFoundError:
        return False
    return sha256_file(path)[0] == entry.sha256


class _Writer:
    """Writes pulled files into the staging directory, checking every file against its sha256 before it
    is kept. Bytes in memory are checked before anything is written; a downloaded or copied file is checked
    on disk and removed when wrong. Files holding the same bytes are written once and copied.

    Files are written straight to their place in the (invisible until renamed) staging directory, from
    several threads: creating a file costs ~0.2 ms here, and that cost overlaps across threads.
    """

    def __init__(self, staging: Staging, rels_by_sha: Dict[str, List[str]], source: str):
        self.staging = staging
        self.rels_by_sha = rels_by_sha
        self.source = source
        self._dirs: set = set()

    def path(self, sha: str) -> Path:
        """Where the first file with these bytes goes (its directory created once)."""
        path = self.staging.files_dir / self.rels_by_sha[sha][0]
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)  # set.add is atomic under the GIL
        return path


    def _copies(self, sha: str) -> None:
        first, *others = self.rels_by_sha[sha]
        for rel in others:
            dst = self.staging.files_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.staging.files_dir / first, dst)

    def _reject(self, sha: str, why: str) -> None:
        raise IntegrityError(f"{self.rels_by_sha[sha][0]} from {self.source} is corrupt ({why}); it was not "
                             f"kept: re-push the bundle from a good copy")

    def from_bytes(self, data: memoryview, entry: FileEntry) -> None:
        if len(data) != entry.size:
            self._reject(entry.sha256, f"the object holds {len(data)} of the {entry.size} bytes its manifest says")
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            self._reject(entry.sha256, "sha256 mismatch")
        write_new(self.path(entry.sha256), data)
        self._copies(entry.sha256)

    def from_local(self, src: Path, entry: FileEntry) -> None:
        """Take the bytes of a local file with the same sha256 (checked: local files can be edited)."""
        dst = self.path(entry.sha256)
        shutil.copyfile(src, dst)
        if not _is_intact(dst, entry):
            dst.unlink()
            self._reject(entry.sha256, "sha256 mismatch")
        self._copies(entry.sha256)

    def from_slices(self, slices: Iterator[memoryview], entry: FileEntry) -> None:
        """A file whose bytes come in slices (:func:`~.download.slices_of`): written as they come and hashed
        beside, so they are never all in memory; removed when wrong."""
        sha, path = hashlib.sha256(), self.path(entry.sha256)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            pos = 0
            for chunk in slices:
                write_at(fd, chunk, pos)
                sha.update(chunk)
                pos += len(chunk)
        except BaseException:
            path.unlink()     # never keep bytes that were not verified (a pull's staging is kept to resume)
            raise
        finally:
            os.close(fd)
        self.downloaded(entry, sha.hexdigest())

    def downloaded(self, entry: FileEntry, sha: str) -> None:
        """A large object written to its place (by :class:`Downloads`), whose bytes hash to ``sha``."""
        if sha != entry.sha256:
            self.path(entry.sha256).unlink()
            self._reject(entry.sha256, "sha256 mismatch")
        self._copies(entry.sha256)


def read_exactly(stream, length: int) -> bytes:
    """``length`` bytes, or fewer only when the object itself ends early. A short read is retried until the
    stream says end-of-file: botocore checks the object's length there and raises when the connection was
    dropped, so a dropped connection is never taken for a damaged object."""
    parts, got = [], 0
    while got < length:
        chunk = stream.read(length - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def pack_runs(entries: List[FileEntry]) -> List[List[FileEntry]]:
    """Entries of one pack, by offset, grouped into runs that one ranged GET can serve."""
    runs: List[List[FileEntry]] = []
    for e in sorted(entries, key=lambda e: e.offset or 0):
        if runs:
            last = runs[-1][-1]
            if (e.offset or 0) - ((last.offset or 0) + last.size) <= COALESCE_GAP:
                runs[-1].append(e)
                continue
        runs.append([e])
    return runs


def pull(ctx: Context, remote: Remote, uuid: str, quiet: bool = False,
         workers: Optional[int] = None, listener: Optional[Listener] = None) -> Tuple[Bundle, TransferStats]:
    """Bring bundle ``uuid`` from the remote into ``ctx`` (files included, verified).

    The staging directory ``tmp/pull-<uuid>`` is locked while this process fills it, so a second pull of the
    same bundle waits and then finds it done. An interrupted pull keeps its verified files for the next one;
    a full disk removes them (the space is what is missing)."""
    if ctx.has(uuid):
        b = ctx.bundle(uuid)
        return b, TransferStats(reused=len(b.manifest.files))
    m = remote.manifest(uuid)
    needed = sum(e.size for e in m.files.values())
    what = f"pulling {m.name} ({len(m.files)} files)"
    require_space(ctx.tmp, needed - _staged_bytes(ctx.tmp / f"pull-{uuid}"), what)
    staging = ctx.stage(key=f"pull-{uuid}")
    try:
        if ctx.has(uuid):  # another process finished it while we waited for the lock
            staging.abandon()
            b = ctx.bundle(uuid)
            return b, TransferStats(reused=len(b.manifest.files))
        with disk_space(what, ctx.tmp, needed):
            stats = _fetch_files(ctx, remote, m, staging, quiet, workers or transfer_workers(), listener)
            bundle = staging.close(replace(m.without_locations(), committed=True))
    except DiskFull:
        staging.abandon()
        raise
    except BaseException:
        staging.release()
        raise
    return bundle, stats


def _staged_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        total += sum(os.lstat(os.path.join(root, n)).st_size for n in names)
    return total


def _fetch_files(ctx: Context, remote: Remote, m: Manifest, staging: Staging, quiet: bool,
                 workers: int, listener: Optional[Listener]) -> TransferStats:
    rels_by_sha: Dict[str, List[str]] = {}
    for rel in sorted(m.files):
        rels_by_sha.setdefault(m.files[rel].sha256, []).append(rel)
    writer = _Writer(staging, rels_by_sha, f"remote {remote.url}")
    stats = TransferStats()
    resuming = any(staging.files_dir.iterdir())
    local = ctx.local_copies(list(rels_by_sha))
    missing: Dict[str, FileEntry] = {}
    for sha, rels in rels_by_sha.items():
        entry = m.files[rels[0]]
        if resuming and all(_is_intact(staging.files_dir / r, entry) for r in rels):
            stats.reused += len(rels)
            continue
        try:
            if entry.size == 0:
                writer.from_bytes(memoryview(b""), entry)
            elif sha in local:
                writer.from_local(local[sha], entry)
            else:
                missing[sha] = entry
                continue
            stats.reused += len(rels)
        except (IntegrityError, OSError):
            missing[sha] = entry  # a local copy edited by hand: fetch the bytes instead

    lock = threading.Lock()
    by_pack: Dict[str, List[FileEntry]] = {}
    blobs: List[FileEntry] = []
    for e in missing.values():
        (by_pack.setdefault(e.pack, []) if e.pack else blobs).append(e)

    with Progress(f"pull {m.name}", sum(e.size for e in missing.values()), len(missing),
                  enabled=False if quiet else None, listener=listener) as progress:

        def counted(entries: List[FileEntry], bytes_shown: bool = False) -> None:
            if not bytes_shown:
                progress.add_bytes(sum(e.size for e in entries))
            progress.add_files(len(entries))
            with lock:
                stats.files += sum(len(rels_by_sha[e.sha256]) for e in entries)
                stats.bytes += sum(e.size for e in entries)

        Fetched = Tuple[List[FileEntry], memoryview, int]

        def write(fetched: Fetched) -> None:
            run, data, start = fetched
            try:
                for e in run:
                    at = (e.offset or 0) - start
                    writer.from_bytes(data[at:at + e.size], e)
            finally:
                pool.window.release()
            counted(run)

        def fetch_range(key: str, run: List[FileEntry], start: int, length: int) -> Optional[Fetched]:
            """One GET (a pack's run, or a small blob: at most 8 MiB). Files of 256 KiB and more on average are
            written here as their bytes come (:meth:`_Writer.from_slices`: hashing and writing them releases the
            GIL for long enough to overlap, and they never take fresh memory, which costs a page fault every 4
            KiB); runs of smaller files are read whole and cut out on the calling thread."""
            if length >= len(run) * 256 * 1024:
                with remote.store.open_range(key, start, length) as stream:
                    at = start
                    for e in run:
                        for _ in slices_of(stream, key, (e.offset or 0) - at):   # a gap between files
                            pass
                        writer.from_slices(slices_of(stream, key, e.size), e)
                        at = (e.offset or 0) + e.size
                counted(run)
                return None
            pool.acquire()
            try:
                with remote.store.open_range(key, start, length) as stream:
                    return run, memoryview(read_exactly(stream, length)), start
            except BaseException:
                pool.window.release()
                raise

        def fetch_blob(e: FileEntry) -> Optional[Fetched]:
            return fetch_range(blob_key(e.sha256), [e], 0, e.size)

        def verified(e: FileEntry) -> Callable[[str], None]:
            def check(sha: str) -> None:
                writer.downloaded(e, sha)
                counted([e], bytes_shown=True)
            return check

        with _Pool(workers) as pool:
            large = Downloads(remote.store, window_for(2 * workers * PACK_MAX), pool.stopping)
            try:
                for e in blobs:
                    if e.size <= MULTIPART:
                        pool.submit(fetch_blob, e)
                for e in blobs:  # every part of every large blob, in order: all the workers on the first ones
                    if e.size > MULTIPART:
                        for task in large.add(blob_key(e.sha256), e.size, writer.path(e.sha256),
                                              progress.add_bytes, verified(e)):
                            pool.submit(task)
                for pack, entries in by_pack.items():
                    for run in pack_runs(entries):
                        start, end = run[0].offset or 0, (run[-1].offset or 0) + run[-1].size
                        pool.submit(fetch_range, pack_key(pack), run, start, end - start)
                for fetched in pool.results():
                    if fetched is not None:
                        write(fetched)
            except BaseException:
                pool.stop()
                large.abort()
                raise
    return stats
