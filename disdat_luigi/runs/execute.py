"""One node of a run, as its Luigi task sees it: run it here (a client-owned node, Local) or wait for the job
that owns it (AWS Batch, whose jobs were submitted with the graph).

**Run it** (:class:`NodeExecution`):

1. **Own it** (:meth:`.owner.NodeOwner.hold`): the node's lease, or wait for its live holder and take its
   result, or take it over from a dead one. A node that a live job owns (an AWS Batch job of a non-blocking
   run) is waited for instead.
2. **Record it**: the record ``running`` (attempt, backend, job id, host) before the job starts; the
   container writes ``succeeded`` or ``failed`` last, and its own log before that.
3. **Run it** on the backend, streaming its lines and states to the reporter.
4. **Finish it**: keep the job's log when the container could not, release the job and the lease, and
   record ``timed_out``, ``interrupted`` (Ctrl-C, SIGTERM, or :meth:`interrupt` from another thread) or
   ``failed`` where the container could not. Every record update after the start is a compare-and-swap on a
   ``running`` record of this attempt, so the container's own final record always wins.

**Wait for it** (:class:`NodeAwait`): the node's live job, checked by its labels, followed through the
backend's monitor (one poller for the whole run); a job that ends without its container's word is recorded
with the backend's reason. Interrupting it stops the job only if this process submitted it.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Protocol

from ..containers.backend import INTERRUPTED as INTERRUPTED_CAUSE
from ..containers.backend import TIMED_OUT as TIMED_OUT_CAUSE
from ..containers.backend import INFRASTRUCTURE, Backend, Job, JobResult, RunRequest
from ..containers.job import NodeJob
from ..errors import ContainerFailed, DisdatError
from ..pipe.settings import RunSettings
from .owner import Holding, NodeOwner, failure_reason, new_record, shielded, sigterm_interrupts
from .record import FAILED, INTERRUPTED, RUNNING, SUCCEEDED, TIMED_OUT, RunRecord
from .store import RunStore

logger = logging.getLogger("luigi-interface")


class Reporter(Protocol):
    """What a node tells its task (the task log, the scheduler, the terminal)."""

    follow_lines: bool                          # stream the job's output lines (lines()) as they come

    def lines(self, lines: List[str]) -> None: ...   # lines of the job's output, a block at a time

    def state(self, state: str) -> None: ...    # a state worth showing (running, RUNNABLE, ...)

    def job(self, job: Job) -> None: ...        # the job is known (its id, its page)


class _Interruptible:
    """A node's wait that another thread can stop (the run was interrupted: Ctrl-C reaches the main thread
    only, and Luigi's worker stops its tasks through :meth:`interrupt`)."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()
        self.why = ""
        self.job: Optional[Job] = None

    def interrupt(self, why: str) -> None:
        self.why = why
        self.interrupted.set()
        job = self.job
        if job is not None and self._stops(job):
            with contextlib.suppress(DisdatError):  # the node's own thread says what it could not stop
                job.cancel(interrupted(why))

    def _stops(self, job: Job) -> bool:
        return True

    def _raise_if_interrupted(self) -> None:
        if self.interrupted.is_set():
            raise KeyboardInterrupt(self.why)


