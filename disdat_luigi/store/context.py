"""One local context: its bundles (``objects/<uuid>/``), its SQLite index and its remote binding.

Every bundle is built in a staging directory on the same filesystem (``tmp/``) and renamed into
``objects/<uuid>/`` only when its files and manifest are complete; the index row is written after the
rename, so a bundle is either fully there or not listed at all. Files are never changed afterwards.

A staging directory is flock'ed by the process building it (``tmp/<key>.lock``). One whose lock is free
belongs to a process that died (a killed ``dsdt add`` or ``pull``); the next command that stages in this
context removes it (pulls, which resume, after an hour), and ``dsdt check`` reports and removes the rest.
Damage (a manifest or file gone, a bad ``remote.json``) is one StoreDamaged line naming the fix.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Dict, Iterable, List, Optional, Sequence

from . import values
from ..errors import DisdatError, IntegrityError, NotFound, StoreDamaged
from ..fsutil import atomic_write, copy_and_hash, disk_space, is_disk_full, require_space, sha256_file
from .index import BundleRow, Index
from .manifest import FileEntry, Manifest, check_name, check_relpath, check_uuid, new_uuid

REPAIR = "run `dsdt check --repair`"
STALE_PULL_SECONDS = 3600      # an interrupted pull's verified files are kept this long for a resume
_GRACE_SECONDS = 10            # a staging directory this young may not have taken its lock yet

MANIFEST = "manifest.json"
FILES = "files"


@dataclass(frozen=True)
class RemoteBinding:
    remote_context: str
    url: str


@dataclass
class Bundle:
    """A closed bundle in a local context (read-only)."""

    manifest: Manifest
    dir: Path

    @property
    def uuid(self) -> str:
        return self.manifest.uuid

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def tags(self) -> Dict[str, str]:
        return dict(self.manifest.tags)

    @property
    def committed(self) -> bool:
        return self.manifest.committed

    @property
    def files_dir(self) -> Path:
        return self.dir / FILES

    def path(self, rel: str) -> Path:
        return self.files_dir / rel

    def data(self, load_frames: bool = True, mark_text: bool = False) -> Any:
        """The bundle's value as Python, file items as absolute local paths (``mark_text``: for pipes, see
        :class:`~disdat_luigi.store.values.DataText`)."""
        return values.decode(self.manifest.data, self.files_dir, load_frames, mark_text)


class Staging:
    """A bundle being built: files go under ``dir/files``; :meth:`close` publishes it atomically."""

    def __init__(self, context: "Context", key: Optional[str] = None):
        self.context = context
        key = key or f"stage-{new_uuid()}"
        self.dir = context.tmp / key
        self.files_dir = self.dir / FILES
        context.sweep_stale()
        self._lock: Optional[IO] = hold_lock(context.tmp / f"{key}.lock")
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.entries: Dict[str, FileEntry] = {}

    def new_file(self, rel: str) -> Path:
        path = self.files_dir / check_relpath(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add_file(self, src: Path, rel: str) -> str:
        """Copy ``src`` into the bundle as ``rel`` (hashing in the same pass)."""
        if rel in self.entries:
            raise DisdatError(f"two inputs would both be stored as {rel!r} in the bundle: rename one")
        try:
            with open(src, "rb") as f:
                self.entries[rel] = FileEntry(*copy_and_hash(f, self.new_file(rel)))
        except OSError as exc:
            if is_disk_full(exc):
                raise  # the destination is full, not the source unreadable: the caller's disk_space() says so
            raise DisdatError(f"cannot read {src}: {exc.strerror}") from None
        return rel

    def adopt(self, path: Path) -> str:
        """Make ``path`` part of the bundle: in place when it is already inside, else copied in."""
        path = Path(os.path.abspath(path))
        try:
            rel = path.relative_to(self.files_dir).as_posix()
        except ValueError:
            return self.add_file(path, self._unused_name(path.name))
        if rel not in self.entries:
            self.entries[rel] = FileEntry(*sha256_file(path))
        return rel

    def _unused_name(self, name: str) -> str:
        stem, dot, ext = name.partition(".")
        candidate, n = name, 1
        while candidate in self.entries or (self.files_dir / candidate).exists():
            candidate = f"{stem}-{n}{dot}{ext}"
            n += 1
        return candidate

    def close(self, manifest: Manifest) -> Bundle:
        """Write the manifest, rename into ``objects/<uuid>``, then index it."""
        final = self.context.objects / manifest.uuid
        atomic_write(self.dir / MANIFEST, manifest.to_json())
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.dir, final)
        except OSError:
            raise DisdatError(f"bundle {manifest.uuid} already exists in context {self.context.name}") from None
        try:
            self.context.index.insert(manifest)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)  # unlisted files are no bundle: do not leave them behind
            raise
        finally:
            self._unlock(remove_lock_file=True)
        return Bundle(manifest, final)

    def abandon(self) -> None:
        """Remove everything staged so far."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self._unlock(remove_lock_file=True)

    def release(self) -> None:
        """Keep what is staged (a pull resumes from it) but let others take over."""
        self._unlock(remove_lock_file=False)

    def _unlock(self, remove_lock_file: bool) -> None:
        if self._lock is not None:
            if remove_lock_file:
                Path(self._lock.name).unlink(missing_ok=True)
            release_lock(self._lock)
            self._lock = None

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abandon()


