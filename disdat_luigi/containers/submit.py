"""Submit a whole graph at once to a backend that chains jobs itself (AWS Batch's ``dependsOn``), then return:
no client has to stay up while it runs (Disdat's non-blocking ``run``).

Each node is submitted under its lease, so two clients submitting the same graph at once never submit a
node twice: the second finds the first one's job and chains to it. Nodes that succeeded before are not
submitted; a node already running in a live job of this node (an identical run submitted earlier, or a
waiting client's) is not submitted again either, and its dependents wait for that job. Every submitted
node's record says ``running`` and ``detached`` (its job, not a client, owns it) before the job can start,
and the root's output name gets a pending marker listing the run's nodes, so that ``dsdt pull NAME`` can
wait for it or say which node failed and why.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import DisdatError
from ..remotes.runs import Lease, RunStore
from .backend import Backend
from .execute import live_job, new_record
from .job import NodeJob, NodeSpec
from .request import run_request

PATIENCE = 30.0     # seconds to wait for another client that is submitting the same node right now


@dataclass(frozen=True)
class Submitted:
    node: NodeSpec
    job_id: Optional[str]
    state: str          # "submitted", "already running" or "done"


def _lease(runs: RunStore, node_id: str, backend: Backend) -> Tuple[Optional[Lease], Optional[str]]:
    """This node's lease for this client, or (None, None) when a live client holds it (it runs the node)."""
    lease = Lease.mine(backend.name)
    version = runs.take(node_id, lease)
    if version is None:
        held = runs.lease(node_id)
        if held is None or held[0].stale():
            version = runs.take(node_id, lease, over=held[1] if held else None)
    return (lease, version) if version else (None, None)


def submit_graph(jobs: Sequence[Tuple[NodeJob, str]], backend: Backend, runs: RunStore,
                 secrets: Callable[[], Dict[str, str]]) -> List[Submitted]:
    """Submit ``jobs`` ((job, image reference), upstream first) with their dependencies; see the docstring."""
    credentials = secrets()
    job_of: Dict[str, str] = {}
    out: List[Submitted] = []
    for job, image in jobs:
        node = job.node
        deadline = time.monotonic() + PATIENCE
        while True:
            if runs.succeeded(node.node_id):
                out.append(Submitted(node, None, "done"))
                break
            live = live_job(backend, runs, runs.current(node.node_id))
            if live:
                job_of[node.node_id] = live
                out.append(Submitted(node, live, "already running"))
                break
            lease, version = _lease(runs, node.node_id, backend)
            if version is not None:
                try:
                    job_of[node.node_id] = _submit(job, image, backend, runs, credentials, job_of)
                finally:
                    with contextlib.suppress(DisdatError):
                        runs.release(node.node_id, version)
                out.append(Submitted(node, job_of[node.node_id], "submitted"))
                break
            if time.monotonic() > deadline:
                raise DisdatError(f"node {node.node_id[:12]} ({node.pipe_cls}) is held by another client that "
                                  f"runs it here, not as a {backend.name} job: run again when it has finished")
            time.sleep(1)  # another client is submitting or running it: its job id appears in a moment
    root = jobs[-1][0].node
    runs.write_pending(root.bundle_name, [job.node.node_id for job, _ in jobs])
    return out


def _submit(job: NodeJob, image: str, backend: Backend, runs: RunStore, credentials: Dict[str, str],
            job_of: Dict[str, str]) -> str:
    node = job.node
    record = runs.current(node.node_id)
    attempt = record.attempt + 1 if record else 1
    depends_on = [job_of[up] for up in node.upstream.values() if up in job_of]
    runs.write(new_record(job, backend.name, attempt, detached=True))
    job_id = backend.submit(run_request(job, image, credentials, depends_on, attempt=attempt))
    runs.update_running(node.node_id, lambda r: replace(r, job_id=job_id), attempt)
    return job_id