class NodeExecution(_Interruptible):
    """One node run here, on a backend whose client waits (see the module docstring)."""

    def __init__(self, job: NodeJob, backend: Backend, runs: RunStore, image: str,
                 secrets: Callable[[], Dict[str, str]], reporter: Reporter, settings: RunSettings = RunSettings()):
        super().__init__()
        self.node_job, self.backend, self.runs, self.image = job, backend, runs, image
        self.secrets, self.reporter, self.settings = secrets, reporter, settings
        self.node_id = job.node.node_id
        self.owner = NodeOwner(runs, self.node_id, backend)

    def execute(self) -> RunRecord:
        """The node's succeeded record (its output, made by the node, is on the remote), after running it here
        or waiting for whoever runs it."""
        while True:
            self._raise_if_interrupted()
            with self.owner.hold(self.reporter.state) as held:
                if held is None:
                    continue  # another client held it, and finished: look again
                record = self.runs.current(self.node_id)
                if self.runs.made_by(record):
                    return record  # type: ignore[return-value]
                adopted = self.owner.live_job(record) if record is not None and record.detached else None
                if adopted is None:
                    return self._attempts(held, record)
            # a job owns the node (a non-blocking Batch run): wait for it, holding nothing
            return NodeAwait(self.node_job, self.backend, self.runs, self.reporter).follow(adopted)

    def _attempts(self, held: Holding, record: Optional[RunRecord]) -> RunRecord:
        """Run the node up to its pipe's attempts (@retry), each in a new container; an attempt that ran out of
        time is not tried again (as on AWS Batch), nor one stopped by its client."""
        for left in range(self.settings.attempts - 1, -1, -1):
            try:
                return self._run(held, record)
            except ContainerFailed as exc:
                if not left or exc.cause in (TIMED_OUT_CAUSE, INTERRUPTED_CAUSE) or held.lost:
                    raise
                record = self.runs.current(self.node_id)
                said = (f"attempt {record.attempt if record else '?'} failed ({str(exc).splitlines()[0][:200]}): "
                        f"trying again, {left} more attempt{'s' if left > 1 else ''} allowed")
                logger.info("node %s (%s): %s", self.node_id[:12], self.node_job.node.pipe_cls, said)
                self.reporter.state(said)
        raise AssertionError("a pipe has at least one attempt")

    def _run(self, held: Holding, record: Optional[RunRecord]) -> RunRecord:
        attempt = record.attempt + 1 if record else 1
        request = self._request(attempt)
        if record is not None:
            self.runs.archive(record)  # the attempt this one replaces stays in the history
        # the container's name is the job's id on engines that keep it (one write less when it is)
        self.runs.write(new_record(self.node_job, self.backend.name, attempt, job_id=request.name))
        try:
            with sigterm_interrupts():
                self._raise_if_interrupted()
                self.job = job = self.backend.submit(request)
                held.on_lost(lambda: job.cancel("lost its lease"))
                if job.id != request.name:
                    self.runs.update_running(self.node_id, lambda r: replace(r, job_id=job.id), attempt)
                self.reporter.job(job)
                self._raise_if_interrupted()  # interrupted while it was starting: it was not stopped then
                result = job.wait(self.reporter.lines if self.reporter.follow_lines else None, self.reporter.state,
                                  request.timeout)
                self._raise_if_interrupted()
        except KeyboardInterrupt as exc:
            self._stop(attempt, INTERRUPTED, interrupted(str(exc)), INTERRUPTED_CAUSE)
            raise
        except Exception as exc:
            why = str(exc).splitlines()[0] if isinstance(exc, DisdatError) else f"{type(exc).__name__}: {exc}"
            self._stop(attempt, FAILED, f"the {self.backend.job_word} could not run: {why}", INFRASTRUCTURE)
            raise
        record = self.runs.current(self.node_id)
        with shielded():
            self.owner.keep_log(job, record)
            job.release()
        if held.lost:
            raise ContainerFailed(f"node {self.node_id[:12]} was taken over by another client while it ran here")
        return _outcome(self.runs, self.node_id, result, attempt, self.backend.job_word, record)

    def _stop(self, attempt: int, status: str, why: str, cause: str) -> None:
        """Stop the job (keeping its log) and record why, whatever signals come meanwhile."""
        with shielded():
            if self.job is not None:
                try:
                    self.job.cancel(why)
                    self.owner.keep_log(self.job)
                    self.job.release()
                except DisdatError:
                    pass
            try:
                self.runs.update_running(self.node_id, lambda r: r.finished(status, why, cause=cause), attempt)
            except DisdatError:
                pass

    def _request(self, attempt: int) -> RunRequest:
        from ..containers.request import run_request

        return run_request(self.node_job, self.image, self.secrets(), attempt=attempt,
                           arguments=self.runs.job_arguments, settings=self.settings)


HELD_PATIENCE = 60.0     # seconds a node without a record is given to be submitted by another client (a held node)


