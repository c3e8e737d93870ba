"""Execute one node on a backend: own it, record it, run it, keep its log.

What ``ExecuteContainer.run`` does, kept out of the Luigi task so that it reads as the data flow:

1. **Own it.** Take the node's lease on the remote. If a live client holds it (an identical run in another
   process or on another machine), wait for that run and take its result instead of starting a second
   container. If the holder is dead (its process is gone, or its heartbeat stopped), take the lease over
   first, then stop and remove what it left (its container, keeping its log) and record it ``interrupted``.
   A job that outlives its client by design (AWS Batch) and is still running is adopted instead: waited
   for, not run again.
2. **Record it.** Write the run record ``running`` (attempt, backend, job id, host) before the job starts;
   the container writes ``succeeded`` or ``failed`` last. A heartbeat renews the lease meanwhile.
3. **Run it** on the backend, streaming its log lines and states to the caller.
4. **Finish it.** Store the job's log next to the record, release the job and the lease, and record
   ``timed_out``, ``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` (a job that died or could not start)
   where the container could not. Every record update after the start is a compare-and-swap on a
   ``running`` record of this attempt, so the container's own final record always wins, and a client that
   lost its node never writes over the one that took it.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import signal
import threading
import time
from dataclasses import replace
from typing import Callable, Dict, Iterator, List, Optional

from ..errors import ContainerFailed, DisdatError
from ..remotes.runs import (FAILED, HEARTBEAT, INTERRUPTED, RUNNING, SUCCEEDED, TIMED_OUT, Lease, RunRecord,
                            RunStore, host_id)
from ..store.manifest import now_utc
from .backend import Backend, JobResult, OnLine, OnStatus, RunRequest
from .job import NodeJob

logger = logging.getLogger("luigi-interface")
POLL = 2.0          # seconds between looks at a node another client runs


def new_record(job: NodeJob, backend: str, attempt: int = 1, job_id: Optional[str] = None,
               detached: bool = False) -> RunRecord:
    node = job.node
    return RunRecord(node_id=node.node_id, run_id=job.run_id, status=RUNNING, pipe_cls=node.pipe_cls,
                     params=dict(node.params), bundle_name=node.bundle_name, backend=backend, image=job.image,
                     started=now_utc(), input_uuid=job.input_uuid or None, upstream=dict(node.upstream),
                     job_id=job_id, host=host_id(), attempt=attempt, detached=detached)


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


def in_worker_process() -> bool:
    """This is a child process of a Luigi worker pool (``--workers N``), not the client's own process."""
    return multiprocessing.current_process().name != "MainProcess"


def die_with_parent() -> None:
    """In a Luigi worker's child process: get SIGTERM when the parent dies (even by SIGKILL), so that the
    child stops its container instead of running on unowned (Linux; elsewhere nothing happens)."""
    if not in_worker_process():
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def keep_log(backend: Backend, runs: RunStore, node_id: str, job_id: str) -> None:
    """Store the job's log next to the node's record (before its container goes). A log that cannot be
    stored is said in the task log but fails nothing: the node's result does not depend on it."""
    try:
        lines = backend.logs(job_id)
        if lines:
            runs.write_log(node_id, ("\n".join(lines) + "\n").encode())
    except DisdatError as exc:
        logger.warning("the log of node %s was not stored: %s", node_id[:12], exc)


def clean_up_node(backend: Backend, runs: RunStore, node_id: str, why: str) -> List[str]:
    """A node whose client died: stop and remove its jobs (keeping their log), record it interrupted. Its jobs
    are the ones the backend finds labelled with this node and this remote (a record's job id is only a
    hint, checked the same way: a crafted record cannot point at anybody else's container or job)."""
    record = runs.current(node_id)
    if record is not None and record.status == RUNNING and record.detached:
        return []  # its job owns it, not the client that died: it is adopted or awaited, never stopped
    hint = record.job_id if record is not None and record.backend == backend.name else None
    jobs = backend.orphans(node_id, runs.where, hint)
    with shielded():
        for job_id in jobs:
            keep_log(backend, runs, node_id, job_id)
            backend.cancel(job_id, why)
        runs.update_running(node_id, lambda r: r.finished(INTERRUPTED, why))
    return jobs


def live_job(backend: Backend, runs: RunStore, record: Optional[RunRecord]) -> Optional[str]:
    """A live job of a node that outlives its client by design (AWS Batch), to wait for rather than submit again:
    the one the node's record names, or one its client submitted but died before naming (then named in the
    record now). Either is checked by the backend's labels, never taken on the record's word."""
    if (record is None or record.status != RUNNING or record.backend != backend.name
            or not backend.adopts_jobs):
        return None
    live = [job_id for job_id in backend.orphans(record.node_id, runs.where, record.job_id)
            if backend.is_live(job_id)]
    if live and live[0] != record.job_id:
        runs.update_running(record.node_id, lambda r: replace(r, job_id=live[0]), record.attempt)
    return live[0] if live else None


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


