"""The bundle manifest: one JSON document per bundle version, the same locally and on a remote.

A manifest is the whole truth about a bundle: its identity (name, uuid, created), its tags and commit
state, how its ``data`` maps back to Python (``presentation``), the files it holds (relative path ->
sha256 and size, plus where the bytes live on a remote) and its lineage. Every manifest read from disk or
from a remote goes through :meth:`Manifest.from_json`, which refuses anything that could escape the
bundle directory or that does not follow the format.
"""
from __future__ import annotations

import json
import re
import uuid as uuidlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Dict, Iterable, Optional

from ..errors import DisdatError, IntegrityError

FORMAT = 1
PRESENTATIONS = ("dict", "list", "scalar", "files", "dataframe")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_name(name: str, what: str = "bundle name") -> str:
    """Bundle and context names end up in paths and S3 keys: letters, digits, '.', '_' and '-' only."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DisdatError(f"invalid {what} {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                          f"letter or digit")
    return name


def parse_tag(text: str) -> tuple[str, str]:
    """``key:value`` -> (key, value). Exactly one colon and a non-empty key."""
    if text.count(":") != 1:
        raise DisdatError(f"bad tag {text!r}: write tags as key:value with exactly one ':'")
    key, value = text.split(":")
    if not key.strip():
        raise DisdatError(f"bad tag {text!r}: the key before ':' is empty")
    return key, value


def parse_tags(texts: Optional[Iterable[str]]) -> Dict[str, str]:
    return dict(parse_tag(t) for t in (texts or ()))


def check_relpath(path: str) -> str:
    """A file's path inside a bundle: relative, POSIX, no '..' or '.' parts, nothing that escapes."""
    p = PurePosixPath(path) if isinstance(path, str) else None
    if (p is None or not path or "\\" in path or "\0" in path or p.is_absolute()
            or any(part in ("", ".", "..") for part in path.split("/"))):
        raise IntegrityError(f"unsafe file path {path!r} in a bundle: paths must be relative and stay inside "
                             f"the bundle")
    return path


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_uuid() -> str:
    return str(uuidlib.uuid4())


@dataclass
class FileEntry:
    """One file of a bundle. ``pack``/``offset`` say where its bytes sit on a remote when it travels packed."""

    sha256: str
    size: int
    pack: Optional[str] = None
    offset: Optional[int] = None

    def to_dict(self) -> dict:
        d: Dict[str, Any] = {"sha256": self.sha256, "size": self.size}
        if self.pack is not None:
            d.update(pack=self.pack, offset=self.offset)
        return d

    @classmethod
    def from_dict(cls, rel: str, d: Any) -> "FileEntry":
        try:
            entry = cls(d["sha256"], d["size"], d.get("pack"), d.get("offset"))
        except (TypeError, KeyError):
            raise IntegrityError(f"file entry for {rel!r} lacks sha256 or size") from None
        if not (isinstance(entry.sha256, str) and _SHA256.match(entry.sha256)):
            raise IntegrityError(f"file entry for {rel!r} has a malformed sha256")
        if not isinstance(entry.size, int) or entry.size < 0:
            raise IntegrityError(f"file entry for {rel!r} has a bad size")
        if entry.pack is not None and not (_SHA256.match(str(entry.pack)) and isinstance(entry.offset, int)
                                           and entry.offset >= 0):
            raise IntegrityError(f"file entry for {rel!r} has a bad pack location")
        return entry


@dataclass
class Manifest:
    name: str
    uuid: str = field(default_factory=new_uuid)
    created: str = field(default_factory=now_utc)
    tags: Dict[str, str] = field(default_factory=dict)
    committed: bool = False
    presentation: str = "scalar"
    data: Any = None
    files: Dict[str, FileEntry] = field(default_factory=dict)
    lineage: Optional[Dict[str, Any]] = None
    format: int = FORMAT

    def to_dict(self) -> dict:
        return {
            "format": self.format, "name": self.name, "uuid": self.uuid, "created": self.created,
            "tags": dict(self.tags), "committed": self.committed, "presentation": self.presentation,
            "data": self.data, "files": {rel: e.to_dict() for rel, e in sorted(self.files.items())},
            "lineage": self.lineage,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        try:
            d = json.loads(raw)
        except ValueError as exc:
            raise IntegrityError(f"manifest is not valid JSON: {exc}") from None
        if not isinstance(d, dict):
            raise IntegrityError("manifest is not a JSON object")
        if d.get("format") != FORMAT:
            raise IntegrityError(f"manifest format {d.get('format')!r} is not supported (this dsdt reads "
                                 f"format {FORMAT}); upgrade disdat-luigi")
        try:
            m = cls(name=check_name(d["name"]), uuid=str(uuidlib.UUID(d["uuid"])), created=d["created"],
                    tags={str(k): str(v) for k, v in (d.get("tags") or {}).items()},
                    committed=bool(d.get("committed")), presentation=d["presentation"], data=d.get("data"),
                    files={check_relpath(rel): FileEntry.from_dict(rel, e) for rel, e in d["files"].items()},
                    lineage=d.get("lineage"))
        except (KeyError, ValueError, AttributeError, DisdatError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise IntegrityError(f"malformed manifest: {exc}") from None
        if m.presentation not in PRESENTATIONS:
            raise IntegrityError(f"manifest has unknown presentation {m.presentation!r}")
        return m

    def without_locations(self) -> "Manifest":
        """A copy whose file entries carry no remote pack locations (what the local store keeps)."""
        return replace(self, tags=dict(self.tags),
                       files={rel: FileEntry(e.sha256, e.size) for rel, e in self.files.items()})
