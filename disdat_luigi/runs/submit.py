"""Submit a whole graph at once to a backend that chains jobs itself (AWS Batch's ``dependsOn``): no client has
to stay up while it runs (Disdat's non-blocking ``run``), and a client that does wait (``--wait``) follows
the jobs instead of starting them one by one, so a run's concurrency is Batch's, not the client's.

A node's job is its owner (:mod:`.owner`): the node's record, written with a compare-and-swap before its job
is submitted, is the claim, so two clients submitting the same graph never submit a node twice (the second
finds the first one's claim and chains to its job); a client killed mid-submit leaves claims that the next
run adopts (the job, found by its labels) or takes over (a claim without a job, once it is old). Nodes that
succeeded before are not submitted, nor nodes that run in a live job already; their dependents wait for that
job. The root's output name gets a pending marker listing the run's nodes, so that ``dsdt pull NAME`` can
wait for it or say which node failed and why.

At scale, nothing is done one node after another: one listing says which nodes have a record, those are read
by a bounded pool (one request a node, plus the output manifest of the ones that succeeded), the jobs they name
are checked in batches (DescribeJobs, 100 a call), and every node is submitted as soon as its upstream nodes
have jobs, by a bounded pool of submitters (a claim, one SubmitJob paced under Batch's rate by the client, the
job id into the record). Fan-ins wider than Batch allows go through the
backend's barrier jobs. A first submission of a graph of 1,000 nodes is Batch's pace: 25 s at 40 calls a second.

A client that waits for its run (``--wait``) needs no barriers: it holds back a fan-in wider than Batch allows
(and the nodes downstream of it), and submits it when at most 20 of its upstream jobs have not yet succeeded,
depending on those alone (the backend's :meth:`~..containers.backend.Backend.unfinished_when_few`, fed by the
rounds the waiting nodes make anyway). A barrier's start latency is a job start on Batch (seconds on EC2, up to
a minute on Fargate), paid after the last upstream job ends; the held node is submitted while its upstream jobs
still run. :func:`submit_graph` returns before the held nodes are submitted (their own threads do it), so that
the waiting nodes are followed meanwhile; a held node's task waits for its submission (:func:`held_submission`).
If an upstream job fails, the held node and its dependents are not submitted (Batch would fail them). A client
stopped or killed before then leaves them unsubmitted, without a record: the next run submits them; a stop that
comes while one is being submitted stops its job too. Another client of the same run (sharing luigid) whose
task of a held node finds no record gives the holder a minute to submit it (``NodeAwait``).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..containers.backend import INFRASTRUCTURE, Backend, Job
from ..containers.batch_client import MAX_DEPENDS_ON
from ..containers.backend import INTERRUPTED as INTERRUPTED_CAUSE
from ..containers.job import NodeJob, NodeSpec
from ..containers.request import host_settings, run_request
from ..errors import DisdatError
from ..pipe.settings import RunSettings
from .owner import CLAIM_PATIENCE, NodeOwner, age
from .record import FAILED, INTERRUPTED, RUNNING, RunRecord
from .store import RunStore, Versioned, in_parallel, pool_size

logger = logging.getLogger("disdat_luigi")
_submitted_here: Dict[str, Tuple[str, str]] = {}   # job id -> (remote, node) of the jobs this process submitted
_verified: Dict[Tuple[str, str], str] = {}          # (remote, node) -> its job, checked by its labels here
# (remote, the graph's nodes) -> (when, its states, uses left) of the latest survey of each graph (see survey)
_surveys: Dict[Tuple[str, Tuple[str, ...]], Tuple[float, Dict[str, "NodeState"], int]] = {}
_held: Dict[Tuple[str, str], Future] = {}          # (remote, node) -> the submission of a node held back
# (its submission's stop, the future, set once it is past its wait and submitting) of the held nodes not ended
_holding: List[Tuple[threading.Event, Future, threading.Event]] = []
_submitted_lock = threading.Lock()
HELD_STOP_WAIT = 5.0        # seconds a stopping run gives a held node's submission that is under way to end
SURVEY_REUSE = 30.0         # seconds a graph's survey may stand in for the next ones (claims are compare-and-swaps)
SURVEY_USES = 3             # ... how many (is the graph submitted? asked before building and by Luigi of the run
#                             and of its task; then its submission)
LIST_FROM = 50              # nodes from which a graph's records are found by a listing first
LIST_KEYS_PER_NODE = 20     # ... of at most this many keys a node (a page is 1,000 keys; reading one, one request)


def verified_job(where: str, node_id: str) -> Optional[str]:
    """The job this process submitted for the node, or found live and labelled for it (a graph's worth of
    checks was made in batches: the node's task need not check its job again, one call a node)."""
    with _submitted_lock:
        return _verified.get((where, node_id))


def _verify(where: str, jobs: Dict[str, str]) -> None:
    with _submitted_lock:
        _verified.update(((where, node), job_id) for node, job_id in jobs.items())


def submitted_here(job_id: str) -> bool:
    """This process submitted the job (only such jobs does it ever stop: an adopted one is another run's)."""
    with _submitted_lock:
        return job_id in _submitted_here


def held_submission(where: str, node_id: str) -> Optional[Future]:
    """The submission (a Future of :class:`Submitted`) of a node this process held back, see the module
    docstring; None for every other node."""
    with _submitted_lock:
        return _held.get((where, node_id))


HELD = "held"                   # (a Submitted's state) to be submitted when few of its upstream jobs are left
NOT_SUBMITTED = "not submitted"


@dataclass(frozen=True)
class Submitted:
    node: NodeSpec
    job_id: Optional[str]
    state: str          # "submitted", "already running", "done", HELD or NOT_SUBMITTED
    why: str = ""       # (NOT_SUBMITTED) why not


@dataclass(frozen=True)
class NodeState:
    record: Optional[RunRecord]
    version: Optional[str]
    done: bool                  # succeeded, its output on the remote
    live: Optional[Job]         # the live job its record names (checked by its labels)


def survey(node_ids: Sequence[str], backend: Backend, runs: RunStore) -> Dict[str, NodeState]:
    """Every node's state: the records that exist (one listing, see :func:`_existing`) read with a bounded pool
    of remote requests, the named jobs checked in batches. A graph's survey is taken again by the next survey of
    the same graph within :data:`SURVEY_REUSE` seconds, :data:`SURVEY_USES` times (``dsdt run`` asks whether the
    graph is submitted three times, then submits it: one survey, not four); a submission leaves none behind. A state
    that changed meanwhile costs nothing but a retry: every claim is a compare-and-swap over the version read."""
    key = (runs.where, tuple(node_ids))
    now = time.monotonic()
    with _submitted_lock:
        kept = _surveys.pop(key, None)
        if kept is not None and now - kept[0] < SURVEY_REUSE:
            if kept[2] > 1:
                _surveys[key] = (kept[0], kept[1], kept[2] - 1)
            return dict(kept[1])
    read = _read_records(list(node_ids), runs)
    done = runs.succeeded_among(read)
    hints = {node: record.job_id for node, (record, _) in read.items()
             if not done[node] and record is not None and record.status == RUNNING and record.job_id
             and record.backend == backend.name}
    live = backend.live_jobs(hints, runs.where) if hints else {}
    _verify(runs.where, {node: job.id for node, job in live.items()})
    states = {node: NodeState(read[node][0], read[node][1], done[node], live.get(node)) for node in node_ids}
    with _submitted_lock:
        _surveys[key] = (now, states, SURVEY_USES)
    return states


def _forget_survey(runs: RunStore, node_ids: Sequence[str]) -> None:
    with _submitted_lock:
        _surveys.pop((runs.where, tuple(node_ids)), None)


def _read_records(node_ids: List[str], runs: RunStore) -> Dict[str, Versioned]:
    """The nodes' records and versions: only those that exist are read ((None, None) for the others)."""
    existing = _existing(node_ids, runs)
    read = runs.read_many(node_ids if existing is None else [n for n in node_ids if n in existing])
    return {node: read.get(node, (None, None)) for node in node_ids}


def _existing(node_ids: List[str], runs: RunStore) -> Optional[set]:
    """Which of the nodes have a record, from one listing of the context's records, or None when a listing
    would cost more than reading each record (a context with far more records than the graph has nodes), or is
    refused (a role without s3:ListBucket). A record written after the listing is no danger: a node found
    without one is claimed with a create-only write, which then fails, and the record is read."""
    if len(node_ids) < LIST_FROM:
        return None
    prefix = runs.record_key(node_ids[0]).rpartition("/")[0] + "/"
    wanted, found = set(node_ids), set()
    try:
        for n, key in enumerate(runs.store.list(prefix)):
            if n >= LIST_KEYS_PER_NODE * len(node_ids):
                return None
            name = key[len(prefix):]
            if name.endswith(".json") and name[:-5] in wanted:
                found.add(name[:-5])
    except DisdatError:
        return None
    return found


def submit_graph(jobs: Sequence[Tuple[NodeJob, str, RunSettings]], backend: Backend, runs: RunStore,
                 secrets: Callable[[], Dict[str, str]], hold_wide: bool = False) -> List[Submitted]:
    """Submit ``jobs`` ((job, image reference, its pipe's settings), upstream first) with their dependencies;
    with ``hold_wide`` (the client waits for the run), hold wide fan-ins back instead of chaining them through
    barriers. See the module docstring."""
    return _GraphSubmission(jobs, backend, runs, secrets(), hold_wide).run()


class _GraphSubmission:
    def __init__(self, jobs: Sequence[Tuple[NodeJob, str, RunSettings]], backend: Backend, runs: RunStore,
                 credentials: Dict[str, str], hold_wide: bool):
        self.jobs = {job.node.node_id: (job, image, settings) for job, image, settings in jobs}
        self.order = [job.node.node_id for job, _, _ in jobs]
        self.backend, self.runs, self.credentials = backend, runs, credentials
        self.host = host_settings(jobs[0][0].remote_url) if jobs else None
        self.stopping = threading.Event()
        self.mine: Dict[str, str] = {}      # node id -> job id submitted by this submission
        self.hold_wide = hold_wide
        self.busy: Dict[str, threading.Event] = {}   # held node -> set once it is past its wait (see stop_holding)

    def run(self) -> List[Submitted]:
        states = survey(self.order, self.backend, self.runs)
        _forget_survey(self.runs, self.order)  # what is read after a submission must be read again
        futures: Dict[str, Future] = {}
        held = self._held(states)
        with _submitted_lock:  # an earlier run's held submission of a node is not this one's
            for node in self.order:
                _held.pop((self.runs.where, node), None)
        pool = ThreadPoolExecutor(pool_size(), thread_name_prefix="submit")
        try:
            for node in self.order:  # upstream first: a node's upstream futures always start before it does
                if node in held:
                    futures[node] = self._hold(node, states[node], futures)
                else:
                    futures[node] = pool.submit(self._node, node, states[node], futures)
            out = [futures[node].result() if node not in held else Submitted(self.jobs[node][0].node, None, HELD)
                   for node in self.order]
        except BaseException as exc:
            self.stopping.set()
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(exc, KeyboardInterrupt):
                stop_jobs(self.backend, self.runs, self.mine, f"its submission was interrupted ({exc or 'Ctrl-C'})")
            raise
        pool.shutdown()
        root = self.jobs[self.order[-1]][0].node
        self.runs.write_pending(root.bundle_name, self.order)
        return out

    def _held(self, states: Dict[str, NodeState]) -> set:
        """(hold_wide) The nodes to hold back: those to submit with more upstream jobs than Batch allows, and the
        nodes downstream of one."""
        held: set = set()
        if not self.hold_wide:
            return held
        for node in self.order:
            if states[node].done or states[node].live is not None:
                continue
            upstream = [up for up in dict.fromkeys(self.jobs[node][0].node.upstream.values()) if up in self.jobs]
            if sum(not states[up].done for up in upstream) > MAX_DEPENDS_ON or any(up in held for up in upstream):
                held.add(node)
        return held

    def _hold(self, node: str, state: NodeState, futures: Dict[str, Future]) -> Future:
        """Submit the node from a thread of its own (it waits for its upstream jobs, see the module docstring);
        a daemon, so that a client that ends first is not kept up by it."""
        future: Future = Future()
        self.busy[node] = threading.Event()

        def submit() -> None:
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self._node(node, state, futures))
            except BaseException as exc:  # the node's task (or the run's stop) sees it; the log says it anyway
                logger.info("held node %s was not submitted: %s: %s", node[:12], type(exc).__name__, exc)
                future.set_exception(exc)

        with _submitted_lock:
            _held[(self.runs.where, node)] = future
            _holding.append((self.stopping, future, self.busy[node]))
        threading.Thread(target=submit, name=f"held-{node[:12]}", daemon=True).start()
        return future

    def _node(self, node: str, state: NodeState, futures: Dict[str, Future]) -> Submitted:
        job, image, settings = self.jobs[node]
        spec = job.node
        if state.done:
            return Submitted(spec, None, "done")
        if state.live is not None:
            return Submitted(spec, state.live.id, "already running")
        ups = [futures[up].result() for up in dict.fromkeys(spec.upstream.values()) if up in futures]
        blocked = next((up for up in ups if up.state == NOT_SUBMITTED), None)
        if blocked is not None:
            return Submitted(spec, None, NOT_SUBMITTED, f"its upstream node {blocked.node.pipe_cls} was not "
                                                        f"submitted ({blocked.why})")
        upstream = [up.job_id for up in ups if up.job_id]
        if self.hold_wide and len(upstream) > MAX_DEPENDS_ON:
            try:
                upstream = self.backend.unfinished_when_few(upstream, MAX_DEPENDS_ON, self.stopping)
            except DisdatError as exc:
                return Submitted(spec, None, NOT_SUBMITTED, str(exc))
        if node in self.busy:
            self.busy[node].set()
        owner = NodeOwner(self.runs, node, self.backend)
        record, version = state.record, state.version
        deadline = time.monotonic() + CLAIM_PATIENCE
        while True:
            if self.stopping.is_set():
                raise KeyboardInterrupt("the submission stopped")
            wait = self._wait_for_other(owner, record, deadline)
            if isinstance(wait, Job):
                _verify(self.runs.where, {node: wait.id})
                return Submitted(spec, wait.id, "already running")
            if wait:
                time.sleep(0.5)
                record, version = self.runs.read(node)
                continue
            claimed = owner.claim(job, record, version)
            if claimed is None:  # another client wrote the record first: look at what it wrote
                record, version = self.runs.read(node)
                if self.runs.made_by(record):
                    return Submitted(spec, None, "done")
                continue
            claim, claim_version = claimed
            if self.stopping.is_set():   # stopped while claiming: leave no claim for the next run to wait out
                self.runs.write_if(claim.finished(INTERRUPTED, "its submission was interrupted",
                                                  cause=INTERRUPTED_CAUSE), claim_version)
                raise KeyboardInterrupt("the submission stopped")
            try:
                submitted = self.backend.submit(run_request(job, image, self.credentials, upstream,
                                                            claim.attempt, self.runs.job_arguments, settings,
                                                            self.host))
            except BaseException as exc:
                why = str(exc).splitlines()[0] if isinstance(exc, DisdatError) else f"{type(exc).__name__}: {exc}"
                self.runs.write_if(claim.finished(FAILED, f"its {self.backend.job_word} could not be submitted: "
                                                          f"{why}", cause=INFRASTRUCTURE), claim_version)
                raise
            with _submitted_lock:
                _submitted_here[submitted.id] = (self.runs.where, node)
                _verified[(self.runs.where, node)] = submitted.id
            self.mine[node] = submitted.id
            owner.name_job(claim, claim_version, submitted)
            if self.stopping.is_set() and node in self.busy:   # a held node submitted as its run stopped
                stop_jobs(self.backend, self.runs, {node: submitted.id}, "its run was stopped as it was submitted")
                raise KeyboardInterrupt("the submission stopped")
            return Submitted(spec, submitted.id, "submitted")

    def _wait_for_other(self, owner: NodeOwner, record: Optional[RunRecord], deadline: float):
        """Whether another client has the node in hand: its live job (to chain to), True while it is claiming
        or running it (look again soon), False when the node is free to claim. Past the patience, a client that
        runs the node itself (not as a job) is an error: this graph's jobs cannot wait for it."""
        if record is None or record.status != RUNNING:
            return False
        adopted = owner.live_job(record)  # also finds a job whose client died before naming it
        if adopted is not None:
            return adopted
        patient = time.monotonic() < deadline
        if record.detached:
            return record.job_id is None and age(record) < CLAIM_PATIENCE and patient  # being submitted now
        held = self.runs.lease(owner.node_id)
        if held is None or held[0].stale():
            return False
        if not patient:
            raise DisdatError(f"node {owner.node_id[:12]} ({record.pipe_cls}) is held by another client that runs "
                              f"it here, not as a {self.backend.name} job: run again when it has finished")
        return True


