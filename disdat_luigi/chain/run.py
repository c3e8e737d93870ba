"""``dsdt run``: plan (one-line errors), then the run's Luigi graph, on the local or a central scheduler.

Workers (``--workers``, ``[run] workers``) run independent nodes at the same time. Under a central
scheduler (``--scheduler-url``, or ``[run] local_scheduler = false`` with luigi's ``[core]`` scheduler
settings) the scheduler is checked before anything is pushed; when another client is running nodes of the
same graph (an identical run started twice), luigid gives them to that client, and this one waits for them
and builds again, so that it attaches to the first run instead of failing or running them twice. (Luigi's
own ``keep_alive`` would also wait for ever behind a failed node.)

The error line of a failed run comes from the scheduler itself (the reason each failed task gave through
Luigi's failure path), so it is the same with one worker or many.
"""
from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import luigi
import luigi.rpc

from .. import config
from ..errors import DisdatError
from ..store.home import Home
from .events import events, luigi_log
from .plan import RunPlan


LOST_WORKER_RETRIES = 3


@dataclass(frozen=True)
class RunOptions:
    input_bundle: Optional[str]
    output_bundle: str
    pipe_cls: str
    pipe_args: Sequence[str] = ()
    pipe_params: Optional[Dict[str, object]] = None   # instead of pipe_args (the Python API)
    backend: str = ""
    input_tags: Optional[Dict[str, str]] = None
    output_tags: Optional[Dict[str, str]] = None
    force: bool = False
    push_input: bool = True
    session_token_seconds: int = 0
    pull_intermediates: bool = False
    workers: Optional[int] = None
    scheduler_url: Optional[str] = None
    context: Optional[str] = None
    wait: Optional[bool] = None     # AWSBatch: wait for the jobs (default [run] wait)
    verbose: bool = False           # Luigi's own log too, beside the node events (chain/events.py)


def redacted(url: str) -> str:
    """A URL fit to print: a user name or password in it is never shown."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.username is None and parsed.password is None:
        return url
    return urllib.parse.urlunsplit(parsed._replace(netloc="***@" + parsed.netloc.rpartition("@")[2]))


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0] if exc.args else exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def scheduler_url(explicit: Optional[str]) -> Optional[str]:
    """The central scheduler to use, or None for the local one."""
    if explicit:
        return explicit.rstrip("/")
    if config.get("run", "local_scheduler"):
        return None
    core = config.get_config()
    host = core.get("core", "scheduler_host", fallback="localhost")
    port = core.get("core", "scheduler_port", fallback="8082")
    return core.get("core", "scheduler_url", fallback="") or f"http://{host}:{port}"


def check_scheduler(url: str) -> None:
    """One line, before anything is pushed, when the central scheduler does not answer."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DisdatError(f"scheduler URL {redacted(url)!r} is not an http(s) URL, e.g. http://127.0.0.1:8082")
    query = urllib.parse.quote(json.dumps({"status": "RUNNING", "upstream_status": "", "search": "-"}))
    try:
        with urllib.request.urlopen(f"{url}/api/task_list?data={query}", timeout=5) as response:
            json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
        for secret in filter(None, (parsed.password, parsed.username)):
            reason = reason.replace(secret, "***")
        raise DisdatError(f"the Luigi scheduler at {redacted(url)} does not answer ({reason}): start luigid, or fix "
                          f"--scheduler-url / [core] scheduler_host and scheduler_port") from None


def make_task(options: RunOptions):
    """The RunPipe of these options (its plan computed: every check done)."""
    from ..pipe.loader import load_pipe_class, parse_pipe_args
    from .tasks import RunPipe

    if options.pipe_params is not None:
        params_json = json.dumps(options.pipe_params)
    else:  # Luigi's command-line form, serialized by each parameter (as RunPipe --pipe-params takes it)
        cls = load_pipe_class(options.pipe_cls, config.pipe_root())
        params = dict(cls.get_params())
        values = parse_pipe_args(cls, options.pipe_args)
        params_json = json.dumps({name: params[name].serialize(v) for name, v in values.items()})
    task = RunPipe(input_bundle=options.input_bundle or "-", output_bundle=options.output_bundle,
                   pipe_cls=options.pipe_cls, pipe_params=params_json, backend=options.backend or "",
                   input_tags=dict(options.input_tags or {}), output_tags=dict(options.output_tags or {}),
                   force=options.force, no_push_input=not options.push_input,
                   pull_intermediates=options.pull_intermediates, wait=options.wait,
                   use_aws_session_token=options.session_token_seconds, context=options.context or "")
    task.plan()
    return task


