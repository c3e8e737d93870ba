"""Run history from the remote: ``dsdt runs`` (what ran, did it fail, why), ``dsdt logs``,
``dsdt runs --clean`` (the runs whose client died: containers stopped and removed, records interrupted), and
what ``dsdt pull NAME`` says about a non-blocking run of NAME that has not finished or has failed."""
from __future__ import annotations

import fnmatch
from typing import Iterator, List, Optional

from ..containers.backend import get_backend
from ..containers.execute import clean_up_node
from ..display import safe
from ..errors import DisdatError, NotFound
from ..remotes import Remote, remote_of
from ..remotes.runs import FAILED, RUNNING, SUCCEEDED, TIMED_OUT, RunRecord, RunStore
from ..store.context import Context


def _duration(record: RunRecord) -> str:
    seconds = record.duration
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def list_runs(ctx: Context, name: Optional[str], status: Optional[str], limit: int) -> List[str]:
    """The lines of ``dsdt runs``: a header, then one line per node record, newest first."""
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        records, refused = [], 0
        for _node, record, problem in runs.records():
            if record is None:
                refused += 1
            elif (name is None or fnmatch.fnmatchcase(record.bundle_name, name)) and status in (None, record.status):
                records.append(record)
        records.sort(key=lambda r: r.started, reverse=True)
        if limit:
            records = records[:limit]
        table = [["RUN", "PIPE", "STATUS", "STARTED", "DURATION", "OUTPUT"]]
        for r in records:
            state = r.status
            if state == RUNNING:
                held = runs.lease(r.node_id)
                if held is None or held[0].stale():
                    state = "running (client gone: dsdt runs --clean)"
            output = f"{r.bundle_name} {r.output_uuid}" if r.output_uuid else r.bundle_name
            if r.error:
                output += f"  ({r.error[:100]})"
            table.append([r.node_id[:12], r.pipe_cls, state, r.started[:19].replace("T", " "), _duration(r), output])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in table]
    if refused:
        lines.append(f"({refused} record(s) on the remote were refused as malformed)")
    return [safe(line).rstrip() for line in lines]


def log_of(ctx: Context, run_prefix: str) -> str:
    """The stored container log of one run (its id, or a unique prefix), safe to print."""
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        node = runs.resolve_prefix(run_prefix)
        text = runs.log(node)
        if text is None:
            record = runs.record(node)
            state = record.status if record else "unknown"
            raise NotFound(f"run {node} ({state}) has no stored log yet: a log is stored when its container ends")
    out = safe(text.decode(errors="replace"), keep_newlines=True)
    return out if out.endswith("\n") else out + "\n"


def clean(ctx: Context) -> Iterator[str]:
    """Stop and remove what runs whose client died left behind (containers, leases); record them interrupted."""
    cleaned = 0
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        backends = {}
        for node, record, _problem in runs.records():
            held = runs.lease(node)
            if held is not None and not held[0].stale():
                continue  # a live client runs it
            name = record.backend if record else "Local"
            backend = backends.setdefault(name, get_backend(name))
            running = record is not None and record.status == RUNNING
            if not (running or held is not None or backend.orphans(node, runs.where)):
                continue
            jobs = clean_up_node(backend, runs, node, "its client died before it finished (dsdt runs --clean)")
            if held is not None:
                runs.release(node)
            cleaned += 1
            what = f"{record.pipe_cls} -> {record.bundle_name}" if record else "no record"
            removed = f", removed {', '.join(jobs)}" if jobs else ""
            yield f"run {node[:12]} ({what}): {'recorded interrupted' if running else 'cleaned'}{removed}"
    if not cleaned:
        yield "nothing to clean: no run whose client died"


def pending_output(remote: Remote, name: str) -> Optional[str]:
    """The output uuid of the latest non-blocking run of ``name`` once it succeeded; None when there is no such
    run or a newer version of ``name`` is on the remote anyway; one line (DisdatError) while it has not
    finished, or when it failed, with the reason."""
    runs = RunStore(remote)
    node = runs.pending(name)
    record = runs.record(node) if node else None
    if record is None:
        return None
    try:
        if remote.latest(name).created > record.started:
            return None
    except NotFound:
        pass
    if record.status == RUNNING and record.job_id:
        result = get_backend(record.backend).finished(record.job_id)
        if result is not None and result.status != "succeeded":
            record = runs.update_running(node, lambda r: r.finished(
                TIMED_OUT if result.status == "timed_out" else FAILED, result.reason)) or record
    if record.status == SUCCEEDED:
        return record.output_uuid
    if record.status == RUNNING:
        state = get_backend(record.backend).status(record.job_id) if record.job_id else None
        raise DisdatError(f"{name} is not ready yet: its run {node[:12]} ({record.pipe_cls}) is {state or 'running'}"
                          f"{f' as job {record.job_id}' if record.job_id else ''}; pull again when it has finished "
                          f"(`dsdt runs {name}`)")
    raise DisdatError(f"the latest run of {name} ({node[:12]}, {record.pipe_cls}) {record.status.replace('_', ' ')}: "
                      f"{record.error or 'no reason recorded'} (`dsdt logs {node[:12]}`)")
