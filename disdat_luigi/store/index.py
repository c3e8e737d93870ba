"""The SQLite index of one local context: which bundles exist, their names, tags and files.

The manifests under ``objects/<uuid>/`` are the truth; the index makes lookups by name, tag, uuid,
processing id, run id and file sha256 cheap. WAL mode and ``BEGIN IMMEDIATE`` let several ``dsdt``
processes write to one context at the same time: writers queue on the lock (up to ``timeout``) instead
of failing.

An index is created only when asked (a new context, or ``dsdt check --repair`` rebuilding it from the
manifests). A missing, empty or unreadable index file is reported as damage, never silently replaced by an
empty one: that would make every bundle vanish from ``dsdt ls``.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from ..errors import DisdatError, DiskFull, StoreDamaged
from ..fsutil import free_bytes, is_disk_full, no_room, out_of_inodes
from .manifest import Manifest

REPAIR = "run `dsdt check --repair` to rebuild it from the bundles on disk"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created TEXT NOT NULL,
    committed INTEGER NOT NULL DEFAULT 0,
    processing_id TEXT,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS bundles_by_name ON bundles(name, created);
CREATE INDEX IF NOT EXISTS bundles_by_processing_id ON bundles(processing_id);
CREATE INDEX IF NOT EXISTS bundles_by_run_id ON bundles(run_id);
CREATE TABLE IF NOT EXISTS tags (
    uuid TEXT NOT NULL REFERENCES bundles(uuid) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (uuid, key)
);
CREATE TABLE IF NOT EXISTS files (
    uuid TEXT NOT NULL REFERENCES bundles(uuid) ON DELETE CASCADE,
    relpath TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (uuid, relpath)
);
CREATE INDEX IF NOT EXISTS files_by_sha256 ON files(sha256);
"""


@dataclass(frozen=True)
class BundleRow:
    uuid: str
    name: str
    created: str
    committed: bool
    tags: Dict[str, str]


def _no_journal(exc: sqlite3.DatabaseError) -> bool:
    """What SQLite says when it cannot write or create its -wal/-shm files (no byte, or no inode, left)."""
    return "disk I/O error" in str(exc) or "unable to open database file" in str(exc)


