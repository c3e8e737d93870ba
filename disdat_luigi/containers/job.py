"""What one container is told to do: a :class:`NodeJob`, the entrypoint's one argument (JSON, no secrets).

It names the remote, the run, the input bundle, and the node: its pipe class and canonical parameters, its
output name and tags, and its upstream nodes by dependency name. Upstream *outputs* are not in it: the
container reads them from the upstream nodes' run records when it starts, so a whole graph can be handed to
AWS Batch at once, before any of it has run.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Dict

from ..errors import DisdatError
from ..store.manifest import check_hex_id, check_name, check_tag, check_uuid


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    pipe_cls: str
    params: Dict[str, str]          # canonical: every parameter as a Luigi string
    bundle_name: str
    tags: Dict[str, str] = field(default_factory=dict)       # the root's output tags ({} upstream)
    upstream: Dict[str, str] = field(default_factory=dict)   # dependency name -> upstream node id
    reads_input: bool = True


@dataclass(frozen=True)
class NodeJob:
    remote_url: str
    remote_context: str
    run_id: str
    input_uuid: str                 # "" when the pipe has no input
    image: str                      # the image id the node's identity was computed with
    backend: str
    node: NodeSpec
    attempt: int = 1                # the attempt the container runs: its final record replaces only that one

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "NodeJob":
        try:
            d = json.loads(text)
            node = NodeSpec(**d.pop("node"))
            job = cls(node=node, **d)
            check_hex_id(job.run_id, "run id")
            check_hex_id(node.node_id, "node id")
            check_name(node.bundle_name)
            check_name(job.remote_context, "remote context name")
            if job.input_uuid:
                check_uuid(job.input_uuid)
            for k, v in node.tags.items():
                check_tag(k, v)
            for dep, up in node.upstream.items():
                check_hex_id(up, f"upstream node {dep}")
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in node.params.items()):
                raise ValueError("params must map names to strings")
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            raise DisdatError(f"the job description is malformed: {str(exc)[:200]}") from None
        return job
