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
from typing import Any, Dict, Iterable, Optional, Tuple

from ..display import has_control, safe
from ..errors import DisdatError, IntegrityError
from . import values

FORMAT = 1
PRESENTATIONS = ("dict", "list", "scalar", "files", "dataframe")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX_ID = re.compile(r"^[0-9a-f]{16,64}$")
CREATED_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
MAX_TAG_KEY, MAX_TAG_VALUE, MAX_PATH, MAX_PATH_PART = 128, 1024, 1024, 255


def check_name(name: str, what: str = "bundle name") -> str:
    """Bundle and context names end up in paths and S3 keys: letters, digits, '.', '_' and '-' only."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DisdatError(f"invalid {what} {safe(repr(name))[:80]}: use letters, digits, '.', '_' and '-' (at most "
                          f"200), starting with a letter or digit")
    return name


def check_uuid(text: Any, what: str = "uuid") -> str:
    """A bundle uuid in its one canonical form (lowercase, hyphenated): it names files and keys."""
    if not (isinstance(text, str) and _UUID.fullmatch(text)):
        raise IntegrityError(f"{what} {safe(repr(text))[:80]} is not a uuid")
    return text


def check_hex_id(text: Any, what: str) -> str:
    """Run, node and processing ids: lowercase hex, 16 to 64 digits."""
    if not (isinstance(text, str) and _HEX_ID.fullmatch(text)):
        raise IntegrityError(f"{what} {safe(repr(text))[:80]} is not a hex id")
    return text


def check_created(text: Any, what: str = "created") -> str:
    """A UTC timestamp exactly as :func:`now_utc` writes it (it becomes part of remote keys)."""
    if isinstance(text, str) and _CREATED.fullmatch(text):
        try:
            datetime.strptime(text, CREATED_FORMAT)
            return text
        except ValueError:
            pass
    raise IntegrityError(f"{what} {safe(repr(text))[:80]} is not a UTC timestamp like 2026-01-31T12:00:00.000000Z")


def check_tag(key: Any, value: Any) -> Tuple[str, str]:
    """Tags are shown in listings and matched exactly: bounded text without control characters."""
    if not isinstance(key, str) or not key.strip() or ":" in key or len(key) > MAX_TAG_KEY or has_control(key):
        raise DisdatError(f"bad tag key {safe(repr(key))[:80]}: a non-empty key of at most {MAX_TAG_KEY} "
                          f"characters, without ':' or control characters")
    if not isinstance(value, str) or len(value) > MAX_TAG_VALUE or has_control(value):
        raise DisdatError(f"bad value for tag {key}: text of at most {MAX_TAG_VALUE} characters without control "
                          f"characters")
    return key, value


def parse_tag(text: str) -> Tuple[str, str]:
    """``key:value`` -> (key, value). Exactly one colon and a non-empty key."""
    if text.count(":") != 1:
        raise DisdatError(f"bad tag {safe(repr(text))}: write tags as key:value with exactly one ':'")
    key, value = text.split(":")
    if not key.strip():
        raise DisdatError(f"bad tag {safe(repr(text))}: the key before ':' is empty")
    return check_tag(key, value)


def parse_tags(texts: Optional[Iterable[str]]) -> Dict[str, str]:
    return dict(parse_tag(t) for t in (texts or ()))


def check_relpath(path: str) -> str:
    """A file's path inside a bundle: relative, POSIX, no '..' or '.' parts, nothing that escapes, bounded."""
    parts = path.split("/") if isinstance(path, str) else []
    try:
        sizes = [len(part.encode()) for part in parts]
    except UnicodeEncodeError:  # a lone surrogate: no filesystem can hold it
        sizes = [MAX_PATH + 1]
    if (not parts or not path or "\\" in path or has_control(path) or path.startswith("/")
            or any(part in ("", ".", "..") for part in parts) or sum(sizes) + len(parts) - 1 > MAX_PATH
            or any(size > MAX_PATH_PART for size in sizes)):
        raise IntegrityError(f"unsafe file path {safe(repr(path))[:120]} in a bundle: paths must be relative, stay "
                             f"inside the bundle and be at most {MAX_PATH} bytes")
    return path


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime(CREATED_FORMAT)


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
        where = f"files[{safe(repr(rel))[:120]}]"
        if not isinstance(d, dict):
            raise IntegrityError(f"field {where} is not an object")
        sha, size, pack, offset = d.get("sha256"), d.get("size"), d.get("pack"), d.get("offset")
        if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise IntegrityError(f"field {where}.sha256 is not a sha256")
        if not _is_count(size):
            raise IntegrityError(f"field {where}.size is not a size in bytes")
        if pack is not None and not (isinstance(pack, str) and _SHA256.fullmatch(pack) and _is_count(offset)):
            raise IntegrityError(f"field {where}.pack/offset is not a pack location")
        return cls(sha, size, pack, offset if pack is not None else None)