class NodeExecution:
    """One node of a run on one backend (see the module docstring)."""

    def __init__(self, job: NodeJob, backend: Backend, runs: RunStore, image: str,
                 secrets: Callable[[], Dict[str, str]], on_line: OnLine, on_status: OnStatus,
                 on_job: Callable[[str], None] = lambda job_id: None):
        self.job, self.backend, self.runs, self.image = job, backend, runs, image
        self.secrets, self.on_line, self.on_status, self.on_job = secrets, on_line, on_status, on_job
        self.node_id = job.node.node_id

    def execute(self) -> RunRecord:
        """The node's succeeded record, after running it here or waiting for whoever runs it."""
        while True:
            if self.runs.succeeded(self.node_id):
                return self.runs.record(self.node_id)  # type: ignore[return-value]
            lease = Lease.mine(self.backend.name)
            version = self.runs.take(self.node_id, lease) or self._take_over_or_wait(lease)
            if version is None:
                continue
            heartbeat = _Heartbeat(self.runs, self.node_id, lease, version)
            heartbeat.start()
            try:
                if self.runs.succeeded(self.node_id):  # it may have finished while the lease was being taken
                    return self.runs.record(self.node_id)  # type: ignore[return-value]
                return self._run(heartbeat, self.runs.current(self.node_id))
            finally:
                heartbeat.stop()
                with contextlib.suppress(DisdatError):
                    self.runs.release(self.node_id, heartbeat.version)

    def _take_over_or_wait(self, lease: Lease) -> Optional[str]:
        """The lease's new version when its holder was dead (taken over first, cleaned up after); None after
        waiting for a live holder to finish."""
        current = self.runs.lease(self.node_id)
        if current is None:
            return None  # released meanwhile: look again
        held, held_version = current
        if held.stale():
            version = self.runs.take(self.node_id, lease, over=held_version)
            if version is not None and not held.free:  # a released lease left nothing behind
                clean_up_node(self.backend, self.runs, self.node_id,
                              f"its client ({held.describe()}) died before it finished")
            return version
        waiting = f"waiting for the same node, run by {held.describe()}"
        logger.info("node %s: %s", self.node_id[:12], waiting)
        self.on_status(waiting)
        before = self.runs.current(self.node_id)
        while True:
            time.sleep(POLL)
            record = self.runs.current(self.node_id)
            fresh = record is not None and (before is None or record.attempt > before.attempt
                                            or before.status == RUNNING)
            if fresh and record.status in (FAILED, TIMED_OUT):  # type: ignore[union-attr]
                raise ContainerFailed(f"{self.job.node.pipe_cls} failed in the identical run of {held.describe()}: "
                                      f"{record.error}")  # type: ignore[union-attr]
            if fresh and record.status == SUCCEEDED:  # type: ignore[union-attr]
                return None
            current = self.runs.lease(self.node_id)
            if current is None or current[0].stale() or current[0].owner != held.owner:
                return None

    def _run(self, heartbeat: _Heartbeat, record: Optional[RunRecord]) -> RunRecord:
        adopted = live_job(self.backend, self.runs, record)
        attempt = record.attempt if adopted else (record.attempt + 1) if record else 1
        job_id: Optional[str] = adopted
        heartbeat.on_lost = lambda: job_id is not None and self.backend.cancel(job_id, "lost its lease")
        request: Optional[RunRequest] = None
        if adopted:
            self.on_status(f"adopted: {self.backend.job_word} {adopted} runs on")
        else:
            request = self._request(attempt)
            self.runs.write(new_record(self.job, self.backend.name, attempt,
                                       job_id=request.name if self.backend.names_jobs else None))
        try:
            with sigterm_interrupts():
                if request is not None:
                    job_id = self.backend.submit(request)
                    if job_id != request.name:
                        self.runs.update_running(self.node_id, lambda r: replace(r, job_id=job_id), attempt)
                self.on_job(job_id)  # type: ignore[arg-type]
                result = self.backend.wait(job_id, self.on_line, self.on_status,  # type: ignore[arg-type]
                                           request.timeout if request else None)
        except KeyboardInterrupt:
            self._stop(job_id, attempt, INTERRUPTED, "interrupted by its client (Ctrl-C or SIGTERM)")
            raise
        except Exception as exc:
            why = str(exc).splitlines()[0] if isinstance(exc, DisdatError) else f"{type(exc).__name__}: {exc}"
            self._stop(job_id, attempt, FAILED, f"the {self.backend.job_word} could not run: {why}")
            raise
        with shielded():
            keep_log(self.backend, self.runs, self.node_id, job_id)  # type: ignore[arg-type]
            self.backend.release(job_id)  # type: ignore[arg-type]
        if heartbeat.lost:
            raise ContainerFailed(f"node {self.node_id[:12]} was taken over by another client while it ran here")
        return self._result(result, attempt)

    def _stop(self, job_id: Optional[str], attempt: int, status: str, why: str) -> None:
        """Stop the job (keeping its log) and record why, whatever signals come meanwhile."""
        with shielded():
            if job_id is not None:
                keep_log(self.backend, self.runs, self.node_id, job_id)
                with contextlib.suppress(DisdatError):
                    self.backend.cancel(job_id, why)
            with contextlib.suppress(DisdatError):
                self.runs.update_running(self.node_id, lambda r: r.finished(status, why), attempt)

    def _result(self, result: JobResult, attempt: int) -> RunRecord:
        """The node's final record: the container's own when it wrote one, else the backend's reason."""
        fallback = result.reason or f"the {self.backend.job_word} exited without writing its result"
        record = self.runs.update_running(self.node_id, lambda r: r.finished(
            TIMED_OUT if result.status == "timed_out" else FAILED, fallback), attempt)
        if result.status == "succeeded" and record is not None and record.status == SUCCEEDED:
            return record
        wrote = record is not None and record.status == FAILED and record.error and record.error != fallback
        if wrote and result.status != "timed_out":  # the entrypoint said why: lead with that
            raise ContainerFailed(f"{record.error} ({fallback})", result.log_tail,  # type: ignore[union-attr]
                                  result.exit_code)
        raise ContainerFailed(fallback, result.log_tail, result.exit_code)

    def _request(self, attempt: int) -> RunRequest:
        from .request import run_request

        return run_request(self.job, self.image, self.secrets(), attempt=attempt)
