"""The facts of one run, gathered for ``dsdt report``: its graph, every node's attempts and a preview of its data.

The run is the one that made a bundle's version: its lineage names the run's root node (``processing_id``),
and the run records on the remote say the rest, walked from the root through each record's upstream nodes
(one pooled read a level). Nodes that an earlier run had made already are part of the graph too, marked
reused. A node's data is previewed from the local context when its bundle is there (a DataFrame's first rows,
a value, its files), else from its manifest on the remote (the value, with the names of its files): no bundle
is downloaded to make a report.

Everything here comes from a shared remote: it is data to show, escaped by the renderer, never markup.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import DisdatError, IntegrityError, NotFound
from ..remotes import remote_of
from ..runs.record import RunRecord
from ..runs.store import RunStore, in_parallel
from ..store.context import Context
from ..store.manifest import Manifest

PREVIEW_ROWS = 10          # a DataFrame's first rows
PREVIEW_CHARS = 2000       # of a value shown as JSON
PREVIEW_FILES = 20         # file names listed
MAX_PREVIEWS = 500         # nodes previewed (the others say so): a report of a wide graph stays small


@dataclass
class Preview:
    """What a node's output holds, ready to show: a table, a value, file names, or a note why not."""
    columns: List[str] = field(default_factory=list)
    rows: List[List[str]] = field(default_factory=list)
    text: str = ""
    files: List[Tuple[str, int]] = field(default_factory=list)
    note: str = ""


@dataclass
class NodeFacts:
    record: RunRecord                    # its latest attempt
    attempts: List[RunRecord]            # every attempt kept, the first first
    reused: bool                         # made by an earlier run, not by this one
    preview: Preview


@dataclass
class RunReport:
    name: str
    uuid: str
    run_id: str
    remote: str
    nodes: Dict[str, NodeFacts]          # root first, then upstream, level by level
    edges: List[Tuple[str, str, str]]    # (upstream node, dependency name, downstream node)


def collect(ctx: Context, name: str) -> RunReport:
    """The report of the run that made ``name``'s latest version (or the bundle whose uuid ``name`` is)."""
    bundle = ctx.by_uuid_or_name(name)
    lineage = bundle.manifest.lineage or {}
    root, run_id = lineage.get("processing_id"), lineage.get("run_id")
    if not isinstance(root, str) or not isinstance(run_id, str):
        raise DisdatError(f"{bundle.name} {bundle.uuid} was not made by `dsdt run` (its lineage names no run): "
                          f"a report is about a run")
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        records, edges = _graph(runs, root)
        if root not in records:
            raise NotFound(f"the run {run_id[:12]} that made {bundle.name} {bundle.uuid} has no record on the "
                           f"remote {remote.url} (context {remote.context}): its history was removed")
        history = _attempts(runs, records)
        previewed = list(records)[:MAX_PREVIEWS]
        previews = dict(zip(previewed, in_parallel(
            lambda node: _preview(ctx, remote, records[node]), previewed)))
        where = f"{remote.url} (context {remote.context})"
    nodes = {node: NodeFacts(record, history[node], record.run_id != run_id,
                             previews.get(node) or Preview(note=f"not previewed: only the first {MAX_PREVIEWS} "
                                                                f"nodes are"))
             for node, record in records.items()}
    return RunReport(bundle.name, bundle.uuid, run_id, where, nodes, edges)


def _graph(runs: RunStore, root: str) -> Tuple[Dict[str, RunRecord], List[Tuple[str, str, str]]]:
    """The records of the graph under ``root``, a level at a time, and its edges."""
    records: Dict[str, RunRecord] = {}
    edges: List[Tuple[str, str, str]] = []
    level = [root]
    while level:
        found = dict(zip(level, in_parallel(runs.current, level)))
        following: List[str] = []
        for node, record in found.items():
            if record is None:
                continue
            records[node] = record
            for dep, up in sorted(record.upstream.items()):
                edges.append((up, dep, node))
                if up not in records and up not in found and up not in following:
                    following.append(up)
        level = following
    return records, edges


def _attempts(runs: RunStore, records: Dict[str, RunRecord]) -> Dict[str, List[RunRecord]]:
    """Every node's attempts: the ones archived before its latest, then the latest."""
    kept = [(node, n) for node, numbers in runs.archived().items() if node in records
            for n in numbers if n != records[node].attempt]

    def read(item: Tuple[str, int]) -> Optional[RunRecord]:
        try:
            return runs.archived_record(*item)
        except (IntegrityError, NotFound):
            return None   # refused or gone: `dsdt runs` says which

    history: Dict[str, List[RunRecord]] = {node: [] for node in records}
    for record in filter(None, in_parallel(read, kept)):
        history[record.node_id].append(record)
    for node, record in records.items():
        history[node] = sorted(history[node], key=lambda r: r.attempt) + [record]
    return history


def _preview(ctx: Context, remote, record: RunRecord) -> Preview:
    if not record.output_uuid:
        return Preview(note="no output")
    try:
        if ctx.has(record.output_uuid):
            return _of_value(ctx.bundle(record.output_uuid).data(), ctx.bundle(record.output_uuid).manifest)
        manifest = remote.manifest(record.output_uuid)
    except (DisdatError, OSError, ValueError) as exc:
        return Preview(note=f"cannot be previewed: {str(exc).splitlines()[0][:200]}")
    preview = _of_value(manifest.data, manifest)
    preview.note = preview.note or f"from its manifest on the remote (`dsdt pull {record.bundle_name}` for its data)"
    return preview


def _of_value(value: Any, manifest: Manifest) -> Preview:
    files = sorted((rel, entry.size) for rel, entry in manifest.files.items())
    preview = Preview(files=files[:PREVIEW_FILES])
    if len(files) > PREVIEW_FILES:
        preview.note = f"{len(files)} files, the first {PREVIEW_FILES} listed"
    if _is_frame(value):
        head = value.head(PREVIEW_ROWS)
        preview.columns = [str(c) for c in head.columns]
        preview.rows = [[str(cell) for cell in row] for row in head.itertuples(index=False)]
        preview.note = f"{len(value)} rows, {len(value.columns)} columns" + (
            f"; the first {PREVIEW_ROWS}" if len(value) > PREVIEW_ROWS else "")
        return preview
    text = json.dumps(value, indent=1, default=str, ensure_ascii=False)
    preview.text = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "\n..."
    return preview


def _is_frame(value: Any) -> bool:
    return all(hasattr(value, attr) for attr in ("head", "columns", "itertuples"))
