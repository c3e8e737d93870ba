"""Planning a run: what ``dsdt run``, ``RunPipe`` and the API share, before anything is pushed or started.

:func:`plan_run` turns what the user typed (names, tags, a pipe class, parameters) into one
:class:`RunPlan`: the input's uuid, the remote, the backend, and every node of the pipe's graph with its
id, image, output name and upstream nodes. Everything that can be checked is checked here, each failure one
line: context, remote (and its conditional writes, which leases need), backend (engine reachable, queue
present), pipe classes, parameters, a dependency cycle, the images of every module in the graph (present and
built from the code on disk), and the input (present, committed; on the remote with ``--no-push-input``).

The plan is the one value handed to the Luigi tasks (a private parameter, never shown by the scheduler) and,
one node at a time as a :class:`~disdat_luigi.containers.job.NodeJob`, to the containers.
"""
from __future__ import annotations

import json
import uuid as uuidlib
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Dict, Optional, Tuple

import luigi
from luigi.task_register import Register

from .. import config
from ..containers.backend import backend_name, get_backend
from ..containers.job import NodeJob, NodeSpec
from ..errors import DisdatError, NotFound
from ..pipe.graph import expand
from ..pipe.settings import RunSettings, settings_of
from ..store.context import Bundle, Context
from ..store.home import Home
from ..store.manifest import check_name


@dataclass(frozen=True)
class NodePlan:
    spec: NodeSpec
    image: str                  # the reference the backend runs: the image id (Local), a registry URI (Batch)
    image_id: str
    settings: RunSettings = RunSettings()   # how it runs (resources, retries, timeout): never in its id


@dataclass(frozen=True)
class RunPlan:
    home: str                   # the local store ($DISDAT_HOME) the output goes to
    context: str                # the local context (its remote is where everything goes)
    remote_url: str
    remote_context: str
    run_id: str                 # the root node's id
    input_uuid: str             # "" when the pipe has no input
    backend: str
    nodes: Tuple[NodePlan, ...]  # upstream first, the root last
    push_input: bool = True
    pull_intermediates: bool = False
    session_token_seconds: int = 0
    wait: bool = True           # False: hand the graph to a backend that chains jobs, and return
    chains: bool = False        # the backend chains jobs: the graph is submitted whole, its jobs own the nodes

    @property
    def root(self) -> NodePlan:
        return self.nodes[-1]

    @cached_property
    def _by_id(self) -> Dict[str, NodePlan]:
        return {n.spec.node_id: n for n in self.nodes}

    def node(self, node_id: str) -> NodePlan:
        return self._by_id[node_id]

    def job(self, node_id: str) -> NodeJob:
        n = self.node(node_id)
        return NodeJob(remote_url=self.remote_url, remote_context=self.remote_context, run_id=self.run_id,
                       input_uuid=self.input_uuid, image=n.image_id, backend=self.backend, node=n.spec)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def __hash__(self) -> int:  # Luigi hashes parameter values (its summaries); the dicts inside are not hashable
        return hash(self.run_id)

    @classmethod
    def from_json(cls, text: str) -> "RunPlan":
        d = json.loads(text)
        d["nodes"] = tuple(NodePlan(spec=NodeSpec(**n.pop("spec")), settings=RunSettings(**n.pop("settings")), **n)
                           for n in d["nodes"])
        return cls(**d)


class RunPlanParameter(luigi.Parameter):
    """A RunPlan as a Luigi parameter (JSON on the wire)."""

    def parse(self, x):
        return x if isinstance(x, RunPlan) else RunPlan.from_json(x)

    def serialize(self, x):
        return x.to_json() if isinstance(x, RunPlan) else x

    def normalize(self, x):
        return self.parse(x) if isinstance(x, str) else x


