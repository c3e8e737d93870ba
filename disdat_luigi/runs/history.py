"""Run history from the remote: ``dsdt runs`` (what ran, did it fail, why), ``dsdt logs``,
``dsdt runs --clean`` (the runs whose client died: containers stopped and removed, records interrupted,
leases freed), and what ``dsdt pull NAME`` says about a non-blocking run of NAME that has not finished or
has failed.

A ``running`` record is alive while its owner is (:mod:`.owner`): the client holding its lease, or, for a
detached node (AWS Batch), its job as the backend reports it. Records are remote data: one that is
malformed, or names a backend this client cannot reach, is reported and skipped, never fatal for the rest.
Reads go through bounded pools and the backend's batched checks, so a remote with thousands of records
answers in a few round trips.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

from ..containers.backend import Backend, get_backend
from ..display import safe
from ..errors import DisdatError, IntegrityError, NotFound
from ..remotes import Remote, remote_of
from ..store.context import Context
from .lease import Lease
from .owner import NodeOwner
from .record import FINAL, RUNNING, SUCCEEDED, RunRecord
from .store import RunStore, in_parallel


def _backend(name: str) -> Tuple[Optional[Backend], str]:
    """The backend a record names, or None and why this client cannot use it."""
    try:
        return get_backend(name), ""
    except DisdatError as exc:
        return None, str(exc)


def _liveness(runs: RunStore, records: List[RunRecord]) -> Dict[str, Optional[bool]]:
    """For running records: is their owner alive (None: cannot tell, its backend is out of reach)? Detached
    ones by their jobs (checked in batches), the others by their leases (read by a bounded pool)."""
    out: Dict[str, Optional[bool]] = {}
    by_backend: Dict[str, Dict[str, str]] = {}
    for r in records:
        if r.detached:
            if r.job_id:
                by_backend.setdefault(r.backend, {})[r.node_id] = r.job_id
            else:
                out[r.node_id] = False
    for name, hints in by_backend.items():
        backend, _ = _backend(name)
        try:
            live = backend.live_jobs(hints, runs.where) if backend is not None else None
        except DisdatError:
            live = None
        for node in hints:
            out[node] = None if live is None else node in live
    leased = [r.node_id for r in records if not r.detached]
    for node, held in zip(leased, in_parallel(runs.lease, leased)):
        out[node] = held is not None and not held[0].stale()
    return out


def _duration(record: RunRecord) -> str:
    seconds = record.duration
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


@dataclass(frozen=True)
class RunFilter:
    """Which attempts ``dsdt runs`` lists (each given field must match)."""

    name: Optional[str] = None          # a glob of the output bundle's name
    status: Optional[str] = None
    pipe: Optional[str] = None          # a glob of the pipe class
    run: Optional[str] = None           # the run (its root node id, or a prefix of it) that started the attempt

    def __call__(self, r: RunRecord) -> bool:
        return ((self.name is None or fnmatch.fnmatchcase(r.bundle_name, self.name))
                and self.status in (None, r.status)
                and (self.pipe is None or fnmatch.fnmatchcase(r.pipe_cls, self.pipe))
                and (self.run is None or r.run_id.startswith(self.run)))


def attempts(runs: RunStore) -> Tuple[List[RunRecord], List[str]]:
    """Every attempt on the remote: each node's latest record, and the attempts kept before it (one listing,
    then a bounded pool of reads); and a line for each record that was refused as malformed."""
    latest, refused = [], []
    for node, record, problem in runs.records():
        if record is None:
            refused.append(f"({node[:12]}: refused, {problem})")
        else:
            latest.append(record)
    current = {r.node_id: r.attempt for r in latest}
    kept = [(node, n) for node, numbers in runs.archived().items() for n in numbers if n != current.get(node)]

    def read(item: Tuple[str, int]) -> Tuple[Optional[RunRecord], str]:
        try:
            return runs.archived_record(*item), ""
        except (IntegrityError, NotFound) as exc:
            return None, f"({item[0][:12]} attempt {item[1]}: refused, {exc})"

    for record, problem in in_parallel(read, kept):
        if record is not None:
            latest.append(record)
        elif problem:
            refused.append(problem)
    return latest, refused


def list_runs(ctx: Context, which: RunFilter, limit: int) -> List[str]:
    """The lines of ``dsdt runs``: a header, then one line per attempt (every node's latest, and the attempts
    before it), newest first."""
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        records, refused = attempts(runs)
        records = sorted(filter(which, records), key=lambda r: (r.started, r.attempt), reverse=True)
        if limit:
            records = records[:limit]
        alive = _liveness(runs, [r for r in records if r.status == RUNNING])
    table = [["RUN", "ATTEMPT", "PIPE", "STATUS", "STARTED", "DURATION", "OUTPUT"]]
    for r in records:
        state = r.status
        if state == RUNNING:
            state += {True: f" (job {r.job_id})" if r.detached else "", None: " (owner unknown)",
                      False: " (client gone: dsdt runs --clean)"}[alive[r.node_id]]
        elif r.cause and r.status != SUCCEEDED:
            state += f" ({r.cause.replace('_', ' ')})"
        output = f"{r.bundle_name} {r.output_uuid}" if r.output_uuid else r.bundle_name
        if r.error:
            output += f"  ({r.error[:100]})"
        table.append([r.node_id[:12], str(r.attempt), r.pipe_cls, state, r.started[:19].replace("T", " "),
                      _duration(r), output])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in table]
    if refused:
        lines.append(f"({len(refused)} record(s) on the remote were refused as malformed)")
        lines += refused
    return [safe(line).rstrip() for line in lines]


def log_of(ctx: Context, run_prefix: str, attempt: Optional[int] = None) -> str:
    """The container log of one run (its id, or a unique prefix), safe to print: its latest attempt's, or the
    ``attempt`` asked for; the stored one, else the backend's own (a detached AWS Batch job's CloudWatch log,
    then stored for next time)."""
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        node = runs.resolve_prefix(run_prefix)
        record = runs.current(node)
        if attempt is not None and (record is None or attempt != record.attempt):
            text = runs.attempt_log(node, attempt)
            if text is None:
                kept = sorted(runs.archived().get(node, []) + ([record.attempt] if record else []))
                raise NotFound(f"run {node} has no log of attempt {attempt} (its attempts: "
                               f"{', '.join(map(str, kept)) or 'none'})")
        else:
            text = runs.log(node)
        if text is None:
            backend, _ = _backend(record.backend) if record is not None else (None, "")
            if record is not None and record.job_id and backend is not None:
                NodeOwner(runs, node, backend).keep_log(backend.job(record.job_id))
                text = runs.log(node)
            if text is None:
                state = record.status if record else "unknown"
                raise NotFound(f"run {node} ({state}) has no log yet: a log is stored when its job ends")
    out = safe(text.decode(errors="replace"), keep_newlines=True)
    return out if out.endswith("\n") else out + "\n"


def clean(ctx: Context) -> Iterator[str]:
    """Stop and remove what runs whose client died left behind (containers, leases); record them interrupted.
    Every node with a record or a lease is looked at: a lease left by nobody's run is freed too."""
    cleaned = 0
    with remote_of(ctx) as remote:
        runs = RunStore(remote)
        records = {node: (record, problem) for node, record, problem in runs.records()}
        nodes = list(dict.fromkeys([*records, *runs.leased_ids()]))
        leases = dict(zip(nodes, in_parallel(runs.lease, nodes)))
        for node in nodes:
            record = records.get(node, (None, None))[0]
            if record is not None and record.detached and record.status == RUNNING:
                continue  # a detached job owns its node: finishing is its own business
            held = leases[node]
            if held is not None and not held[0].stale():
                continue  # a live client runs it
            dead = held if held is not None and not held[0].free else None  # a released lease is nobody's
            running = record is not None and record.status == RUNNING
            if not (running or dead is not None):
                continue
            backend, why = _backend(record.backend if record else dead[0].backend)  # type: ignore[index]
            if backend is None:
                yield f"run {node[:12]}: skipped ({why})"
                continue
            try:
                # own the node first (a compare-and-swap over the dead lease), so that a run taking it over at
                # the same moment is never cleaned up by mistake
                mine = runs.take(node, Lease.mine(backend.name), over=held[1] if held else None)
                if mine is None:
                    continue  # somebody took it just now: theirs to finish
                jobs = NodeOwner(runs, node, backend).clean_up("its client died before it finished (dsdt runs "
                                                               "--clean)")
                runs.release(node, mine)
            except DisdatError as exc:
                yield f"run {node[:12]}: skipped ({exc})"
                continue
            cleaned += 1
            what = f"{record.pipe_cls} -> {record.bundle_name}" if record else "no record: its lease was freed"
            removed = f", removed {', '.join(jobs)}" if jobs else ""
            yield f"run {node[:12]} ({what}): {'recorded interrupted' if running else 'cleaned'}{removed}"
    if not cleaned:
        yield "nothing to clean: no run whose client died"


