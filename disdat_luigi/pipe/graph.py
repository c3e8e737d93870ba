"""A pipe class with its upstream pipes, expanded into a graph of nodes on the host, before anything runs.

``pipe_requires`` / ``add_dependency`` are walked from the root instance: each distinct pipe instance (class
and parameters: Luigi's task id) is one node, so a shared upstream runs once. The walk is depth-first in
declaration order; an upstream is named by the first dependency name that reaches it (which names its
output bundle, see :mod:`.identity`). A cycle, or an output name no bundle can have, is one error line.

Node ids are computed afterwards (:meth:`Graph.node_ids`) from explicit inputs: the code that will run
each node (an image id, or the code version in process), the input uuid, the nonce and the output tags.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Type

from luigi.task_register import Register

from ..errors import DisdatError
from ..store.manifest import check_name
from . import identity
from .loader import canonical_params, make_pipe
from .task import PipeTask


@dataclass(frozen=True)
class Node:
    key: str                    # the pipe instance's Luigi task id (class + parameters)
    pipe_cls: str               # module.PipeClass
    params: Dict[str, str]      # every parameter as a Luigi string (canonical)
    upstream: Dict[str, str]    # dependency name -> key of the upstream node, in declaration order
    bundle_name: str
    reads_input: bool           # pipe_run takes pipeline_input (or **kwargs)
    is_root: bool


@dataclass(frozen=True)
class Graph:
    nodes: Dict[str, Node]      # by key, upstream nodes before the nodes that need them
    root: str

    @property
    def root_node(self) -> Node:
        return self.nodes[self.root]

    def node_ids(self, code_of: Callable[[Node], str], input_uuid: str, nonce: str,
                 output_tags: Mapping[str, str]) -> Dict[str, str]:
        """key -> node id, upstream first (each id hashes its upstream ids)."""
        ids: Dict[str, str] = {}
        for key, node in self.nodes.items():
            ids[key] = identity.node_id(
                pipe_cls=node.pipe_cls, params=node.params, code=code_of(node), input_uuid=input_uuid,
                upstream={name: ids[up] for name, up in node.upstream.items()}, nonce=nonce,
                root_output=(node.bundle_name, output_tags) if node.is_root else None)
        return ids


def reads_input(cls: type) -> bool:
    parameters = inspect.signature(cls.pipe_run).parameters.values()
    return any(p.name == "pipeline_input" or p.kind is p.VAR_KEYWORD for p in parameters)


def fresh_root(cls: Type[PipeTask], params: Dict[str, Any]) -> PipeTask:
    """A new instance to expand a graph from: Luigi hands back the instance it made earlier with the same
    parameters, and an instance keeps what its pipe_requires declared (dependencies, set_bundle_name)."""
    Register.clear_instance_cache()
    return make_pipe(cls, params)


def _checked(name: str, task: PipeTask) -> str:
    return check_name(name, f"bundle name for {task.pipe_path()}")


def root_name(root: PipeTask, output_name: Optional[str]) -> str:
    """What the root's output is called (:func:`.identity.root_bundle_name`), checked."""
    return _checked(identity.root_bundle_name(output_name=output_name, set_name=root.set_name,
                                              class_name=type(root).__name__), root)


def expand(root: PipeTask, output_name: Optional[str]) -> Graph:
    """The graph of ``root`` and every pipe upstream of it; ``output_name`` None: the root names its output."""
    named = root_name(root, output_name)
    nodes: Dict[str, Node] = {}
    dependency_names: Dict[str, str] = {}
    visiting: List[PipeTask] = []

    def visit(task: PipeTask) -> None:
        key = task.task_id
        if key in nodes:
            return
        if any(t.task_id == key for t in visiting):
            path = " -> ".join(t.pipe_path() for t in visiting[[t.task_id for t in visiting].index(key):])
            raise DisdatError(f"the pipes depend on each other in a cycle: {path} -> {task.pipe_path()}")
        visiting.append(task)
        deps = task.requires()
        for name, dep in deps.items():
            dependency_names.setdefault(dep.task_id, name)
        for dep in deps.values():
            visit(dep)
        visiting.pop()
        is_root = task is root
        bundle_name = named if is_root else _checked(identity.upstream_bundle_name(
            root_name=named, set_name=task.set_name, dependency_name=dependency_names[key]), task)
        nodes[key] = Node(
            key=key, pipe_cls=task.pipe_path(), params=canonical_params(task),
            upstream={name: dep.task_id for name, dep in deps.items()}, bundle_name=bundle_name,
            reads_input=reads_input(type(task)), is_root=is_root)

    visit(root)
    return Graph(nodes, root.task_id)
