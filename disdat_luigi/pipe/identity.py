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

**Bundle names.** Disdat's rules:

* the root's output is the name the caller gave; when none was given (``None`` or ``"-"`` to ``api.apply``,
  ``api.run`` and ``dsdt apply``; ``dsdt run`` and ``RunPipe`` always take one), the name its
  ``pipe_requires`` set with ``set_bundle_name``, else its class name (``TextReport``, case kept). A given
  name wins over ``set_bundle_name``, as in Disdat;
* an upstream pipe's output is the name its ``pipe_requires`` set with ``set_bundle_name``, else
  ``<root's name>-<dependency name>`` (the name the first downstream pipe gave it in ``add_dependency``).

The root's id hashes its name (so the same pipe applied under two names gives two bundles, as Disdat re-runs
a pipe whose output name changed); an upstream node's id does not, so that runs of different outputs share
it: its output keeps the name of the run that made it first. Names must pass ``check_name`` (a class named
``_Private`` needs ``set_bundle_name`` or a given name); :mod:`.graph` checks them before anything runs.

Where this differs from Disdat (``disdatluigi/pipe.py`` of kyocum/disdat-luigi, ``PipeTask.human_id``,
``requires`` and ``_resolve_bundle``; ``disdat/pipe.py`` of kyocum/disdat before 1.0 has the same
``human_id``):

* Disdat names an upstream output without ``set_bundle_name`` after its class (``WordCount``); here it is
  ``<root's name>-<dependency name>``, so that a run's nodes have names of their own: ``dsdt runs 'report*'``
  finds them, and the run records of a fan of sixty ``Part`` nodes are told apart by name;
* Disdat re-runs an upstream pipe whose ``set_bundle_name`` changed (``_resolve_bundle``, step 3.5); here
  only the root's id hashes its name, so a renamed upstream output keeps its first name until something its
  id hashes changes (or ``--force``).
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


def root_bundle_name(*, output_name: Optional[str], set_name: Optional[str], class_name: str) -> str:
    """The root's output name: the given one, else its set_bundle_name, else its class name (see above)."""
    return output_name or set_name or class_name


def upstream_bundle_name(*, root_name: str, set_name: Optional[str], dependency_name: str) -> str:
    """An upstream node's output name: its set_bundle_name, else ``<root's name>-<dependency name>``."""
    return set_name or f"{root_name}-{dependency_name}"
