"""Who owns a node, and every way ownership is taken, kept, handed over and given up: the one home of a node's
lifecycle, used by the client that runs a node, the client that submits a graph, ``dsdt runs --clean``,
``dsdt pull`` of a pending run, and the container's entrypoint.

A node is owned by exactly one of:

* **a client** that runs it and waits (Local): it holds the node's *lease* (:mod:`.lease`), taken with a
  create-only write, renewed by a heartbeat, released at the end by a compare-and-swap. A client that finds
  the lease held waits for its holder while the holder is alive (the lease keeps changing), and takes the
  lease over from a dead one first (a compare-and-swap, so two clients never both win), then cleans up what it
  left: its container is stopped and removed, its log kept, its record marked ``interrupted``;
* **a job** that outlives its client by design (AWS Batch): the node's record says ``running`` and
  ``detached`` and names the job. The record itself is the claim: it is written with a compare-and-swap
  before the job is submitted (so two clients never submit a node twice), and the job id goes into it right
  after. A client that died in between leaves a claim without a job: it is taken over once it is older than
  :data:`CLAIM_PATIENCE`, after adopting the job if the backend finds one by the node's labels.

Records and jobs are checked against each other, never trusted on their word: a record's job id counts only
if the backend finds that job labelled with the node and the remote.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Callable, Iterator, List, Optional, Tuple

from ..containers.backend import INFRASTRUCTURE, Backend, Job, JobResult
from ..containers.backend import INTERRUPTED as INTERRUPTED_CAUSE
from ..containers.backend import TIMED_OUT as TIMED_OUT_CAUSE
from ..containers.job import NodeJob
from ..errors import ContainerFailed, DisdatError
from ..store.manifest import CREATED_FORMAT, now_utc
from .lease import HEARTBEAT, Lease, LeaseWatch, host_id
from .record import ERROR_PREFIX, FAILED, INTERRUPTED, RUNNING, SUCCEEDED, TIMED_OUT, RunRecord
from .store import RunStore

logger = logging.getLogger("luigi-interface")
POLL = 2.0              # seconds between looks at a node another client runs
CLAIM_PATIENCE = 30.0   # seconds a claim without a job id is another client submitting it right now


def new_record(job: NodeJob, backend: str, attempt: int = 1, job_id: Optional[str] = None,
               detached: bool = False) -> RunRecord:
    """The ``running`` record of an attempt, before its job starts."""
    node = job.node
    return RunRecord(node_id=node.node_id, run_id=job.run_id, status=RUNNING, pipe_cls=node.pipe_cls,
                     params=dict(node.params), bundle_name=node.bundle_name, backend=backend, image=job.image,
                     started=now_utc(), input_uuid=job.input_uuid or None, upstream=dict(node.upstream),
                     job_id=job_id, host=host_id(), attempt=attempt, detached=detached)


def failure_reason(result: JobResult) -> str:
    """Why a job failed: the entrypoint's own error line when its log has one (a container that could not write
    its record, e.g. without credentials, still said why), with the backend's reason after it."""
    said = [line.split(ERROR_PREFIX, 1)[1] for line in result.log_tail if ERROR_PREFIX in line]
    if said and said[-1] not in result.reason:
        return f"{said[-1]} ({result.reason})" if result.reason else said[-1]
    return result.reason


def age(record: RunRecord) -> float:
    """Seconds since the record's attempt started (by this machine's clock)."""
    started = datetime.strptime(record.started, CREATED_FORMAT).replace(tzinfo=timezone.utc)
    return time.time() - started.timestamp()


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Finish a clean-up even when more signals come (Luigi's parent sends its children SIGTERM right
    after the Ctrl-C they already got): a second interrupt would leave the container behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a killed ``dsdt run``, a Luigi worker timeout) unwinds like Ctrl-C, so the container is
    stopped and the record written on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def in_worker_process() -> bool:
    """This is a child process of a Luigi worker pool (``--workers N`` under Luigi's own worker). Such a child
    has multiprocessing imported; a process that has not is none (and does not pay for importing it)."""
    multiprocessing = sys.modules.get("multiprocessing")
    return multiprocessing is not None and multiprocessing.current_process().name != "MainProcess"


