"""Submit a whole graph at once to a backend that chains jobs itself (AWS Batch's ``dependsOn``), then return:
no client has to stay up while it runs (Disdat's non-blocking ``run``).

Nodes that succeeded before are not submitted; a node still running in a live job (an identical run
submitted earlier) is not submitted again, and its dependents wait for that job. Every submitted node gets
its run record (``running``, with its job id) before it can start, and the root's output name gets a
pending marker on the remote, so that ``dsdt pull NAME`` knows to wait for it or to say why it failed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..remotes.runs import RUNNING, SUCCEEDED, RunStore
from .backend import Backend
from .execute import new_record
from .job import NodeJob, NodeSpec
from .request import run_request


@dataclass(frozen=True)
class Submitted:
    node: NodeSpec
    job_id: Optional[str]
    state: str          # "submitted", "already running" or "done"


def submit_graph(jobs: Sequence[Tuple[NodeJob, str]], backend: Backend, runs: RunStore,
                 secrets: Callable[[], Dict[str, str]]) -> List[Submitted]:
    """Submit ``jobs`` ((job, image reference), upstream first) with their dependencies; see the docstring."""
    credentials = secrets()
    job_of: Dict[str, str] = {}
    out: List[Submitted] = []
    for job, image in jobs:
        node = job.node
        record = runs.record(node.node_id)
        if record is not None and record.status == SUCCEEDED:
            out.append(Submitted(node, None, "done"))
            continue
        if (record is not None and record.status == RUNNING and record.job_id and record.backend == backend.name
                and backend.is_live(record.job_id)):
            job_of[node.node_id] = record.job_id
            out.append(Submitted(node, record.job_id, "already running"))
            continue
        depends_on = [job_of[up] for up in node.upstream.values() if up in job_of]
        runs.write(new_record(job, backend.name, attempt=(record.attempt + 1) if record else 1))
        job_id = backend.submit(run_request(job, image, credentials, depends_on))
        runs.update_running(node.node_id, lambda r: replace(r, job_id=job_id))
        job_of[node.node_id] = job_id
        out.append(Submitted(node, job_id, "submitted"))
    root = jobs[-1][0].node
    runs.write_pending(root.bundle_name, root.node_id)
    return out
