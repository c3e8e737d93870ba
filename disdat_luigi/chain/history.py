"""Run history from the remote: ``dsdt runs`` (what ran, did it fail, why), ``dsdt logs``,
``dsdt runs --clean`` (the runs whose client died: containers stopped and removed, records interrupted), and
what ``dsdt pull NAME`` says about a non-blocking run of NAME that has not finished or has failed.

A ``running`` record is alive while its owner is: the client holding its lease, or, for a detached node
(AWS Batch, non-blocking), its job as the backend reports it. Records are remote data: one that is
malformed, or names a backend this client cannot reach, is reported and skipped, never fatal for the rest.
"""
from __future__ import annotations

import fnmatch
from typing import Dict, Iterator, List, Optional, Tuple

from ..containers.backend import Backend, get_backend
from ..containers.execute import clean_up_node, keep_log
from ..display import safe
from ..errors import DisdatError, NotFound
from ..remotes import Remote, remote_of
from ..remotes.runs import FAILED, FINAL, RUNNING, SUCCEEDED, TIMED_OUT, Lease, RunRecord, RunStore
from ..store.context import Context


class _Backends:
    """Backends by name, made once each; None for one this client cannot use (its reason kept)."""

    def __init__(self) -> None:
        self._made: Dict[str, Tuple[Optional[Backend], str]] = {}

    def get(self, name: str) -> Tuple[Optional[Backend], str]:
        if name not in self._made:
            try:
                self._made[name] = (get_backend(name), "")
            except DisdatError as exc:
                self._made[name] = (None, str(exc))
        return self._made[name]


def _alive(runs: RunStore, record: RunRecord, backends: _Backends) -> Optional[bool]:
    """Whether a running record's owner is alive (None: cannot tell, its backend is out of reach)."""
    if record.detached:
        backend, _ = backends.get(record.backend)
        if backend is None or not record.job_id:
            return None if backend is None else False
        try:
            return bool(backend.orphans(record.node_id, runs.where, record.job_id))
        except DisdatError:
            return None
    held = runs.lease(record.node_id)
    return held is not None and not held[0].stale()


def _duration(record: RunRecord) -> str:
    seconds = record.duration
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def list_runs(ctx: Context, name: Optional[str], status: Optional[str], limit: int) -> List[str]:
    """The lines of ``dsdt runs``: a header, then one line per node record, newest first."""
    backends = _Backends()
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        records, refused = [], []
        for node, record, problem in runs.records():
            if record is None:
                refused.append(f"({node[:12]}: refused, {problem})")
            elif (name is None or fnmatch.fnmatchcase(record.bundle_name, name)) and status in (None, record.status):
                records.append(record)
        records.sort(key=lambda r: r.started, reverse=True)
        if limit:
            records = records[:limit]
        table = [["RUN", "PIPE", "STATUS", "STARTED", "DURATION", "OUTPUT"]]
        for r in records:
            state = r.status
            if state == RUNNING:
                alive = _alive(runs, r, backends)
                state += {True: f" (job {r.job_id})" if r.detached else "", None: " (owner unknown)",
                          False: " (client gone: dsdt runs --clean)"}[alive]
            output = f"{r.bundle_name} {r.output_uuid}" if r.output_uuid else r.bundle_name
            if r.error:
                output += f"  ({r.error[:100]})"
            table.append([r.node_id[:12], r.pipe_cls, state, r.started[:19].replace("T", " "), _duration(r), output])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in table]
    if refused:
        lines.append(f"({len(refused)} record(s) on the remote were refused as malformed)")
        lines += refused
    return [safe(line).rstrip() for line in lines]


def log_of(ctx: Context, run_prefix: str) -> str:
    """The container log of one run (its id, or a unique prefix), safe to print: the stored one, else the
    backend's own (a detached AWS Batch job's CloudWatch log, then stored for next time)."""
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        node = runs.resolve_prefix(run_prefix)
        text = runs.log(node)
        if text is None:
            record = runs.current(node)
            backend, _ = _Backends().get(record.backend) if record is not None else (None, "")
            if record is not None and record.job_id and backend is not None:
                keep_log(backend, runs, node, record.job_id)
                text = runs.log(node)
            if text is None:
                state = record.status if record else "unknown"
                raise NotFound(f"run {node} ({state}) has no log yet: a log is stored when its job ends")
    out = safe(text.decode(errors="replace"), keep_newlines=True)
    return out if out.endswith("\n") else out + "\n"