def pending_output(remote: Remote, name: str) -> Optional[str]:
    """The output uuid of the latest non-blocking (or waiting) run of ``name`` once it succeeded; None when there
    is no such run or a newer version of ``name`` is on the remote anyway; one line (DisdatError) while it has
    not finished (its root not even submitted yet included: an earlier version is not handed out meanwhile), or
    when a node of it failed, naming that node and its reason."""
    runs = RunStore(remote)
    nodes = runs.pending(name)
    if not nodes:
        return None
    root = runs.current(nodes[-1])
    if root is not None and root.bundle_name != name:
        return None
    started = root.started if root is not None else _started_without_its_root(runs, nodes)
    if started is None:
        return None
    try:
        if remote.latest(name).created > started:
            return None
    except NotFound:
        pass
    records = settled(runs, in_parallel(runs.current, nodes))
    root = records[-1] or root
    if root is not None and root.status == SUCCEEDED:
        return root.output_uuid if _is_the_output(runs, root, name) else None
    ended = [r for r in records if r is not None and r.status in FINAL and r.status != SUCCEEDED]
    retrying = _liveness(runs, [r for r in ended if r.detached and r.job_id])   # Batch tries some again
    failed = next((r for r in ended if not retrying.get(r.node_id)), None)
    if failed is not None:
        which = "" if failed.node_id == nodes[-1] else f" at its upstream {failed.pipe_cls}"
        raise DisdatError(f"the latest run of {name} failed{which} ({failed.node_id[:12]}, "
                          f"{failed.status.replace('_', ' ')}): {failed.error or 'no reason recorded'} "
                          f"(`dsdt logs {failed.node_id[:12]}`)")
    if root is None:
        raise DisdatError(f"{name} is not ready yet: the last node of its run ({nodes[-1][:12]}) has no job yet: the "
                          f"client that waits for the run submits it once its upstream jobs are done; if that client "
                          f"was stopped, run the same `dsdt run` again to finish the run (`dsdt runs {name}`)")
    backend, unusable = _backend(root.backend)
    try:
        state = backend.job(root.job_id).status() if backend is not None and root.job_id else None
        unknown = "" if backend is not None else f" ({unusable})"
    except DisdatError as exc:  # the backend cannot be reached: the record says what is known
        state, unknown = None, f" ({root.backend} cannot tell more now: {str(exc).splitlines()[0]})"
    raise DisdatError(f"{name} is not ready yet: its run {root.node_id[:12]} ({root.pipe_cls}) is "
                      f"{state or 'running'}{f' as job {root.job_id}' if root.job_id else ''}{unknown}; pull again "
                      f"when it has finished (`dsdt runs {name}`)")