class NodeAwait(_Interruptible):
    """A node whose job owns it (AWS Batch), followed to its end (see the module docstring)."""

    def __init__(self, job: NodeJob, backend: Backend, runs: RunStore, reporter: Reporter,
                 submitted_here: Callable[[str], bool] = lambda job_id: False,
                 verified: Callable[[str, str], Optional[str]] = lambda where, node_id: None,
                 held: Callable[[str, str], Optional[Future]] = lambda where, node_id: None):
        super().__init__()
        self.node_job, self.backend, self.runs, self.reporter = job, backend, runs, reporter
        self.node_id = job.node.node_id
        self.owner = NodeOwner(runs, self.node_id, backend)
        self.submitted_here, self.verified, self.held = submitted_here, verified, held

    def _stops(self, job: Job) -> bool:
        return self.submitted_here(job.id)  # another run's job keeps running: it is theirs to stop

    def execute(self) -> RunRecord:
        held = self.held(self.runs.where, self.node_id)
        if held is not None:
            self._submitted(held)
        record = self.runs.current(self.node_id)
        if record is None and held is None:
            record = self._claimed_elsewhere()
        if self.runs.made_by(record):
            return record  # type: ignore[return-value]
        named = record.job_id if record is not None and record.status == RUNNING else None
        if named is not None and self.verified(self.runs.where, self.node_id) == named:
            job: Optional[Job] = self.backend.job(named)  # checked with the graph's other jobs, in batches
        else:
            job = self.owner.live_job(record)
        if job is None:
            record = self.owner.settle(record)
            raise ContainerFailed(f"{self.node_job.node.pipe_cls} has no live {self.backend.job_word}: "
                                  f"{_why_not(record)}")
        return self.follow(job)

    def _submitted(self, held: Future) -> None:
        """Wait for the submission of a node the run's submission held back (a wide fan-in, submitted when few
        of its upstream jobs are left: runs/submit.py); then its record names its job, as any node's does."""
        while True:
            self._raise_if_interrupted()
            try:
                submitted = held.result(timeout=0.5)
                break
            except FutureTimeout:
                continue
        if submitted.job_id is None and submitted.why:
            raise ContainerFailed(f"{self.node_job.node.pipe_cls} was not submitted: {submitted.why}")

    def _claimed_elsewhere(self) -> Optional[RunRecord]:
        """A node without a record whose submission is not this process's: another client of the run (sharing
        luigid) may hold it back until its upstream jobs are nearly done, and submit it within a poll round or
        two of the moment they are; give it that long (None: nobody did, the node fails as never submitted)."""
        deadline = time.monotonic() + HELD_PATIENCE
        while time.monotonic() < deadline:
            self._raise_if_interrupted()
            time.sleep(2.0)
            record = self.runs.current(self.node_id)
            if record is not None:
                return record
        return None

    def follow(self, job: Job) -> RunRecord:
        self.job = job
        self.reporter.job(job)
        try:
            result = job.wait(self.reporter.lines if self.reporter.follow_lines else None, self.reporter.state)
            self._raise_if_interrupted()
        except KeyboardInterrupt as exc:
            if self._stops(job):
                why = interrupted(str(exc))
                with shielded(), contextlib.suppress(DisdatError):
                    job.cancel(why)  # a job that could not be stopped goes on: its record says running still
                    self.runs.update_running(self.node_id, lambda r: r.finished(INTERRUPTED, why,
                                                                                cause=INTERRUPTED_CAUSE))
            raise
        record = self.runs.current(self.node_id)
        if self.runs.made_by(record):
            return record  # type: ignore[return-value]
        return _outcome(self.runs, self.node_id, result, record.attempt if record else 1, job.word,
                        self.owner.settle(record, result))


def interrupted(why: str) -> str:
    """What an interrupted node's record (and its stopped job) says."""
    return f"interrupted by its client ({why or 'Ctrl-C or SIGTERM'})"


def _why_not(record: Optional[RunRecord]) -> str:
    if record is None:
        return "it was never submitted"
    return f"its record says {record.status.replace('_', ' ')}" + (f": {record.error}" if record.error else "")


def _outcome(runs: RunStore, node_id: str, result: JobResult, attempt: int, word: str,
             record: Optional[RunRecord] = None) -> RunRecord:
    """The node's final record: the container's own when it wrote one, else the backend's reason (raised as
    ContainerFailed with the job's last lines, leading with the container's own error when it gave one). A
    succeeded record is returned only when its output, made by the node, is on the remote (as every record
    :meth:`NodeExecution.execute` and :meth:`NodeAwait.execute` return): the run then knows the node is done
    without asking again."""
    ended = result.reason or f"the {word} exited without writing its result"
    fallback = failure_reason(result) or ended  # the container's own last word, when it could not record it
    cause = TIMED_OUT_CAUSE if result.status == "timed_out" else result.cause or INFRASTRUCTURE
    if record is None or record.status not in (SUCCEEDED, FAILED, TIMED_OUT, INTERRUPTED):
        record = runs.update_running(node_id, lambda r: r.finished(
            TIMED_OUT if result.status == "timed_out" else FAILED, fallback, exit_code=result.exit_code,
            cause=cause), attempt)
    if result.status == "succeeded" and record is not None and record.status == SUCCEEDED:
        if runs.made_by(record):
            return record
        raise ContainerFailed(f"its record says it succeeded, but its output {record.output_uuid} is not on the "
                              f"remote as made by node {node_id[:12]}", result.log_tail, result.exit_code,
                              INFRASTRUCTURE)
    wrote = record is not None and record.status == FAILED and record.error and record.error != fallback
    if wrote and result.status != "timed_out":  # the entrypoint recorded why: lead with that
        raise ContainerFailed(f"{record.error} ({ended})", result.log_tail, result.exit_code,  # type: ignore
                              record.cause or cause)  # type: ignore[union-attr]
    raise ContainerFailed(fallback, result.log_tail, result.exit_code, cause)