def clean(ctx: Context) -> Iterator[str]:
    """Stop and remove what runs whose client died left behind (containers, leases); record them interrupted."""
    cleaned = 0
    backends = _Backends()
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        for node, record, _problem in runs.records():
            if record is not None and record.detached:
                continue  # a detached job owns its node: finishing is its own business
            held = runs.lease(node)
            if held is not None and not held[0].stale():
                continue  # a live client runs it
            dead = held if held is not None and not held[0].free else None  # a released lease is nobody's
            name = record.backend if record else "Local"
            backend, why = backends.get(name)
            if backend is None:
                yield f"run {node[:12]}: skipped ({why})"
                continue
            running = record is not None and record.status == RUNNING
            try:
                if not (running or dead is not None or backend.orphans(node, runs.where)):
                    continue
                # own the node first (a compare-and-swap over the dead lease), so that a run taking it over at
                # the same moment is never cleaned up by mistake
                mine = runs.take(node, Lease.mine(backend.name), over=held[1] if held else None)
                if mine is None:
                    continue  # somebody took it just now: theirs to finish
                jobs = clean_up_node(backend, runs, node, "its client died before it finished (dsdt runs --clean)")
                runs.release(node, mine)
            except DisdatError as exc:
                yield f"run {node[:12]}: skipped ({exc})"
                continue
            cleaned += 1
            what = f"{record.pipe_cls} -> {record.bundle_name}" if record else "no record"
            removed = f", removed {', '.join(jobs)}" if jobs else ""
            yield f"run {node[:12]} ({what}): {'recorded interrupted' if running else 'cleaned'}{removed}"
    if not cleaned:
        yield "nothing to clean: no run whose client died"


def pending_output(remote: Remote, name: str) -> Optional[str]:
    """The output uuid of the latest non-blocking run of ``name`` once it succeeded; None when there is no such
    run or a newer version of ``name`` is on the remote anyway; one line (DisdatError) while it has not
    finished, or when a node of it failed, naming that node and its reason."""
    runs = RunStore(remote)
    nodes = runs.pending(name)
    root = runs.current(nodes[-1]) if nodes else None
    if root is None or root.bundle_name != name:
        return None
    try:
        if remote.latest(name).created > root.started:
            return None
    except NotFound:
        pass
    backends = _Backends()
    records = [_settled(runs, runs.current(node), backends) for node in nodes]
    root = records[-1] or root
    if root.status == SUCCEEDED:
        return root.output_uuid
    failed = next((r for r in records if r is not None and r.status in FINAL and r.status != SUCCEEDED), None)
    if failed is not None:
        which = "" if failed.node_id == root.node_id else f" at its upstream {failed.pipe_cls}"
        raise DisdatError(f"the latest run of {name} failed{which} ({failed.node_id[:12]}, "
                          f"{failed.status.replace('_', ' ')}): {failed.error or 'no reason recorded'} "
                          f"(`dsdt logs {failed.node_id[:12]}`)")
    backend, _ = backends.get(root.backend)
    state = backend.status(root.job_id) if backend is not None and root.job_id else None
    raise DisdatError(f"{name} is not ready yet: its run {root.node_id[:12]} ({root.pipe_cls}) is "
                      f"{state or 'running'}{f' as job {root.job_id}' if root.job_id else ''}; pull again when it "
                      f"has finished (`dsdt runs {name}`)")


def _settled(runs: RunStore, record: Optional[RunRecord], backends: _Backends) -> Optional[RunRecord]:
    """A running detached record whose job has ended without a word (it failed before it started, say):
    recorded with the backend's reason."""
    if record is None or record.status != RUNNING or not record.detached or not record.job_id:
        return record
    backend, _ = backends.get(record.backend)
    result = backend.finished(record.job_id) if backend is not None else None
    if result is None or result.status == "succeeded":
        return record
    return runs.update_running(record.node_id, lambda r: r.finished(
        TIMED_OUT if result.status == "timed_out" else FAILED, result.reason), record.attempt) or record