def die_with_parent() -> None:
    """In a Luigi worker's child process: get SIGTERM when the parent dies (even by SIGKILL), so that the
    child stops its container instead of running on unowned (Linux; elsewhere nothing happens)."""
    if not in_worker_process():
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Heartbeat(threading.Thread):
    """Renews the lease every few seconds; if another client took it over (it judged us dead), it stops our
    job so that two containers never run the same node."""

    def __init__(self, runs: RunStore, node_id: str, lease: Lease, version: str):
        super().__init__(daemon=True, name=f"lease-{node_id[:12]}")
        self.runs, self.node_id, self.lease, self.version = runs, node_id, lease, version
        self.on_lost: Callable[[], None] = lambda: None
        self.stopping = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stopping.wait(HEARTBEAT):
            try:
                version = self.runs.renew(self.node_id, self.lease, self.version)
            except DisdatError:
                continue  # the remote did not answer this time: the lease lasts LEASE_TTL, try again
            if version is None:
                self.lost = True
                self.on_lost()
                return
            self.version = version

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


@dataclass
class Holding:
    """A client's hold on a node's lease (see :meth:`NodeOwner.hold`)."""

    heartbeat: _Heartbeat

    @property
    def lost(self) -> bool:
        return self.heartbeat.lost

    def on_lost(self, stop: Callable[[], None]) -> None:
        self.heartbeat.on_lost = stop