def _graph_tasks(root: luigi.Task) -> List[luigi.Task]:
    seen: Dict[str, luigi.Task] = {}
    stack = [root]
    while stack:
        task = stack.pop()
        if task.task_id in seen:
            continue
        seen[task.task_id] = task
        stack.extend(luigi.task.flatten(task.requires()))
    return list(seen.values())


def failure_reasons(result, root: luigi.Task) -> List[str]:
    """The reasons the failed tasks of this run gave, as the scheduler holds them (Luigi's failure path); ""
    for a task that failed without one (luigid lost the worker that ran it: a killed client)."""
    scheduler = result.worker._scheduler  # the local or remote scheduler the build used
    ours = {t.task_id for t in _graph_tasks(root)}
    reasons = []
    for task_id in [task_id for task_id in scheduler.task_list("FAILED", "") if task_id in ours]:
        error = (scheduler.fetch_error(task_id) or {}).get("error") or ""
        try:
            error = json.loads(error)  # the worker sends on_failure's text JSON-encoded
        except ValueError:
            pass
        reasons.append(str(error or "").strip())
    return reasons


def build(task, workers: int, url: Optional[str]):
    """One luigi.build of the run's graph, on the local scheduler or on luigid at ``url``, with this package's
    worker (chain/worker.py: nodes in threads), after surveying every node's completion at once."""
    from .. import luigi_defaults
    from .targets import completion
    from .worker import WorkerSchedulerFactory

    luigi_defaults()
    plan = task.plan()
    # an up-to-date rerun asks nothing of the remote; a non-blocking run's submission surveys the graph itself
    if plan.wait and not task.complete():
        completion.survey(plan.remote_url, plan.remote_context, [n.spec.node_id for n in plan.nodes])
    kwargs = dict(local_scheduler=True) if url is None else dict(scheduler_url=url)
    return luigi.build([task], workers=workers, detailed_summary=True,
                       worker_scheduler_factory=WorkerSchedulerFactory(),
                       log_level=config.get_config().get("core", "log_level", fallback="INFO"), **kwargs)


def run_elsewhere(result, root: luigi.Task) -> bool:
    """Some tasks of this graph are running under another client (luigid gave them to it)."""
    scheduler = result.worker._scheduler
    ours = {t.task_id for t in _graph_tasks(root)}
    return any(task_id in ours for task_id in scheduler.task_list("RUNNING", ""))


def run(options: RunOptions) -> RunPlan:
    """``dsdt run``: returns the plan of the run, whose root output is then in the local context."""
    url = scheduler_url(options.scheduler_url)
    if url:
        check_scheduler(url)
    task = make_task(options)
    plan = task.plan()
    n = len(plan.nodes)
    print(f"run {plan.run_id}: {options.pipe_cls} ({n} node{'s' if n != 1 else ''}) on {plan.backend}, image "
          f"{plan.root.image_id[:19]}" + (f", scheduler {redacted(url)}" if url else ""), file=sys.stderr)
    if plan.backend == "AWSBatch" and not config.get("dockerize", "registry"):
        print(f"note: no [dockerize] registry: the jobs name the local image {plan.root.image}, which only a Batch "
              f"emulation on this machine's Docker engine can run", file=sys.stderr)
    if plan.chains and not plan.session_token_seconds and not config.get("run", "job_role_arn"):
        print("note: the jobs get no credentials of yours and no job role ([run] job_role_arn): they reach the "
              "remote with the compute environment's instance role, or not at all; give them a role, or run with "
              "--use-aws-session-token SECONDS", file=sys.stderr)
    workers = options.workers or config.get("run", "workers")
    with events.enabled(), luigi_log(options.verbose):
        try:
            return _build_until_done(task, plan, workers, url)
        except KeyboardInterrupt:
            if plan.chains and plan.wait:  # the jobs this run submitted stop with it
                _stop_jobs(plan, "interrupted by its client (Ctrl-C or SIGTERM)")
            raise
        finally:
            if plan.chains and plan.wait:
                from ..runs.submit import stop_holding

                stop_holding()   # nodes held back and not yet submitted stay so (the next run submits them)
                settle_nodes(plan)
            from ..containers.backend import close_backends
            from ..remotes import close_shared

            close_backends()
            close_shared()
            if plan.wait:
                print(f"run {plan.run_id[:12]}: {events.summary(n)}", file=sys.stderr)