def stop_holding() -> None:
    """Submit none of the nodes held back any more (the run ends): they stay without a record, for the next run
    to submit. A submission under way is given a moment to end, so that its job is known to be stopped."""
    with _submitted_lock:
        holding = list(_holding)
        _holding.clear()
        _held.clear()
    for stopping, _, _ in holding:
        stopping.set()
    wait_for([future for _, future, busy in holding if busy.is_set()], timeout=HELD_STOP_WAIT)


def stop_submitted(backend: Backend, runs: RunStore, why: str) -> None:
    """Stop every live job this process submitted to this remote (an interrupted ``--wait`` run)."""
    stop_holding()
    with _submitted_lock:
        mine = {node: job_id for job_id, (where, node) in _submitted_here.items() if where == runs.where}
    stop_jobs(backend, runs, mine, why)


def stop_jobs(backend: Backend, runs: RunStore, jobs: Dict[str, str], why: str) -> None:
    """Stop the live ones of ``jobs`` (node id -> job id, submitted by this process) and record their nodes
    interrupted (a bounded pool of requests; their dependents fail with them)."""
    def stop(item: Tuple[str, str]) -> None:
        node, job_id = item
        try:
            backend.job(job_id).cancel(why)
            runs.update_running(node, lambda r: r.finished(INTERRUPTED, why, cause=INTERRUPTED_CAUSE))
        except DisdatError:
            pass

    live = backend.live_jobs(dict(jobs), runs.where) if jobs else {}
    in_parallel(stop, [(node, job.id) for node, job in live.items()])
