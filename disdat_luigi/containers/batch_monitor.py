"""One poller for every AWS Batch job this process waits for.

A run that waits for its jobs (``--wait``) follows all of them with DescribeJobs, 100 ids a call, in rounds:
one round a second while states change; while none do, rounds further apart (1.5 times a round) up to one every
2 s, or every twentieth of the time the states have not changed (:data:`QUIET_SHARE`), at most every
:data:`POLL_MAX` seconds: a job that ends is seen within 2 s, or a twentieth of the time it ran quiet (the wall
time a back-off costs stays a small share of the run's: a join or the run's end waits for the round that sees
its last job end, and on a 24-job ``--wait`` run on moto rounds up to 3 s apart cost ~1.5 s of its ~34 s);
further apart while Batch refuses (throttling, an outage). So a waiting run makes at most one call a second per
100 jobs, and fewer while its jobs run long.

Every waiting node (one thread per Luigi task) reads its job's state from the rounds instead of asking Batch
itself, so a run of 1,000 jobs makes about ten calls a round, not a thousand: Metaflow's users met
``TooManyRequestsException`` with 32 workers each polling its own job (Metaflow issue #138), and the account's
50 calls a second are shared with SubmitJob.
"""
from __future__ import annotations

import contextlib
import threading
import time
from typing import Dict, Iterator, Optional, Tuple

from ..errors import DisdatError, RemoteError
from .batch_client import BatchClient

POLL_FIRST, POLL_MAX = 1.0, 10.0       # seconds between rounds: while states change / at the most when none do
POLL_QUIET, QUIET_SHARE = 2.0, 0.05    # ... while none do: this much, or this share of the time since a change
POLL_REFUSED_MAX = 60.0                # ... while Batch refuses the calls
GIVE_UP = 600.0                        # seconds of refused rounds before the waiters fail with the reason


class BatchMonitor:
    """See the module docstring. Waiters use :meth:`following` and :meth:`next_round`."""

    def __init__(self, client: BatchClient):
        self.client = client
        self._cond = threading.Condition()
        self._followed: Dict[str, int] = {}     # job id -> how many waiters follow it
        self._seen: Dict[str, dict] = {}        # job id -> its latest description
        self._unknown: set = set()              # ids Batch said it does not know
        self._round = 0
        self._looked_at: Dict[str, int] = {}    # job id -> the latest round that asked about it
        self._released: set = set()             # jobs whose waiters were let go (their job was stopped)
        self._refused_since: Optional[float] = None
        self._error: Optional[str] = None
        self._thread: Optional[threading.Thread] = None
        self._wake = threading.Event()

    @contextlib.contextmanager
    def following(self, job_id: str) -> Iterator[None]:
        """Follow ``job_id`` in every round while inside."""
        with self._cond:
            self._followed[job_id] = self._followed.get(job_id, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._poll, daemon=True, name="batch-monitor")
                self._thread.start()
            else:
                self._wake.set()   # a new job: look at it in the next round, not after a long back-off
        try:
            yield
        finally:
            with self._cond:
                self._followed[job_id] -= 1
                if not self._followed[job_id]:
                    del self._followed[job_id]
                    self._looked_at.pop(job_id, None)

    def release(self, job_id: str) -> None:
        """Let the waiters of a job go now (it was stopped: they need not wait for a round, which may be far off
        while Batch cannot be reached)."""
        with self._cond:
            self._released.add(job_id)
            self._cond.notify_all()

    def released(self, job_id: str) -> bool:
        with self._cond:
            return job_id in self._released

    def latest(self, job_id: str) -> Optional[dict]:
        """The job's description from the latest round (None when it was never described)."""
        with self._cond:
            return self._seen.get(job_id)

    def next_round(self, job_id: str, after: int) -> Tuple[Optional[dict], int]:
        """Wait for a round newer than ``after`` that asked about the job; its description then (None: Batch
        does not know it) and that round's number. Raises when Batch has refused every round for GIVE_UP
        seconds."""
        with self._cond:
            while self._looked_at.get(job_id, 0) <= after and job_id not in self._released:
                self._cond.wait(POLL_REFUSED_MAX)
            if job_id in self._released:
                return self._seen.get(job_id), after
            if self._error and self._refused_since and time.monotonic() - self._refused_since > GIVE_UP:
                raise RemoteError(f"AWS Batch has not answered for {GIVE_UP:.0f} s: {self._error}")
            return (None if job_id in self._unknown else self._seen.get(job_id)), self._looked_at[job_id]

    def _poll(self) -> None:
        interval = POLL_FIRST
        last_change = time.monotonic()
        while True:
            with self._cond:
                ids = list(self._followed)
                if not ids:
                    self._thread = None
                    return
            started = time.monotonic()
            before = {job_id: (self._seen.get(job_id) or {}).get("status") for job_id in ids}
            try:
                described = self.client.describe(ids)
                error = None
            except DisdatError as exc:
                described, error = {}, str(exc)
            with self._cond:
                self._seen.update(described)
                if error is None:
                    self._unknown.update(job_id for job_id in ids if job_id not in described)
                    self._refused_since = None
                elif self._refused_since is None:
                    self._refused_since = time.monotonic()
                self._error = error
                self._round += 1
                self._looked_at.update((job_id, self._round) for job_id in ids)
                self._cond.notify_all()
            changed = any(before[job_id] != job.get("status") for job_id, job in described.items())
            if changed:
                last_change = time.monotonic()
            if error is not None:
                interval = min(max(interval, POLL_FIRST) * 2, POLL_REFUSED_MAX)
            elif changed:
                interval = POLL_FIRST
            else:
                quiet = max(POLL_QUIET * POLL_FIRST, QUIET_SHARE * (time.monotonic() - last_change))
                interval = min(interval * 1.5, quiet, POLL_MAX)
            self._wake.wait(interval)
            self._wake.clear()
            time.sleep(max(0.0, started + POLL_FIRST - time.monotonic()))  # never more than a round a second
