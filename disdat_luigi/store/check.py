"""``dsdt check [--repair]``: verify the local store against its manifests, and repair what can be repaired.

The manifests under ``objects/<uuid>/`` are the truth and the index is derived from them, so:

* every bundle directory must hold a valid manifest naming its own uuid, and every file it lists with the
  recorded size and sha256;
* the index must open and list exactly those bundles, with their names, commit state and tags;
* ``tmp/`` must hold nothing that no live process owns.

``--repair`` rebuilds the index from the manifests (into a new file, swapped in whole), removes leftovers,
and takes damaged bundles out of ``objects/`` into ``quarantine/<uuid>`` (nothing is deleted); a damaged
bundle that the context's remote still has is fetched again through ``refetch``. The store layer does not
know remotes, so the caller passes that function.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import DisdatError, IntegrityError, StoreDamaged
from ..fsutil import human_bytes, sha256_file
from .context import MANIFEST, Context
from .home import Home
from .index import BundleRow, Index
from .manifest import Manifest, check_uuid

Refetch = Callable[[Context, str], bool]   # (context, uuid) -> True when the bundle came back from the remote


@dataclass
class Finding:
    context: str
    problem: str
    repaired: str = ""      # what --repair did about it ("" when nothing could be or was done)


def _verify(directory: Path) -> Tuple[Optional[Manifest], Optional[str]]:
    """(manifest, None) when the bundle is intact; (manifest or None, what is wrong) when it is not."""
    try:
        manifest = Manifest.from_json((directory / MANIFEST).read_bytes())
    except FileNotFoundError:
        return None, "its manifest is missing"
    except IntegrityError as exc:
        return None, f"its manifest is invalid: {exc}"
    if manifest.uuid != directory.name:
        return None, f"its manifest names bundle {manifest.uuid}"
    for rel, entry in sorted(manifest.files.items()):
        path = directory / "files" / rel
        try:
            sha, size = sha256_file(path)
        except FileNotFoundError:
            return manifest, f"file {rel} is missing"
        except OSError as exc:
            return manifest, f"file {rel} cannot be read ({exc.strerror})"
        if size != entry.size or sha != entry.sha256:
            return manifest, f"file {rel} was changed (its sha256 no longer matches)"
    return manifest, None


def _index_rows(ctx: Context) -> Dict[str, BundleRow]:
    return {row.uuid: row for row in ctx.index.find()}


def rebuild_index(ctx: Context, manifests: List[Manifest]) -> None:
    """A new index from these manifests, built aside and swapped in whole (stale WAL files removed first)."""
    ctx.close()
    new = ctx.index_path.with_name("index.sqlite.rebuild")
    new.unlink(missing_ok=True)
    index = Index(new, create=True)
    try:
        for m in sorted(manifests, key=lambda m: m.created):
            index.insert(m)
    finally:
        index.close()
    for suffix in ("-wal", "-shm"):
        ctx.index_path.with_name(ctx.index_path.name + suffix).unlink(missing_ok=True)
    os.replace(new, ctx.index_path)


def check_context(ctx: Context, repair: bool, refetch: Optional[Refetch] = None) -> List[Finding]:
    findings: List[Finding] = []

    def found(problem: str) -> Finding:
        findings.append(Finding(ctx.name, problem))
        return findings[-1]

    for leftover in ctx.leftovers():
        f = found(f"leftover {leftover.kind} directory {leftover.path.name} ({human_bytes(leftover.size)}, "
                  f"{leftover.age / 3600:.1f} h old) from a command that was killed")
        if repair:
            ctx.remove_leftover(leftover)
            f.repaired = "removed"

    rows: Dict[str, BundleRow] = {}
    index_ok = True
    try:
        rows = _index_rows(ctx)
    except StoreDamaged as exc:
        index_ok = False
        found(str(exc).split(": run `dsdt check")[0])

    valid: Dict[str, Manifest] = {}
    damaged: Dict[str, Tuple[str, str]] = {}     # uuid -> (name, what is wrong)
    strays: List[Path] = []
    for entry in sorted(os.scandir(ctx.objects), key=lambda e: e.name) if ctx.objects.is_dir() else []:
        try:
            check_uuid(entry.name)
        except DisdatError:
            strays.append(Path(entry.path))
            continue
        manifest, problem = _verify(Path(entry.path))
        if problem is None:
            valid[entry.name] = manifest
        else:
            name = manifest.name if manifest else rows[entry.name].name if entry.name in rows else "(unknown name)"
            damaged[entry.name] = (name, problem)

    index_findings: List[Finding] = []
    if not index_ok:
        index_findings.append(findings[-1])
    for path in strays:
        f = found(f"objects/{path.name} is not a bundle")
        if repair:
            f.repaired = f"moved to quarantine/{_quarantine(ctx, path)}"
    damaged_findings = {}
    for uuid, (name, reason) in damaged.items():
        damaged_findings[uuid] = found(f"bundle {name} ({uuid}) is damaged: {reason}")
    for uuid, row in rows.items():
        if uuid not in valid and uuid not in damaged:
            index_findings.append(found(f"the index lists bundle {row.name} ({uuid}), which is not on disk"))
    for uuid, m in valid.items():
        row = rows.get(uuid)
        if index_ok and row is None:
            index_findings.append(found(f"bundle {m.name} ({uuid}) is on disk but not in the index"))
        elif row is not None and (row.name, row.committed, row.tags) != (m.name, m.committed, m.tags):
            index_findings.append(found(f"the index entry of bundle {m.name} ({uuid}) does not match its manifest"))

    if repair and (index_findings or damaged):
        quarantined = {uuid: _quarantine(ctx, ctx.objects / uuid) for uuid in damaged}
        rebuild_index(ctx, list(valid.values()))
        for f in index_findings:
            f.repaired = "index rebuilt from the manifests"
        for uuid, f in damaged_findings.items():
            if refetch is not None and refetch(ctx, uuid):
                f.repaired = f"fetched again from the remote (the damaged copy is in quarantine/{quarantined[uuid]})"
            else:
                f.repaired = f"moved to quarantine/{quarantined[uuid]}: the remote has no copy"
    return findings


def _quarantine(ctx: Context, path: Path) -> str:
    """Move a damaged bundle or stray entry out of objects/ (kept, never deleted); returns its new name."""
    target = ctx.path / "quarantine"
    target.mkdir(exist_ok=True)
    name = f"{path.name}-{time.strftime('%Y%m%dT%H%M%S')}"
    shutil.move(str(path), str(target / name))
    return name


def check_home(home: Home, repair: bool, refetch: Optional[Refetch] = None) -> List[Finding]:
    """Check (and repair) every context of the home."""
    findings: List[Finding] = []
    for name in home.contexts():
        ctx = home.context(name)
        try:
            findings += check_context(ctx, repair, refetch)
        finally:
            ctx.close()
    return findings
