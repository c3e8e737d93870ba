"""The job description a container gets (disdat_luigi.containers.job.NodeJob)."""
from __future__ import annotations

import json

import pytest

from disdat_luigi.containers.job import NodeJob, NodeSpec
from disdat_luigi.errors import DisdatError

NODE = "a" * 32
RUN = "b" * 32
UP = "c" * 32
UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


def job(**node_changes) -> NodeJob:
    node = dict(node_id=NODE, pipe_cls="report.TextReport", params={"min_len": "3", "top": "5"},
                bundle_name="report", tags={"stage": "dev"}, upstream={"words": UP, "lines": "d" * 32},
                reads_input=False)
    node.update(node_changes)
    return NodeJob(remote_url="s3://bucket/prefix", remote_context="shared", run_id=RUN, input_uuid=UUID,
                   image="sha256:" + "e" * 64, backend="Local", node=NodeSpec(**node))


def test_node_job_round_trips_through_json():
    original = job()
    assert NodeJob.from_json(original.to_json()) == original


def test_node_job_round_trip_without_input_and_upstream():
    original = NodeJob(remote_url="file:///tmp/r", remote_context="c", run_id=RUN, input_uuid="", image="img",
                       backend="Local", node=NodeSpec(node_id=NODE, pipe_cls="m.P", params={}, bundle_name="out"))
    back = NodeJob.from_json(original.to_json())
    assert back == original
    assert (back.node.tags, back.node.upstream, back.node.reads_input) == ({}, {}, True)


def test_node_job_json_is_canonical():
    assert job().to_json() == json.dumps(json.loads(job().to_json()), sort_keys=True, separators=(",", ":"))


def mutated(path, value):
    d = json.loads(job().to_json())
    target = d
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(d)


@pytest.mark.parametrize("text", ["not json", "[]", "null", "3", '{"node": {}}', mutated(["node"], KeyError),
                                  mutated(["run_id"], KeyError), mutated(["surprise"], 1),
                                  mutated(["node", "surprise"], 1), mutated(["node", "params", "top"], 5),
                                  mutated(["node", "tags"], ["stage:dev"]), mutated(["node", "upstream"], "x")])
def test_node_job_malformed_json_is_a_disdat_error(text):
    with pytest.raises(DisdatError) as err:
        NodeJob.from_json(text)
    assert str(err.value).startswith("the job description is malformed: ")


@pytest.mark.parametrize("path, value, message", [
    (["node", "node_id"], "XYZ", "node id 'XYZ' is not a hex id"),
    (["node", "node_id"], "../../x", "node id '../../x' is not a hex id"),
    (["run_id"], "r", "run id 'r' is not a hex id"),
    (["node", "bundle_name"], "a/b", "invalid bundle name 'a/b'"),
    (["node", "bundle_name"], "", "invalid bundle name ''"),
    (["remote_context"], "../ctx", "invalid remote context name '../ctx'"),
    (["input_uuid"], "not-a-uuid", "uuid 'not-a-uuid' is not a uuid"),
    (["node", "upstream", "words"], "zz", "upstream node words 'zz' is not a hex id"),
    (["node", "tags", "a:b"], "c", "bad tag key 'a:b'"),
    (["node", "tags", "stage"], "\x1b[2J", "bad value for tag stage"),
])
def test_node_job_bad_field_is_a_disdat_error_naming_it(path, value, message):
    with pytest.raises(DisdatError) as err:
        NodeJob.from_json(mutated(path, value))
    assert str(err.value).startswith(message), str(err.value)