def _build_until_done(task, plan: RunPlan, workers: int, url: Optional[str]) -> RunPlan:
    lost = 0
    while True:
        try:
            result = build(task, workers, url)
        except luigi.rpc.RPCError as exc:  # luigid died mid-run: what ran is on the remote, finish without it
            print(f"the Luigi scheduler at {redacted(url or '')} stopped answering ({_first_line(exc)}): the run goes "
                  f"on with the local scheduler", file=sys.stderr)
            url = None
            continue
        if task.complete():
            return plan
        reasons = failure_reasons(result, task)
        explained = [r for r in reasons if r]
        if explained:
            raise DisdatError(f"the run failed: {explained[0].splitlines()[0]}")
        if reasons and url and lost < LOST_WORKER_RETRIES:
            lost += 1  # luigid failed a node whose worker it lost (a killed client): its lease says who runs it
            print("a node was failed by the scheduler after its worker was lost: building again", file=sys.stderr)
        elif not run_elsewhere(result, task):
            raise DisdatError(f"the run failed: the run did not complete ({result.status.value[1]})")
        else:
            print("waiting for the nodes another client is running, then building again", file=sys.stderr)
        time.sleep(2)


def _stop_jobs(plan: RunPlan, why: str) -> None:
    from ..containers.backend import get_backend
    from ..remotes import shared_remote
    from ..runs.store import RunStore
    from ..runs.submit import stop_submitted

    try:
        stop_submitted(get_backend(plan.backend), RunStore(shared_remote(plan.remote_url, plan.remote_context)), why)
    except DisdatError as exc:
        print(f"the jobs this run submitted could not be stopped: {exc}", file=sys.stderr)


def settle_nodes(plan: RunPlan) -> None:
    """Record the nodes whose jobs ended without their container's word (a failed dependency, a job that never
    started): nobody waited for them when an upstream node failed (a few batched calls, then one per such node)."""
    from ..errors import DisdatError
    from ..remotes import shared_remote
    from ..runs.history import settled
    from ..runs.store import RunStore, in_parallel

    runs = RunStore(shared_remote(plan.remote_url, plan.remote_context))
    try:
        settled(runs, in_parallel(runs.current, [n.spec.node_id for n in plan.nodes]))
    except DisdatError:
        pass  # the next `dsdt runs` or `dsdt pull` settles them


def output_bundle(plan: RunPlan):
    return Home(Path(plan.home)).context(plan.context).by_processing_id(plan.run_id)


def submitted_jobs(plan: RunPlan) -> List[tuple]:
    """(node id, pipe class, job id, status) of each node of a non-blocking run: as this process submitted them,
    else (every node was done, or running, already) from their run records."""
    from ..remotes import open_remote
    from ..runs.store import RunStore, in_parallel
    from .tasks import SubmitGraph

    submitted = SubmitGraph.submissions.get(plan.run_id)
    if submitted is not None:
        return [(s.node.node_id, s.node.pipe_cls, s.job_id, "succeeded" if s.state == "done" else "running")
                for s in submitted]
    with open_remote(plan.remote_url, plan.remote_context) as remote:
        runs = RunStore(remote)
        records = zip(plan.nodes, in_parallel(runs.record, [n.spec.node_id for n in plan.nodes]))
        return [(n.spec.node_id, n.spec.pipe_cls, r.job_id if r else None, r.status if r else "no record")
                for n, r in records]
