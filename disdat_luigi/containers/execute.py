"""Execute one node on a backend: own it, record it, run it, keep its log.

What ``ExecuteContainer.run`` does, kept out of the Luigi task so that it reads as the data flow:

1. **Own it.** Take the node's lease on the remote. If a live client holds it (an identical run in another
   process or on another machine), wait for that run and take its result instead of starting a second
   container. If the holder is dead (its process is gone, or its heartbeat stopped), stop and remove its
   container, keeping its log, record the node ``interrupted``, and take the lease over.
2. **Record it.** Write the run record ``running`` (attempt, backend, job id, host) before the container
   starts; the container writes ``succeeded`` or ``failed`` last. A heartbeat renews the lease meanwhile.
3. **Run it** on the backend, streaming its log lines and states to the caller.
4. **Finish it.** Store the container's log next to the record, release the container and the lease, and
   record ``timed_out``, ``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` (a container that died without a
   word) where the container could not. Every record update after the start is a compare-and-swap on a
   ``running`` record, so the container's own final record always wins.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import replace
from typing import Callable, Dict, Iterator, List, Optional

from ..errors import ContainerFailed, DisdatError
from ..remotes.runs import (FAILED, INTERRUPTED, RUNNING, SUCCEEDED, TIMED_OUT, HEARTBEAT, Lease, RunRecord,
                            RunStore, host_id)
from ..store.manifest import now_utc
from .backend import Backend, OnLine, OnStatus, RunRequest
from .job import NodeJob

POLL = 2.0          # seconds between looks at a node another client runs


def new_record(job: NodeJob, backend: str, attempt: int = 1, job_id: Optional[str] = None) -> RunRecord:
    node = job.node
    return RunRecord(node_id=node.node_id, run_id=job.run_id, status=RUNNING, pipe_cls=node.pipe_cls,
                     params=dict(node.params), bundle_name=node.bundle_name, backend=backend, image=job.image,
                     started=now_utc(), input_uuid=job.input_uuid or None, upstream=dict(node.upstream),
                     job_id=job_id, host=host_id(), attempt=attempt)


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


class _Heartbeat(threading.Thread):
    """Renews the lease every few seconds; if another client took it over (it judged us dead), it stops our
    job so that two containers never run the same node."""

    def __init__(self, runs: RunStore, node_id: str, lease: Lease, version: str, on_lost: Callable[[], None]):
        super().__init__(daemon=True, name=f"lease-{node_id[:12]}")
        self.runs, self.node_id, self.lease, self.version, self.on_lost = runs, node_id, lease, version, on_lost
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


def keep_log(backend: Backend, runs: RunStore, node_id: str, job_id: str) -> None:
    """Store the job's log next to the node's record (before its container goes)."""
    lines = backend.logs(job_id)
    if lines:
        runs.write_log(node_id, ("\n".join(lines) + "\n").encode())


def clean_up_node(backend: Backend, runs: RunStore, node_id: str, why: str) -> List[str]:
    """A node whose client died: stop and remove its jobs (keeping their log), record it interrupted. Its jobs
    are the ones the backend finds by the node's label, and the one its record names if still live."""
    jobs = backend.orphans(node_id, runs.where)
    record = runs.record(node_id)
    if (record is not None and record.status == RUNNING and record.backend == backend.name and record.job_id
            and record.job_id not in jobs and backend.is_live(record.job_id)):
        jobs.append(record.job_id)
    for job_id in jobs:
        keep_log(backend, runs, node_id, job_id)
        backend.cancel(job_id, why)
    runs.update_running(node_id, lambda r: r.finished(INTERRUPTED, why))
    return jobs


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
            record = self.runs.record(self.node_id)
            if record is not None and record.status == SUCCEEDED:
                return record
            lease = Lease.mine(self.backend.name)
            version = self.runs.take(self.node_id, lease)
            if version is None:
                version = self._take_over_or_wait(lease)
                if version is None:
                    continue
            try:
                record = self.runs.record(self.node_id)  # it may have finished while the lease was being taken
                if record is not None and record.status == SUCCEEDED:
                    return record
                return self._run(lease, version, attempt=(record.attempt + 1) if record else 1)
            finally:
                self.runs.release(self.node_id)

    def _take_over_or_wait(self, lease: Lease) -> Optional[str]:
        """The lease's new version when its holder was dead; None after waiting for a live holder."""
        current = self.runs.lease(self.node_id)
        if current is None:
            return None  # released meanwhile: look again
        held, held_version = current
        if held.stale():
            self.clean_up_after(held)
            return self.runs.take(self.node_id, lease, over=held_version)
        self.on_status(f"waiting for the same node, run by {held.describe()}")
        while True:
            time.sleep(POLL)
            record = self.runs.record(self.node_id)
            if record is not None and record.status in (FAILED, TIMED_OUT):
                raise ContainerFailed(f"{self.job.node.pipe_cls} failed in the identical run of {held.describe()}: "
                                      f"{record.error}")
            if record is not None and record.status == SUCCEEDED:
                return None
            current = self.runs.lease(self.node_id)
            if current is None or current[0].stale() or current[0].owner != held.owner:
                return None

    def clean_up_after(self, held: Lease) -> None:
        clean_up_node(self.backend, self.runs, self.node_id, f"its client ({held.describe()}) died before it finished")

    def _keep_log(self, job_id: str) -> None:
        keep_log(self.backend, self.runs, self.node_id, job_id)

    def _run(self, lease: Lease, version: str, attempt: int) -> RunRecord:
        request: RunRequest = self._request()
        self.runs.write(new_record(self.job, self.backend.name, attempt,
                                   job_id=request.name if self.backend.names_jobs else None))
        job_id: Optional[str] = None
        heartbeat = _Heartbeat(self.runs, self.node_id, lease, version,
                               on_lost=lambda: job_id and self.backend.cancel(job_id, "lost its lease"))
        heartbeat.start()
        try:
            with sigterm_interrupts():
                try:
                    job_id = self.backend.submit(request)
                    if job_id != request.name:
                        self.runs.update_running(self.node_id, lambda r: replace(r, job_id=job_id))
                    self.on_job(job_id)
                    result = self.backend.wait(job_id, self.on_line, self.on_status, request.timeout)
                except KeyboardInterrupt:
                    if job_id is not None:
                        self._keep_log(job_id)
                        self.backend.cancel(job_id, "interrupted")
                    self._finish(INTERRUPTED, "interrupted by its client (Ctrl-C or SIGTERM)")
                    raise
        finally:
            heartbeat.stop()
        try:
            self._keep_log(job_id)
        finally:
            self.backend.release(job_id)
        if heartbeat.lost:
            raise ContainerFailed(f"node {self.node_id[:12]} was taken over by another client while it ran here")
        record = self._finish(TIMED_OUT if result.status == "timed_out" else FAILED,
                              result.reason or "the container exited without writing its result")
        if result.status == "succeeded" and record is not None and record.status == SUCCEEDED:
            return record
        if record is not None and record.status == FAILED and record.error and result.status != "timed_out":
            # the entrypoint said why: lead with that
            raise ContainerFailed(f"{record.error} ({result.reason or 'exited 0 without a result'})",
                                  result.log_tail, result.exit_code)
        raise ContainerFailed(result.reason or f"the container of node {self.node_id[:12]} exited without a result",
                              result.log_tail, result.exit_code)

    def _finish(self, status: str, reason: str) -> Optional[RunRecord]:
        """The final record: the container's own when it wrote one, else ``status`` with ``reason``."""
        return self.runs.update_running(self.node_id, lambda r: r.finished(status, reason))

    def _request(self) -> RunRequest:
        from .request import run_request

        return run_request(self.job, self.image, self.secrets())