def resolve_input(ctx: Context, name: Optional[str], tags: Dict[str, str], push_input: bool) -> str:
    if name is None:
        if tags:
            raise DisdatError("input tags (-it) need an input bundle, not -")
        return ""
    if push_input:
        bundle: Bundle = ctx.latest(name, tags)
        if not bundle.committed:
            raise DisdatError(f"input {name} ({bundle.uuid}) is not committed: `dsdt commit -u {bundle.uuid}` "
                              f"first (runs push their input)")
        return bundle.uuid
    from ..remotes import remote_of

    with remote_of(ctx) as remote:
        if ctx.index.latest(name, tags) is not None:
            uuid = ctx.latest(name, tags).uuid
            if not remote.has_bundle(uuid):
                raise NotFound(f"input {name} ({uuid}) is not on the remote {remote.url}: push it (`dsdt push "
                               f"{name}`) or drop --no-push-input")
            return uuid
        return remote.latest(name, tags).uuid


def plan_run(*, context: Optional[str], input_bundle: Optional[str], output_bundle: str, pipe_cls: str,
             pipe_params: str, backend: str = "", input_tags: Optional[Dict[str, str]] = None,
             output_tags: Optional[Dict[str, str]] = None, force: bool = False, push_input: bool = True,
             session_token_seconds: int = 0, pull_intermediates: bool = False,
             wait: Optional[bool] = None) -> RunPlan:
    from ..containers.dockerize import resolve_image
    from ..pipe.loader import load_pipe_class, params_from_json

    config.validate()
    ctx = Home().context(context)
    output_name = None if output_bundle in (None, "-") else check_name(output_bundle)  # "-": the root names it
    binding = ctx.require_remote()
    chosen = get_backend(backend_name(backend))
    chosen.check(binding.url)  # an unavailable backend fails here, before any push
    root_dir = config.pipe_root()
    cls = load_pipe_class(pipe_cls, root_dir)
    params = params_from_json(cls, pipe_params)
    Register.clear_instance_cache()  # pipe instances cache their requirements
    try:
        root = cls(**params)
    except Exception as exc:  # a missing required parameter, mostly
        raise DisdatError(f"cannot make {cls.__name__} with {params}: {exc}") from None
    graph = expand(root, output_name)
    images = {}
    for node in graph.nodes.values():
        module = node.pipe_cls.rpartition(".")[0]
        if module not in images:
            images[module] = resolve_image(module, root_dir)
    out_tags = dict(output_tags or {})
    input_uuid = resolve_input(ctx, input_bundle, dict(input_tags or {}), push_input)
    from ..remotes import remote_of
    from ..runs.store import RunStore

    with remote_of(ctx) as remote:  # once, here: Luigi's worker processes inherit the answer
        RunStore(remote).check_conditional_writes()
    nonce = uuidlib.uuid4().hex if force else ""
    image_of = {key: images[node.pipe_cls.rpartition(".")[0]] for key, node in graph.nodes.items()}
    ids = graph.node_ids(lambda node: image_of[node.key].id, input_uuid, nonce, out_tags)
    classes = {n.pipe_cls for n in graph.nodes.values()}
    settings = {path: settings_of(load_pipe_class(path, root_dir)) for path in classes}
    for path, s in settings.items():
        chosen.check_settings(path, s)
    nodes = tuple(NodePlan(
        spec=NodeSpec(node_id=ids[key], pipe_cls=node.pipe_cls, params=node.params, bundle_name=node.bundle_name,
                      tags=out_tags if node.is_root else {}, upstream={d: ids[k] for d, k in node.upstream.items()},
                      reads_input=node.reads_input),
        image=chosen.image_reference(image_of[key]), image_id=image_of[key].id, settings=settings[node.pipe_cls])
        for key, node in graph.nodes.items())
    return RunPlan(home=str(Home().path), context=ctx.name, remote_url=binding.url,
                   remote_context=binding.remote_context,
                   run_id=ids[graph.root], input_uuid=input_uuid, backend=chosen.name, nodes=nodes,
                   push_input=push_input, pull_intermediates=pull_intermediates,
                   session_token_seconds=session_token_seconds,
                   wait=not chosen.chains_jobs or (config.get("run", "wait") if wait is None else wait),
                   chains=chosen.chains_jobs)