def _is_count(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 1 << 50


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
        """Parse and validate a manifest: anything read from disk or a remote comes through here. Every path
        must stay inside the bundle, every ``data`` reference must name one of its files, and every name, uuid,
        tag and timestamp must have its strict form. IntegrityError names the field that is wrong."""
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"manifest is not valid JSON: {exc}") from None
        except RecursionError:  # json's parser gives up on nesting deeper than the interpreter's stack
            raise IntegrityError(f"manifest nests JSON deeper than it can be read (a bundle's data nests at most "
                                 f"{values.MAX_DEPTH} levels)") from None
        if not isinstance(d, dict):
            raise IntegrityError("manifest is not a JSON object")
        if d.get("format") != FORMAT:
            raise IntegrityError(f"manifest format {safe(repr(d.get('format')))[:40]} is not supported (this dsdt "
                                 f"reads format {FORMAT}); upgrade disdat-luigi")
        missing = [k for k in ("name", "uuid", "created", "presentation", "files") if k not in d]
        if missing:
            raise IntegrityError(f"field {missing[0]} is missing")
        try:
            name = check_name(d["name"])
        except DisdatError as exc:
            raise IntegrityError(f"field name: {exc}") from None
        uuid = check_uuid(d["uuid"], "field uuid:")
        created = check_created(d["created"], "field created:")
        tags = d.get("tags") or {}
        if not isinstance(tags, dict):
            raise IntegrityError("field tags is not an object")
        try:
            tags = dict(check_tag(k, v) for k, v in tags.items())
        except DisdatError as exc:
            raise IntegrityError(f"field tags: {exc}") from None
        if not isinstance(d.get("committed", False), bool):
            raise IntegrityError("field committed is not true or false")
        if d["presentation"] not in PRESENTATIONS:
            raise IntegrityError(f"field presentation {safe(repr(d['presentation']))[:40]} is unknown")
        if not isinstance(d["files"], dict):
            raise IntegrityError("field files is not an object")
        files = {}
        for rel, e in d["files"].items():
            try:
                check_relpath(rel)
            except IntegrityError as exc:
                raise IntegrityError(f"field files: {exc}") from None
            files[rel] = FileEntry.from_dict(rel, e)
        _check_no_file_is_a_directory(files)
        data = d.get("data")
        _check_depth(data, "data")
        for ref in values.file_refs(data):
            if not isinstance(ref, str) or ref not in files:
                raise IntegrityError(f"field data refers to {safe(repr(ref))[:120]}, which is not one of the "
                                     f"bundle's files")
        if values.presentation_of(data) != d["presentation"]:
            raise IntegrityError(f"field presentation {d['presentation']} does not match the data")
        lineage = d.get("lineage")
        _check_depth(lineage, "lineage")
        _check_lineage(lineage)
        return cls(name=name, uuid=uuid, created=created, tags=tags, committed=d.get("committed", False),
                   presentation=d["presentation"], data=data, files=files, lineage=lineage)

    def without_locations(self) -> "Manifest":
        """A copy whose file entries carry no remote pack locations (what the local store keeps)."""
        return replace(self, tags=dict(self.tags),
                       files={rel: FileEntry(e.sha256, e.size) for rel, e in self.files.items()})


def _check_no_file_is_a_directory(files: Dict[str, "FileEntry"]) -> None:
    """``x`` and ``x/y`` cannot both be files: one would overwrite or break the other on disk."""
    dirs = {rel.rsplit("/", 1)[0] for rel in files if "/" in rel}
    dirs |= {d.rsplit("/", i)[0] for d in list(dirs) for i in range(1, d.count("/") + 1)}
    clash = sorted(dirs & set(files))
    if clash:
        raise IntegrityError(f"field files: {safe(repr(clash[0]))[:120]} is both a file and a directory")


def _check_depth(value: Any, field: str) -> None:
    """What is read here is walked recursively later (file references, decoding, copies of the lineage)."""
    if values.nests_too_deep(value):
        raise IntegrityError(f"field {field} nests lists and objects more than {values.MAX_DEPTH} levels deep")


_LINEAGE_IDS = ("processing_id", "run_id", "part_of_run", "node_id")


def _check_lineage(lineage: Any) -> None:
    """The parts of the lineage that the index and lookups use must have their strict forms."""
    if lineage is None:
        return
    if not isinstance(lineage, dict):
        raise IntegrityError("field lineage is not an object")
    for key in _LINEAGE_IDS:
        if lineage.get(key) is not None:
            check_hex_id(lineage[key], f"field lineage.{key}:")
    inputs = lineage.get("inputs", {})
    if not isinstance(inputs, dict):
        raise IntegrityError("field lineage.inputs is not an object")
    for name, uuid in inputs.items():
        check_uuid(uuid, f"field lineage.inputs[{safe(repr(name))[:60]}]:")
