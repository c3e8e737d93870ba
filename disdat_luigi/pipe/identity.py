"""Who a pipe instance is, and what its output is called: pure functions of explicit inputs.

**Node id.** Every pipe instance of a run (or of an in-process apply) is a node. Its id is a hash of

* its pipe class and canonical parameters (every parameter, defaults included, as Luigi strings);
* the code that runs it: the image id in a container, the pipe_root's code version in process;
* the input bundle's uuid (``""`` when there is none);
* the ids of its upstream nodes, by dependency name (a Merkle hash: a change anywhere upstream changes it);
* the ``--force`` nonce (``""`` normally);
* for the root node only: the output bundle's name and tags.

So every node's id, and with it its target (the run record ``runs/<node_id>.json`` on the remote, or the
local bundle with that processing id), is known before anything runs, and a node that anybody completed
with the same inputs and code is complete for everybody who shares the remote.

**Bundle names.** The root's output is the name the user gave. An upstream pipe's output is the name its
``pipe_requires`` set with ``set_bundle_name``, else ``<output>-<dependency name>`` (the name the first
downstream pipe gave it in ``add_dependency``), as ``dsdt apply`` has always named them. An upstream node's
id does not hash that name, so that runs of different outputs share it: its output keeps the name of the run
that made it first.
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping, Optional, Tuple

ID_LENGTH = 32      # hex digits: 128 bits


def canonical_json(value: object) -> str:
    """The one serialization that ids hash: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def node_id(*, pipe_cls: str, params: Mapping[str, str], code: str, input_uuid: str,
            upstream: Mapping[str, str], nonce: str = "",
            root_output: Optional[Tuple[str, Mapping[str, str]]] = None) -> str:
    """The id of one pipe instance (see the module docstring for what goes in and why)."""
    parts = {"pipe": pipe_cls, "params": dict(params), "code": code, "input": input_uuid,
             "upstream": dict(upstream), "nonce": nonce}
    if root_output is not None:
        name, tags = root_output
        parts["output"] = {"name": name, "tags": dict(tags)}
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()[:ID_LENGTH]


def bundle_name(*, output_name: str, is_root: bool, set_name: Optional[str],
                dependency_name: Optional[str], class_name: str) -> str:
    """The name of a node's output bundle (see the module docstring)."""
    if is_root:
        return output_name
    return set_name or f"{output_name}-{dependency_name or class_name.lower()}"