class NodeOwner:
    """One node of one remote context, as seen by one client with one backend (see the module docstring)."""

    def __init__(self, runs: RunStore, node_id: str, backend: Backend):
        self.runs, self.node_id, self.backend = runs, node_id, backend

    # -- jobs that own a node --------------------------------------------------------------------------
    def live_job(self, record: Optional[RunRecord]) -> Optional[Job]:
        """The live job that runs the node now, to wait for rather than run again: the job the record names,
        or one its client submitted but died before naming (then named in the record now). Either must carry
        the node's and the remote's labels. Only a running record of this backend has one."""
        if record is None or record.status != RUNNING or record.backend != self.backend.name:
            return None
        live = [job for job in self.backend.jobs_of(self.node_id, self.runs.where, record.job_id) if job.is_live()]
        if not live:
            return None
        if live[0].id != record.job_id:
            self.runs.update_running(self.node_id, lambda r: replace(r, job_id=live[0].id), record.attempt)
        return live[0]

    def settle(self, record: Optional[RunRecord], result: Optional[JobResult] = None) -> Optional[RunRecord]:
        """A running record whose job ended without writing its result (it failed before it started, was
        killed, lost its dependency): recorded with the backend's reason. Returns what is there."""
        if record is None or record.status != RUNNING or not record.job_id or record.backend != self.backend.name:
            return record
        result = result or self.backend.job(record.job_id).result()
        if result is None or result.status == "succeeded":
            return record
        status = TIMED_OUT if result.status == "timed_out" else FAILED
        why = failure_reason(result)
        cause = TIMED_OUT_CAUSE if status == TIMED_OUT else result.cause or INFRASTRUCTURE
        return self.runs.update_running(self.node_id, lambda r: r.finished(
            status, why, exit_code=result.exit_code, cause=cause), record.attempt) or record

    # -- job-owned nodes: claims ------------------------------------------------------------------------
    def claim(self, job: NodeJob, record: Optional[RunRecord],
              version: Optional[str]) -> Optional[Tuple[RunRecord, str]]:
        """Claim the node for a new detached attempt (a compare-and-swap over what was read): the claim and its
        version, or None when another client changed the record first."""
        self.runs.check_conditional_writes()
        if record is not None:
            self.runs.archive(record)  # the attempt the claim replaces stays in the history
        attempt = record.attempt + 1 if record else 1
        claim = new_record(job, self.backend.name, attempt, detached=True)
        written = self.runs.write_if(claim, version)
        return (claim, written) if written else None

    def name_job(self, claim: RunRecord, version: str, job: Job) -> None:
        """Put the job's id into the claim it was submitted under (whoever changed the record meanwhile: the
        job itself may have finished already)."""
        named = replace(claim, job_id=job.id)
        if not self.runs.write_if(named, version):
            self.runs.update_running(self.node_id, lambda r: replace(r, job_id=job.id), claim.attempt)

    # -- client-owned nodes: the lease -----------------------------------------------------------------
    @contextlib.contextmanager
    def hold(self, on_wait: Callable[[str], None]) -> Iterator[Optional[Holding]]:
        """Hold the node's lease while inside (renewed by a heartbeat, released at the end). Yields None when
        another client held it and finished meanwhile (look at the node again), after waiting for it; raises
        ContainerFailed when that client's run of the node failed."""
        lease = Lease.mine(self.backend.name)
        version = self.runs.take(self.node_id, lease) or self._take_over_or_wait(lease, on_wait)
        if version is None:
            yield None
            return
        heartbeat = _Heartbeat(self.runs, self.node_id, lease, version)
        heartbeat.start()
        try:
            yield Holding(heartbeat)
        finally:
            heartbeat.stop()
            with contextlib.suppress(DisdatError):
                self.runs.release(self.node_id, heartbeat.version)

    def _take_over_or_wait(self, lease: Lease, on_wait: Callable[[str], None]) -> Optional[str]:
        """The lease's new version when its holder is dead (taken over first, cleaned up after); None after
        waiting for a live holder to finish."""
        current = self.runs.lease(self.node_id)
        if current is None:
            return None  # released meanwhile: look again
        held, version = current
        watch = LeaseWatch(version)
        if not held.stale():
            waiting = f"waiting for the same node, run by {held.describe()}"
            logger.info("node %s: %s", self.node_id[:12], waiting)
            on_wait(waiting)
            before = self.runs.current(self.node_id)
            while True:
                time.sleep(POLL)
                record = self.runs.current(self.node_id)
                fresh = record is not None and (before is None or record.attempt > before.attempt
                                                or before.status == RUNNING)
                if fresh and record.status in (FAILED, TIMED_OUT):  # type: ignore[union-attr]
                    raise ContainerFailed(f"{record.pipe_cls} failed in the identical run of {held.describe()}: "
                                          f"{record.error}")  # type: ignore[union-attr]
                if fresh and record.status == SUCCEEDED:  # type: ignore[union-attr]
                    return None
                current = self.runs.lease(self.node_id)
                if current is None or current[0].owner != held.owner:
                    return None
                if watch.stale(*current):  # dead, or a lease that never changes: nobody renews it
                    held, version = current
                    break
        taken = self.runs.take(self.node_id, lease, over=version)
        if taken is not None and not held.free:  # a released lease left nothing behind
            self.clean_up(f"its client ({held.describe()}) died before it finished")
        return taken

    def clean_up(self, why: str) -> List[str]:
        """A node whose client died (call only while owning it): stop and remove its jobs (keeping their
        log), record it interrupted. Its jobs are the ones the backend finds labelled with this node and this
        remote (a record's job id is only a hint, checked the same way: a crafted record cannot point at
        anybody else's container or job). A detached node's job owns it: it is never stopped here."""
        record = self.runs.current(self.node_id)
        if record is not None and record.status == RUNNING and record.detached:
            return []
        hint = record.job_id if record is not None and record.backend == self.backend.name else None
        jobs = self.backend.jobs_of(self.node_id, self.runs.where, hint)
        with shielded():
            for job in jobs:
                job.cancel(why)
                self.keep_log(job)
                job.release()
            self.runs.update_running(self.node_id, lambda r: r.finished(INTERRUPTED, why, cause=INTERRUPTED_CAUSE))
        return [job.id for job in jobs]

    def keep_log(self, job: Job, finished: Optional[RunRecord] = None) -> None:
        """Store the job's log next to the node's record, unless ``finished`` (the record as read after the job
        ended) is final: then its container wrote both, the log first. A log that cannot be stored is said in
        the task log but fails nothing."""
        if finished is not None and finished.status != RUNNING:
            return
        try:
            lines = job.logs()
            if lines:
                self.runs.write_log(self.node_id, ("\n".join(lines) + "\n").encode())
        except DisdatError as exc:
            logger.warning("the log of node %s was not stored: %s", self.node_id[:12], exc)