def _is_the_output(runs: RunStore, root: RunRecord, name: str) -> bool:
    """The succeeded root's output is a bundle named ``name`` made by the root node: a marker and records are
    anybody's writing, and a crafted pair must not hand out another bundle under this name. (The manifest that
    made_by read is the remote's cached copy: no second request.)"""
    return (root.bundle_name == name and runs.made_by(root)
            and runs.remote.manifest(root.output_uuid).name == name)   # type: ignore[arg-type]


def _started_without_its_root(runs: RunStore, nodes: List[str]) -> Optional[str]:
    """When the run's root has no record yet (a waiting client holds a wide join back until its upstream jobs are
    done, and may have been killed meanwhile): when the run started, from the records its own nodes wrote (their
    run id is the root's); None when it has none, so that a marker nothing of which ran is not believed."""
    own = [r for r in in_parallel(runs.current, nodes[:-1]) if r is not None and r.run_id == nodes[-1]]
    return min((r.started for r in own), default=None)


def settled(runs: RunStore, records: List[Optional[RunRecord]]) -> List[Optional[RunRecord]]:
    """``records``, where a running detached record's job has ended without a word (it failed before it
    started, its dependency failed) recorded with the backend's reason. The jobs are checked in batches; only
    the ended ones are looked at one by one."""
    waiting = [r for r in records if r is not None and r.status == RUNNING and r.detached and r.job_id]
    alive = _liveness(runs, waiting)
    ended = {r.node_id: r for r in waiting if alive[r.node_id] is False}

    def settle(record: RunRecord) -> Optional[RunRecord]:
        backend, _ = _backend(record.backend)
        return NodeOwner(runs, record.node_id, backend).settle(record) if backend is not None else record

    now = dict(zip(ended, in_parallel(settle, list(ended.values()))))
    return [now.get(r.node_id, r) if r is not None else None for r in records]