def _rel_paths(paths: Sequence[Path]) -> List[tuple]:
    """(source, relative path) for every file in ``paths``; directories keep their own name as top level."""
    out = []
    for p in paths:
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs.sort()
                for n in sorted(names):
                    src = Path(root) / n
                    out.append((src, src.relative_to(p.parent).as_posix()))
        elif p.is_file():
            out.append((p, p.name))
        elif p.exists():
            raise DisdatError(f"cannot add {p}: it is neither a file nor a directory")
        else:
            raise DisdatError(f"cannot add {p}: no such file or directory")
    for src, _ in out:
        if not os.access(src, os.R_OK):
            raise DisdatError(f"cannot add {src}: permission denied")
    return out


def hold_lock(path: Path) -> IO:
    """An exclusive flock on ``path`` (waiting for it): the kernel frees it when this process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def release_lock(f: IO) -> None:
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


def lock_is_free(path: Path) -> bool:
    """Nobody holds the flock on ``path`` (so whoever created it is gone)."""
    try:
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Leftover:
    path: Path
    kind: str       # "staging" (an add or apply), "pull" (resumable) or "trash" (a removal)
    age: float      # seconds since it was last changed
    size: int       # bytes


class Context:
    def __init__(self, root: Path, name: str):
        self.name = check_name(name, "context name")
        self.path = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self._index: Optional[Index] = None
        self._swept = False

    @property
    def index_path(self) -> Path:
        return self.path / "index.sqlite"

    @property
    def index(self) -> Index:
        if self._index is None:
            self.tmp.mkdir(parents=True, exist_ok=True)
            self._index = Index(self.index_path, create=not self._has_objects())
        return self._index

    def _has_objects(self) -> bool:
        try:
            return any(True for _ in os.scandir(self.objects))
        except FileNotFoundError:
            return False

    # -- leftovers of killed commands ------------------------------------------------------------------
    def leftovers(self) -> List[Leftover]:
        """Staging, pull and trash directories in ``tmp/`` that no live process owns."""
        out = []
        try:
            entries = list(os.scandir(self.tmp))
        except FileNotFoundError:
            return []
        now = time.time()
        for e in entries:
            kind = next((k for p, k in (("stage-", "staging"), ("pull-", "pull"), ("trash-", "trash"))
                         if e.name.startswith(p)), None)
            try:
                if kind is None or not e.is_dir(follow_symlinks=False):
                    continue
                age = now - e.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue  # another command just finished with it
            if age < _GRACE_SECONDS or (kind != "trash" and not lock_is_free(self.tmp / f"{e.name}.lock")):
                continue
            out.append(Leftover(Path(e.path), kind, age, _tree_size(Path(e.path))))
        return out

    def remove_leftover(self, leftover: Leftover) -> None:
        shutil.rmtree(leftover.path, ignore_errors=True)
        (self.tmp / f"{leftover.path.name}.lock").unlink(missing_ok=True)

    def sweep_stale(self) -> None:
        """Remove what killed commands left in ``tmp/`` (once per process; a pull's after an hour)."""
        if self._swept:
            return
        self._swept = True
        for leftover in self.leftovers():
            if leftover.kind != "pull" or leftover.age > STALE_PULL_SECONDS:
                self.remove_leftover(leftover)

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    # -- remote binding ----------------------------------------------------------------------------
    @property
    def remote(self) -> Optional[RemoteBinding]:
        path = self.path / "remote.json"
        try:
            d = json.loads(path.read_text())
            binding = RemoteBinding(check_name(d["remote_context"], "remote context name"), d["url"])
            if not isinstance(binding.url, str) or "://" not in binding.url:
                raise ValueError("no URL")
            return binding
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, DisdatError, UnicodeDecodeError):
            raise StoreDamaged(f"the remote binding of context {self.name} ({path}) is damaged: bind it again with "
                               f"`dsdt remote REMOTE_CONTEXT URL`") from None

    def bind_remote(self, binding: RemoteBinding) -> None:
        atomic_write(self.path / "remote.json", json.dumps(binding.__dict__).encode())

    def require_remote(self) -> RemoteBinding:
        binding = self.remote
        if binding is None:
            raise DisdatError(f"context {self.name} has no remote: bind one with `dsdt remote REMOTE_CONTEXT "
                              f"s3://bucket/prefix` (or file:///dir)")
        return binding

    # -- building ------------------------------------------------------------------------------------
    def stage(self, key: Optional[str] = None) -> Staging:
        return Staging(self, key)

    def add_paths(self, name: str, paths: Iterable[Path], tags: Optional[Dict[str, str]] = None) -> Bundle:
        """A new bundle holding files and directories (kept with their relative paths)."""
        check_name(name)
        sources = _rel_paths([Path(p) for p in paths])
        needed = sum(src.stat().st_size for src, _ in sources)
        what = f"adding {name} ({len(sources)} files)"
        require_space(self.tmp, needed, what)
        with self.stage() as st, disk_space(what, self.tmp, needed):
            data = [{values.FILE: st.add_file(src, rel)} for src, rel in sources]
            return st.close(Manifest(name=name, tags=dict(tags or {}), presentation="files", data=data,
                                     files=st.entries))

    def add_value(self, name: str, value: Any, tags: Optional[Dict[str, str]] = None, committed: bool = False,
                  lineage: Optional[dict] = None, staging: Optional[Staging] = None) -> Bundle:
        """A new bundle holding a Python value (files in it are copied in, or adopted from ``staging``)."""
        check_name(name)
        st = staging or self.stage()
        with st, disk_space(f"storing bundle {name}", self.tmp):
            presentation, data = values.encode(value, st.adopt, st.new_file)
            _drop_unreferenced(st, data)
            manifest = Manifest(name=name, tags=dict(tags or {}), committed=committed,
                                presentation=presentation, data=data, files=st.entries, lineage=lineage)
            return st.close(manifest)

    # -- reading -------------------------------------------------------------------------------------
    def bundle(self, uuid: str) -> Bundle:
        row = self.index.get(uuid)
        if row is None:
            raise NotFound(f"no bundle with uuid {uuid} in context {self.name} (see `dsdt ls -v`)")
        return self._load(row)

    def latest(self, name: str, tags: Optional[Dict[str, str]] = None) -> Bundle:
        row = self.index.latest(check_name(name), tags)
        if row is None:
            with_tags = f" with tags {_fmt_tags(tags)}" if tags else ""
            raise NotFound(f"no bundle named {name}{with_tags} in context {self.name} (see `dsdt ls`)")
        return self._load(row)

    def by_uuid_or_name(self, text: str) -> Bundle:
        """The bundle whose uuid is ``text``, else the latest version named ``text`` (``dsdt lineage X``,
        ``dsdt report X``)."""
        try:
            if self.has(check_uuid(text)):
                return self.bundle(text)
        except IntegrityError:
            pass  # not a uuid: a name
        try:
            return self.latest(text)
        except NotFound:
            raise NotFound(f"no bundle with uuid or name {text} in context {self.name} (see `dsdt ls -v`)") from None

    def resolve(self, name: Optional[str] = None, uuid: Optional[str] = None,
                tags: Optional[Dict[str, str]] = None) -> Bundle:
        return self.bundle(uuid) if uuid else self.latest(name, tags)  # type: ignore[arg-type]

    def find(self, patterns: Sequence[str] = (), tags: Optional[Dict[str, str]] = None,
             committed: Optional[bool] = None, latest_only: bool = False) -> List[BundleRow]:
        return self.index.find(patterns, tags, committed, latest_only)

    def by_processing_id(self, processing_id: str) -> Optional[Bundle]:
        row = self.index.by_processing_id(processing_id)
        return self._load(row) if row else None

    def by_run_id(self, run_id: str) -> Optional[Bundle]:
        row = self.index.by_run_id(run_id)
        return self._load(row) if row else None

    def has(self, uuid: str) -> bool:
        return self.index.get(uuid) is not None

    def local_copies(self, shas: Sequence[str]) -> Dict[str, Path]:
        """Local files with these bytes (sha256 -> path), where any bundle here has them."""
        found = self.index.files_with_sha256(shas)
        return {sha: self.objects / uuid / FILES / rel for sha, (uuid, rel) in found.items()}

    def _load(self, row: BundleRow) -> Bundle:
        d = self.objects / row.uuid
        try:
            manifest = Manifest.from_json((d / MANIFEST).read_bytes())
            if manifest.uuid != row.uuid:
                raise IntegrityError(f"field uuid names bundle {manifest.uuid}")
        except FileNotFoundError:
            raise StoreDamaged(f"bundle {row.name} ({row.uuid}) in context {self.name} is damaged: its manifest is "
                               f"missing; {REPAIR}") from None
        except IntegrityError as exc:
            raise StoreDamaged(f"bundle {row.name} ({row.uuid}) in context {self.name} is damaged: {exc}; "
                               f"{REPAIR}") from None
        # committed state and tags may have changed after the manifest was first written
        manifest = replace(manifest, committed=row.committed, tags=row.tags)
        return Bundle(manifest, d)

    def check_files_present(self, bundle: Bundle) -> None:
        """Every file of the bundle is there with its recorded size (a stat each: cheap, before a push)."""
        for rel, entry in bundle.manifest.files.items():
            try:
                size = bundle.path(rel).stat().st_size
            except FileNotFoundError:
                size = None
            if size != entry.size:
                state = "missing" if size is None else f"{size} bytes instead of {entry.size}"
                raise StoreDamaged(f"bundle {bundle.name} ({bundle.uuid}) in context {self.name} is damaged: file "
                                   f"{rel} is {state}; {REPAIR}")

    # -- changing ------------------------------------------------------------------------------------
    def commit(self, bundle: Bundle, tags: Optional[Dict[str, str]] = None) -> Bundle:
        tags = dict(tags or {})
        if bundle.committed:
            if tags and any(bundle.tags.get(k) != v for k, v in tags.items()):
                raise DisdatError(f"bundle {bundle.name} ({bundle.uuid}) is already committed: its tags cannot "
                                  f"change")
            return bundle
        manifest = replace(bundle.manifest, committed=True, tags={**bundle.tags, **tags})
        atomic_write(bundle.dir / MANIFEST, manifest.to_json())
        self.index.commit(bundle.uuid, manifest.tags)
        return Bundle(manifest, bundle.dir)

    def remove(self, uuids: Sequence[str]) -> None:
        """Unlist first, then delete the files, so nothing ever lists a half-removed bundle."""
        self.index.delete(uuids)
        for u in uuids:
            trash = self.tmp / f"trash-{u}-{time.monotonic_ns()}"
            try:
                os.rename(self.objects / u, trash)
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
            except OSError:
                pass
    return total


def _drop_unreferenced(st: Staging, data: Any) -> None:
    """Scratch files a pipe left in its output directory but did not return are not part of the bundle."""
    keep = set(values.file_refs(data))
    for rel in [r for r in st.entries if r not in keep]:
        del st.entries[rel]
    for root, _dirs, names in os.walk(st.files_dir):
        for n in names:
            p = Path(root) / n
            if p.relative_to(st.files_dir).as_posix() not in keep:
                p.unlink()


def _fmt_tags(tags: Optional[Dict[str, str]]) -> str:
    return " ".join(f"{k}:{v}" for k, v in (tags or {}).items())
