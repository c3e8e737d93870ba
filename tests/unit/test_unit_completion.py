"""What a run knows of its nodes' completion (chain/targets.py, chain/worker.py, runs/execute.py), on a file://
remote: Luigi's scheduling of a surveyed graph asks the remote nothing per node, a node this process saw succeed
is not asked about again, and a container's succeeded record counts only with its output made by the node."""
from __future__ import annotations

import luigi
import pytest

from disdat_luigi.chain.targets import RunRecordTarget, completion
from disdat_luigi.chain.worker import WorkerSchedulerFactory
from disdat_luigi.containers.backend import JobResult
from disdat_luigi.errors import ContainerFailed
from disdat_luigi.remotes import shared_remote
from disdat_luigi.runs.execute import _outcome
from disdat_luigi.runs.record import SUCCEEDED, RunRecord
from disdat_luigi.runs.store import RunStore

CONTEXT = "shared"


class Node(luigi.Task):
    """A node of a chain whose completion is its run record, as ExecuteContainer's is."""
    url = luigi.Parameter()
    node = luigi.Parameter()
    up = luigi.Parameter(default="")

    def requires(self):
        return [Node(url=self.url, node=self.up)] if self.up else []

    def output(self) -> RunRecordTarget:
        return RunRecordTarget(self.url, CONTEXT, self.node)


@pytest.fixture
def url(tmp_path) -> str:
    (tmp_path / "remote").mkdir()
    return (tmp_path / "remote").as_uri()


@pytest.fixture
def reads(monkeypatch) -> list:
    """The run records read from the remote, by node."""
    calls: list = []
    read = RunStore.read
    monkeypatch.setattr(RunStore, "read", lambda self, node: calls.append(node) or read(self, node))
    return calls


def test_luigi_schedules_a_surveyed_graph_asking_the_remote_nothing_per_node(url, reads):
    nodes = [f"{i:032x}" for i in range(1, 9)]
    root = None
    for up, node in zip([""] + nodes, nodes):
        root = Node(url=url, node=node, up=up)
    completion.survey(url, CONTEXT, nodes)
    assert len(reads) == len(nodes)
    with WorkerSchedulerFactory().create_worker(luigi.scheduler.Scheduler(), 1) as worker:
        assert worker.add(root)
    assert len(reads) == len(nodes)   # every task's completion check answered by the survey
    assert not root.complete() and len(reads) == len(nodes) + 1   # afterwards, what had not succeeded is asked again


def test_a_node_seen_to_succeed_here_is_not_asked_about_again(url, reads):
    target = RunRecordTarget(url, CONTEXT, "c" * 32)
    assert not target.exists() and len(reads) == 1
    target.seen_to_succeed()
    assert target.exists() and len(reads) == 1


def test_a_succeeded_record_whose_output_is_not_on_the_remote_fails_the_node(url):
    node = "d" * 32
    record = RunRecord(node_id=node, run_id=node, status=SUCCEEDED, pipe_cls="slow.Sleep", params={},
                       bundle_name="nap", backend="Local", image="sha256:x", started="2026-01-01T00:00:00.000000Z",
                       output_uuid="0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9", stopped="2026-01-01T00:00:01.000000Z")
    with pytest.raises(ContainerFailed, match=f"is not on the remote as made by node {node[:12]}"):
        _outcome(RunStore(shared_remote(url, CONTEXT)), node, JobResult("succeeded"), 1, "container", record)