@contextmanager
def _sqlite_errors(path: Path) -> Iterator[None]:
    """SQLite's failures as one line: a damaged file, a full disk, a lock held too long."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc):
            raise  # the command's own disk_space() says what it was writing
        if _no_journal(exc) and ((free_bytes(path.parent) or 0) < 1 << 20 or out_of_inodes(path.parent)):
            lack, fix = no_room(path.parent)
            raise DiskFull(f"{lack} (SQLite could not write its journal for {path}): {fix} and run it again"
                           ) from None
        if "locked" in str(exc) or "busy" in str(exc):
            raise DisdatError(f"the index {path} stayed locked by another dsdt process: try again") from None
        raise StoreDamaged(f"the index {path} is damaged ({exc}): {REPAIR}") from None


class Index:
    def __init__(self, path: Path, timeout: float = 60.0, create: bool = False):
        """Open the index at ``path``; ``create`` makes a new one when there is none (and only then)."""
        self.path = path
        fresh = not path.exists() or path.stat().st_size == 0
        if fresh and not create:
            raise StoreDamaged(f"the index {path} is {'empty' if path.exists() else 'missing'}: {REPAIR}")
        with _sqlite_errors(path):
            self._db = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if fresh:
                with self._write() as db:
                    for statement in filter(str.strip, _SCHEMA.split(";")):
                        db.execute(statement)
            elif self._db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN "
                                  "('bundles', 'tags', 'files')").fetchone()[0] != 3:
                raise StoreDamaged(f"the index {path} lacks its tables: {REPAIR}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with _sqlite_errors(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, args: Sequence = ()) -> list:
        with _sqlite_errors(self.path):
            return self._db.execute(sql, args).fetchall()

    # -- writes ------------------------------------------------------------------------------------
    def insert(self, m: Manifest) -> None:
        lineage = m.lineage or {}
        processing_id, run_id = lineage.get("processing_id"), lineage.get("run_id")
        with self._write() as db:
            db.execute("INSERT INTO bundles (uuid, name, created, committed, processing_id, run_id) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (m.uuid, m.name, m.created, int(m.committed), processing_id,
                                                     run_id))
            db.executemany("INSERT INTO tags (uuid, key, value) VALUES (?, ?, ?)",
                           [(m.uuid, k, v) for k, v in m.tags.items()])
            db.executemany("INSERT INTO files (uuid, relpath, sha256) VALUES (?, ?, ?)",
                           [(m.uuid, rel, e.sha256) for rel, e in m.files.items()])

    def commit(self, uuid: str, tags: Dict[str, str]) -> None:
        with self._write() as db:
            db.execute("UPDATE bundles SET committed = 1 WHERE uuid = ?", (uuid,))
            db.executemany("INSERT OR REPLACE INTO tags (uuid, key, value) VALUES (?, ?, ?)",
                           [(uuid, k, v) for k, v in tags.items()])

    def delete(self, uuids: Sequence[str]) -> None:
        with self._write() as db:
            db.executemany("DELETE FROM bundles WHERE uuid = ?", [(u,) for u in uuids])

    # -- reads -------------------------------------------------------------------------------------
    def _rows(self, where: str, args: Sequence, order: str = "b.name, b.created DESC, b.rowid DESC",
              limit: Optional[int] = None) -> List[BundleRow]:
        sql = (f"SELECT b.uuid, b.name, b.created, b.committed FROM bundles b WHERE {where} ORDER BY {order}"
               + (f" LIMIT {int(limit)}" if limit else ""))
        rows = self._read(sql, args)
        if not rows:
            return []
        marks = ",".join("?" * len(rows))
        tags: Dict[str, Dict[str, str]] = {}
        for u, k, v in self._read(f"SELECT uuid, key, value FROM tags WHERE uuid IN ({marks})", [r[0] for r in rows]):
            tags.setdefault(u, {})[k] = v
        return [BundleRow(u, n, c, bool(cm), tags.get(u, {})) for u, n, c, cm in rows]

    def get(self, uuid: str) -> Optional[BundleRow]:
        rows = self._rows("b.uuid = ?", [uuid])
        return rows[0] if rows else None

    def find(self, patterns: Sequence[str] = (), tags: Optional[Dict[str, str]] = None,
             committed: Optional[bool] = None, latest_only: bool = False) -> List[BundleRow]:
        """Bundles whose name matches any glob in ``patterns`` and that carry every tag in ``tags``.

        With ``latest_only``, only the newest matching version of each name.
        """
        where, args = ["1"], []
        if patterns:
            where.append("(" + " OR ".join("b.name GLOB ?" for _ in patterns) + ")")
            args += list(patterns)
        for k, v in (tags or {}).items():
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.uuid = b.uuid AND t.key = ? AND t.value = ?)")
            args += [k, v]
        if committed is not None:
            where.append("b.committed = ?")
            args.append(int(committed))
        rows = self._rows(" AND ".join(where), args)
        if latest_only:
            seen: set = set()
            rows = [r for r in rows if not (r.name in seen or seen.add(r.name))]
        return rows

    def latest(self, name: str, tags: Optional[Dict[str, str]] = None) -> Optional[BundleRow]:
        rows = self.find([name], tags, latest_only=True)  # names never hold glob characters
        return rows[0] if rows else None

    def by_processing_id(self, processing_id: str) -> Optional[BundleRow]:
        rows = self._rows("b.processing_id = ?", [processing_id], order="b.created DESC", limit=1)
        return rows[0] if rows else None

    def by_run_id(self, run_id: str) -> Optional[BundleRow]:
        rows = self._rows("b.run_id = ?", [run_id], order="b.created DESC", limit=1)
        return rows[0] if rows else None

    def files_with_sha256(self, shas: Sequence[str]) -> Dict[str, tuple]:
        """sha256 -> (uuid, relpath) of some local file with those bytes, for pulls that copy instead of fetch."""
        found: Dict[str, tuple] = {}
        for i in range(0, len(shas), 500):  # SQLite's bound-parameter limit
            batch = shas[i:i + 500]
            sql = f"SELECT sha256, uuid, relpath FROM files WHERE sha256 IN ({','.join('?' * len(batch))})"
            for sha, uuid, rel in self._read(sql, batch):
                found[sha] = (uuid, rel)
        return found
