"""Small filesystem helpers shared by the local store, the file remote and the transfer engine."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Tuple

from .errors import DiskFull

CHUNK = 1 << 20
# Large writes go to the kernel in slices of this size. On a VM that hands free memory back to its host (free page
# reporting: cloud VMs, Firecracker), one large write lands in large page-cache folios made of exactly those
# blocks, and every first touch faults them back in: measured here, 1 GiB written in 16 MiB writes cost 1.9-2.2 s
# of system time, in 256 KiB writes 0.4-0.55 s (1 MiB is already too large). s5cmd writes 32 KiB at a time.
WRITE_SLICE = 256 * 1024


def write_at(fd: int, data, pos: int) -> None:
    """Write all of ``data`` at ``pos`` of ``fd``, in slices of :data:`WRITE_SLICE` (a nearly full disk writes
    less than asked: go on until ENOSPC is raised)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view[:WRITE_SLICE], pos)
        view, pos = view[written:], pos + written


def write_new(path: Path, data) -> None:
    """``path`` created (or truncated) with ``data`` as its content, written by :func:`write_at`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        write_at(fd, data, 0)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as f:
        f.write(data)


@contextlib.contextmanager
def replacing(path: Path, dir_fd: Optional[int] = None) -> Iterator[BinaryIO]:
    """A new hidden file next to ``path`` (relative to the directory ``dir_fd``, if given) that replaces it when
    the block ends, and is removed if the block fails: readers see the old content or the new, never a part.

    It is created as any new file is (0666 less the umask, or the directory's default ACL), not 0600 as
    ``mkstemp`` makes it: a file:// remote is shared between users. It is never created through a symbolic
    link, and the rename replaces a link at ``path`` rather than writing through it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def _hash_stream(src: BinaryIO, sink: Optional[BinaryIO] = None) -> Tuple[str, int]:
    h, size = hashlib.sha256(), 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            return h.hexdigest(), size
        h.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)


def copy_and_hash(src: BinaryIO, dst_path: Path) -> Tuple[str, int]:
    """Copy a stream into a new file, hashing on the way (one read of the source). Returns (sha256, size)."""
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    with open(dst_path, "wb") as out:
        return _hash_stream(src, out)


def sha256_file(path: Path) -> Tuple[str, int]:
    with open(path, "rb") as f:
        return _hash_stream(f)


def user_cache() -> Path:
    """disdat-luigi's directory in the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "disdat-luigi"


# ---------------------------------------------------------------------------------------------------
# full disks: one line saying what, where and how much, instead of a traceback or a hang
# ---------------------------------------------------------------------------------------------------

def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _existing(path: Path) -> Path:
    """``path``, or its nearest parent that exists (where a write to ``path`` would land)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: Path) -> Optional[int]:
    """Free space for an unprivileged writer on the filesystem holding ``path`` (its nearest existing parent)."""
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return None


def out_of_inodes(path: Path) -> bool:
    """The filesystem holding ``path`` has no inode left for an unprivileged writer: creating a file fails with
    ENOSPC although bytes are free (many small files on ext4 or a tmpfs). Filesystems without a fixed inode
    table (btrfs, ...) report none of none: they never run out."""
    try:
        st = os.statvfs(_existing(path))
    except OSError:
        return False
    return st.f_files > 0 and st.f_favail == 0


def no_room(where: Path) -> Tuple[str, str]:
    """What the device of ``where`` lacks (bytes, or inodes while bytes are free), and what to do about it."""
    free = free_bytes(where)
    have = f" ({human_bytes(free)} free)" if free is not None else ""
    if out_of_inodes(where):
        return f"no free inodes (files) left on the device of {where}{have}", "remove files from it"
    return f"no space left on the device of {where}{have}", "free some space"


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return type(exc).__name__ == "OperationalError" and "disk is full" in str(exc)  # sqlite3's SQLITE_FULL


def _full(what: str, where: Path, needed: Optional[int]) -> DiskFull:
    lack, fix = no_room(where)
    need = f", which needs {human_bytes(needed)}" if needed else ""
    return DiskFull(f"{lack} while {what}{need}: {fix} and run it again (nothing partial was kept)")


def require_space(where: Path, needed: int, what: str) -> None:
    """Refuse before writing anything when ``needed`` bytes cannot fit (a margin of 1 MB for metadata), or no
    file can be created at all."""
    free = free_bytes(where)
    if (free is not None and needed + (1 << 20) > free) or out_of_inodes(where):
        raise _full(what, where, needed)


@contextlib.contextmanager
def disk_space(what: str, where: Path, needed: Optional[int] = None) -> Iterator[None]:
    """Turn a full disk inside the block into one DiskFull line. Use it inside the block that removes the partial
    files, so that the device is looked at as the write found it: one out of inodes has them back once they are
    gone."""
    try:
        yield
    except (OSError, Exception) as exc:
        if is_disk_full(exc):
            raise _full(what, where, needed) from None
        raise
