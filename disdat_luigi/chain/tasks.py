"""A run as a Luigi graph: one container node per pipe instance, between pushing the input and pulling the
output::

    PushInput ----------------> ExecuteContainer(LineStats) --+
        \\                                                     +--> ExecuteContainer(TextReport) -> PullOutput
         +--------------------> ExecuteContainer(WordCount) --+          (RunPipe wraps the graph)

Each task is complete when its target exists: the input's manifest on the remote, the node's run record
with status ``succeeded``, the root's output bundle in the local context. So Luigi skips what anybody sharing
the remote already did, runs independent nodes at once (``--workers``), reruns only what failed, and the
central scheduler shows every node with its pipe class and parameters, a status message, a progress
percentage and, where the backend has one, a tracking URL.

Every task of a run carries the one :class:`~.plan.RunPlan` as a private parameter (never sent to the
scheduler); credentials are never parameters. A task is named (its Luigi id) by where its target is: the
remote URL and remote context for the remote ones, the store and context for the local one. So users with
contexts of the same name share one luigid without taking each other's tasks for their own, and users of one
remote share its nodes. A failure reaches the scheduler through Luigi's own path,
:meth:`luigi.Task.on_failure`, as the one-line reason (with the container's last log lines).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import luigi
from luigi.parameter import ParameterVisibility

from .. import config
from ..display import safe
from ..errors import DisdatError, IntegrityError
from ..remotes import open_remote, shared_remote
from ..store.home import Home
from .plan import RunPlan, RunPlanParameter
from .events import events
from .targets import LocalBundleTarget, RemoteBundleTarget, RunRecordTarget

logger = logging.getLogger("luigi-interface")


def _plan_parameter() -> RunPlanParameter:
    return RunPlanParameter(visibility=ParameterVisibility.PRIVATE, significant=False,
                            description="the run plan (private: never sent to the scheduler)")


class _Reporting(luigi.Task):
    """Status messages and progress for the scheduler: at most one message a second (each is an RPC), and the
    latest one always gets there (a trailing update), so a quiet container still shows its last log line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._said = 0.0
        self._pending: Optional[tuple] = None
        self._timer: Optional[threading.Timer] = None
        self._lock = threading.Lock()

    def report(self, message: str, percent: Optional[float] = None, force: bool = False) -> None:
        with self._lock:
            self._pending = (safe(message)[:300], percent)
            wait = 1.0 - (time.monotonic() - self._said)
            if not force and wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending, self._timer = self._pending, None, None
            self._said = time.monotonic()
        if pending is None or getattr(self, "_scheduler_gone", False):
            return
        message, percent = pending
        try:
            self.set_status_message(message)
            if percent is not None:
                self.set_progress_percentage(round(percent, 1))
        except Exception as exc:  # a scheduler that stopped answering never fails the node it only displays
            self._scheduler_gone = True
            logger.debug("status of %s not sent to the scheduler: %s", self.task_id, exc)

    def transfer_listener(self, verb: str):
        def listen(files: int, total_files: int, done: int, total: int) -> None:
            percent = 100.0 * done / total if total else 100.0 * files / max(1, total_files)
            self.report(f"{verb} {files}/{total_files} files, {done / 1e6:.1f}/{total / 1e6:.1f} MB", percent)
        return listen

    def on_failure(self, exception: BaseException) -> str:
        """The reason the scheduler shows (and ``dsdt run`` prints): one line, then the container's log (or,
        for a bug, the traceback)."""
        if isinstance(exception, DisdatError):
            return safe(str(exception), keep_newlines=True)
        return f"{type(exception).__name__}: {safe(exception)}\n{super().on_failure(exception)}"


class _OnRemote(_Reporting):
    remote = luigi.Parameter(description="the remote URL (s3://bucket/prefix or file:///dir)")
    remote_context = luigi.Parameter(description="the remote context")


class PushInput(_OnRemote):
    """The input bundle is complete on the remote."""

    input_uuid = luigi.Parameter()
    home = luigi.Parameter(significant=False, description="the local store the input is pushed from")
    context = luigi.Parameter(significant=False, description="the local context the input is pushed from")

    def output(self) -> RemoteBundleTarget:
        return RemoteBundleTarget(self.remote, self.remote_context, self.input_uuid)

    def run(self) -> None:
        from ..remotes.transfer import push

        ctx = Home(Path(self.home)).context(self.context)
        with open_remote(self.remote, self.remote_context) as remote:
            bundle = ctx.bundle(self.input_uuid)
            stats = push(ctx, remote, bundle, quiet=True, listener=self.transfer_listener("pushing"))
        self.report(f"pushed {bundle.name}: {stats.files} files sent, {stats.reused} already there", 100, True)
        logger.info("pushed input %s %s: %d files, %d bytes", bundle.name, bundle.uuid, stats.files, stats.bytes)


class InputOnRemote(luigi.ExternalTask):
    """With --no-push-input: the input must already be on the remote."""

    remote = luigi.Parameter()
    remote_context = luigi.Parameter()
    input_uuid = luigi.Parameter()

    def output(self) -> RemoteBundleTarget:
        return RemoteBundleTarget(self.remote, self.remote_context, self.input_uuid)


class ExecuteContainer(_OnRemote):
    """One pipe instance ran in its own container, and its run record says it succeeded."""

    node_id = luigi.Parameter(description="the node's id: its pipe, parameters, image, input and upstream nodes")
    pipe_cls = luigi.Parameter(significant=False, description="module.PipeClass run in the container")
    pipe_params = luigi.DictParameter(significant=False, description="the pipe's parameters (canonical)")
    output_bundle = luigi.Parameter(significant=False, description="the name of the node's output bundle")
    backend = luigi.Parameter(significant=False)
    plan: RunPlan = _plan_parameter()

    runs_in_thread = True   # it starts a container or follows a job: a thread of the run's process (worker.py)

    @property
    def runs_elsewhere(self) -> bool:
        """Its job was submitted with the graph and runs on the backend: it takes no --workers slot."""
        return self.plan.chains

    @classmethod
    def of(cls, plan: RunPlan, node_id: str) -> "ExecuteContainer":
        """The node's task, of the class named after its pipe (:func:`node_task_class`)."""
        spec = plan.node(node_id).spec
        return node_task_class(spec.pipe_cls)(
            remote=plan.remote_url, remote_context=plan.remote_context, node_id=node_id, pipe_cls=spec.pipe_cls,
            pipe_params=spec.params, output_bundle=spec.bundle_name, backend=plan.backend, plan=plan)

    def requires(self) -> Dict[str, luigi.Task]:
        plan = self.plan
        spec = plan.node(self.node_id).spec
        required: Dict[str, luigi.Task] = {dep: ExecuteContainer.of(plan, up) for dep, up in spec.upstream.items()}
        if plan.chains:  # the whole graph was submitted first: this node's job is waited for
            required["submitted"] = SubmitGraph.of(plan)
        elif plan.input_uuid and spec.reads_input:
            required["pipeline_input"] = input_task(plan)
        return required

    def output(self) -> RunRecordTarget:
        return RunRecordTarget(self.remote, self.remote_context, self.node_id)

    def interrupt(self, why: str) -> None:
        """Stop the node from another thread (the run was interrupted): its container or job is stopped and
        recorded, then run() raises."""
        self._stop_reason = why
        execution = getattr(self, "_execution", None)
        if execution is not None:
            execution.interrupt(why)

    def run(self) -> None:
        from ..containers.backend import get_backend
        from ..containers.request import credentials_for
        from ..runs.execute import NodeAwait, NodeExecution
        from ..runs.owner import die_with_parent, in_worker_process
        from ..runs.status import StatusWatcher
        from ..runs.store import RunStore
        from ..runs.submit import held_submission, submitted_here, verified_job

        die_with_parent()
        plan, backend = self.plan, get_backend(self.plan.backend)
        reporter = _NodeReporter(self, backend, follow_lines=not plan.chains
                                 or len(plan.nodes) <= config.get("run", "follow_logs"))
        reporter.report(f"starting node {self.node_id[:12]} ({self.pipe_cls}) on {backend.name}", force=True)
        started = time.monotonic()
        runs = RunStore(shared_remote(self.remote, self.remote_context))
        job = plan.job(self.node_id)
        if plan.chains:
            self._execution = NodeAwait(job, backend, runs, reporter, submitted_here, verified_job, held_submission)
        else:
            node = plan.node(self.node_id)
            self._execution = NodeExecution(job, backend, runs, node.image, lambda: credentials_for(
                plan.remote_url, plan.session_token_seconds, backend.long_lived_keys_allowed), reporter, node.settings)
        if getattr(self, "_stop_reason", None):
            self._execution.interrupt(self._stop_reason)
        watcher = StatusWatcher.of(self.remote, self.remote_context)
        watcher.follow(self.node_id, reporter.said)   # what the pipe says of itself, from its container
        try:
            record = self._execution.execute()
        except KeyboardInterrupt:
            reporter.ended("interrupted", time.monotonic() - started, "by its client (Ctrl-C or SIGTERM)")
            if in_worker_process():
                os._exit(130)  # its container is stopped and recorded; the parent reports the interrupt, once
            raise
        except DisdatError as exc:
            timed_out = getattr(exc, "cause", "") == "timed_out"
            first, _, below = str(exc).partition("\n")
            reporter.ended("timed out" if timed_out else "failed", time.monotonic() - started, first, below)
            raise
        finally:
            watcher.unfollow(self.node_id)
        self.output().seen_to_succeed()
        reporter.ended("succeeded", record.duration, f"{record.bundle_name} {record.output_uuid}")


_node_classes: Dict[str, type] = {}
_node_classes_lock = threading.Lock()


def node_task_class(pipe_cls: str) -> type:
    """ExecuteContainer under the name of the pipe it runs: its Luigi task family is the pipe class
    (``report.TextReport``), so luigid's task list groups a run's nodes by pipe and its graph is labelled by
    pipe. One class per pipe class, made once per process."""
    with _node_classes_lock:
        if pipe_cls not in _node_classes:
            module, _, name = pipe_cls.rpartition(".")
            _node_classes[pipe_cls] = type(name, (ExecuteContainer,), {
                "task_namespace": module, "__module__": ExecuteContainer.__module__,
                "__doc__": f"A node of {pipe_cls}: " + (ExecuteContainer.__doc__ or "")})
        return _node_classes[pipe_cls]


class _NodeReporter:
    """What a running node tells the task log and the scheduler: its job's log lines, its states (``container
    3f2a… running: <last line>``, ``job 3f2a… RUNNABLE``) and, where the backend has one, the job's page.

    Lines go to the task log in blocks, at most four a second (a pipe printing a million short lines costs a
    few hundred log records, not a million), the last one to the scheduler's status message."""

    FLUSH_EVERY = 0.25

    def __init__(self, task: "ExecuteContainer", backend, follow_lines: bool):
        self.task, self.backend, self.follow_lines = task, backend, follow_lines
        self.short, self.word = task.node_id[:12], backend.job_word
        self.last_line, self.last_state = "", "running"
        self.pipe_said: Optional[str] = None   # the pipe's own status message: shown instead of its log lines
        self.report = task.report
        self._buffer: List[str] = []
        self._lock = threading.Lock()
        self._flushed = 0.0
        self._timer: Optional[threading.Timer] = None

    def lines(self, lines: List[str]) -> None:
        self.last_line = lines[-1]
        with self._lock:
            self._buffer.extend(lines)
            wait = self.FLUSH_EVERY - (time.monotonic() - self._flushed)
            if wait > 0 and self._timer is None:  # the block goes out when the timer fires
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()
        if wait <= 0:
            self.flush()
        if self.pipe_said is None:
            self.report(f"{self.word} {self.short} {self.last_state}: {self.last_line}")

    def said(self, message: Optional[str], percent: Optional[float]) -> None:
        """The pipe's own ``set_status_message`` / ``set_progress_percentage`` (runs/status.py)."""
        if message is not None:
            self.pipe_said = message
        self.report(self.pipe_said or f"{self.word} {self.short} {self.last_state}: {self.last_line}", percent,
                    force=True)
        events.said(self.task.node_id, self.task.pipe_cls, self.pipe_said or "", percent)

    def flush(self) -> None:
        with self._lock:
            block, self._buffer, self._timer = self._buffer, [], None
            self._flushed = time.monotonic()
        if block:
            prefix = f"[{self.task.pipe_cls} {self.short}] "
            logger.info("%s", "\n".join(prefix + safe(line) for line in block))

    def state(self, state: str) -> None:
        self.flush()
        self.last_state = state
        self.report(f"{self.word} {self.short} {state}: {self.last_line}", force=True)
        if self.backend.chains_jobs or state != "running":   # a Batch job's states; a Local container's news
            events.state(self.task.node_id, self.task.pipe_cls, f"{self.word} {state}")

    def job(self, job) -> None:
        """This client has the node's container or job (started here, or one it follows): the node started."""
        if job.tracking_url:
            self.task.set_tracking_url(job.tracking_url)
        events.started(self.task.node_id, self.task.pipe_cls, f"{self.word} {job.id} on {self.backend.name}")

    def ended(self, outcome: str, seconds: Optional[float], detail: str, below: str = "") -> None:
        """The node's last word: the scheduler's final status message, and the event line."""
        self.flush()
        self.report(f"{outcome}: {detail}", 100 if outcome == "succeeded" else None, force=True)
        events.ended(self.task.node_id, self.task.pipe_cls, outcome, seconds, detail, below)


class PullOutput(_Reporting):
    """A node's output bundle is in the local context (the root's, and with --pull-intermediates the others')."""

    home = luigi.Parameter(description="the local store")
    context = luigi.Parameter(description="the local context")
    node_id = luigi.Parameter()
    output_bundle = luigi.Parameter(significant=False)
    plan: RunPlan = _plan_parameter()

    def requires(self) -> ExecuteContainer:
        return ExecuteContainer.of(self.plan, self.node_id)

    def output(self) -> LocalBundleTarget:
        return LocalBundleTarget(self.home, self.context, self.node_id)

    def run(self) -> None:
        from ..remotes.transfer import pull

        record = self.input().record()
        if record is None or record.output_uuid is None:
            raise DisdatError(f"node {self.node_id[:12]} has no output on the remote")
        ctx = Home(Path(self.home)).context(self.context)
        with open_remote(self.plan.remote_url, self.plan.remote_context) as remote:
            bundle, stats = pull(ctx, remote, record.output_uuid, quiet=True,
                                 listener=self.transfer_listener("pulling"))
        self.report(f"pulled {bundle.name} {bundle.uuid}", 100, True)
        logger.info("pulled output %s %s: %d files, %d bytes", bundle.name, bundle.uuid, stats.files, stats.bytes)


class SubmitGraph(_OnRemote):
    """Every node of the graph not yet done is a job, chained by the backend (AWS Batch). Without ``--wait`` the
    run's client then returns; with it, each node's task follows its job. Complete when every node succeeded,
    or runs in a live job of a run whose pending marker is written (a client killed while submitting left none:
    submitting again finds the live jobs, submits only the rest and writes it)."""

    run_id = luigi.Parameter(description="the root node's id")
    backend = luigi.Parameter(significant=False)
    plan: RunPlan = _plan_parameter()

    submissions: Dict[str, list] = {}   # run id -> what this process submitted (what dsdt run then prints)

    @classmethod
    def of(cls, plan: RunPlan) -> "SubmitGraph":
        return cls(remote=plan.remote_url, remote_context=plan.remote_context, run_id=plan.run_id,
                   backend=plan.backend, plan=plan)

    def requires(self) -> List[luigi.Task]:
        plan = self.plan
        if not (plan.input_uuid and any(n.spec.reads_input for n in plan.nodes)):
            return []
        return [input_task(plan)]

    def complete(self) -> bool:
        """(Once true, it stays true for this process: every node's task asks it before it starts.)"""
        if not getattr(self, "_complete", False):
            self._complete = self._check()
        return self._complete

    def _check(self) -> bool:
        from ..containers.backend import get_backend
        from ..runs.store import RunStore
        from ..runs.submit import survey

        runs = RunStore(shared_remote(self.remote, self.remote_context))
        nodes = [n.spec.node_id for n in self.plan.nodes]
        states = survey(nodes, get_backend(self.plan.backend), runs)
        if all(state.done for state in states.values()):
            return True
        try:
            marked = runs.pending(self.plan.nodes[-1].spec.bundle_name) == nodes
        except IntegrityError:
            marked = False   # a damaged marker: submitting again rewrites it
        return marked and all(state.done or state.live is not None for state in states.values())

    def run(self) -> None:
        from ..containers.backend import get_backend
        from ..containers.request import credentials_for
        from ..runs.store import RunStore
        from ..runs.submit import submit_graph

        plan = self.plan
        backend = get_backend(plan.backend)
        jobs = [(plan.job(n.spec.node_id), n.image, n.settings) for n in plan.nodes]
        self.report(f"submitting {len(jobs)} node(s) to {backend.name}", force=True)
        submitted = submit_graph(jobs, backend, RunStore(shared_remote(self.remote, self.remote_context)),
                                 lambda: credentials_for(plan.remote_url, plan.session_token_seconds,
                                                         backend.long_lived_keys_allowed),
                                 # held nodes are submitted by threads of this process, for its node tasks: not
                                 # in a process of Luigi's own worker (--workers > 1 forks one per task)
                                 hold_wide=plan.wait and multiprocessing.parent_process() is None)
        self._complete = True
        SubmitGraph.submissions[plan.run_id] = submitted
        for s in submitted:
            logger.info("node %s %s: %s%s", s.node.node_id[:12], s.node.pipe_cls, s.state,
                        f" as job {s.job_id}" if s.job_id else "")
        self.report(f"{sum(s.state == 'submitted' for s in submitted)} job(s) submitted to {backend.name}", 100, True)


def input_task(plan: RunPlan) -> luigi.Task:
    """The task that puts the run's input on the remote (or, with --no-push-input, says it is there)."""
    on_remote = dict(remote=plan.remote_url, remote_context=plan.remote_context, input_uuid=plan.input_uuid)
    return (PushInput(home=plan.home, context=plan.context, **on_remote) if plan.push_input
            else InputOnRemote(**on_remote))


class RunPipe(luigi.WrapperTask):
    """Run a pipe class and its upstream pipes, one container each: push the input, execute, pull the output."""

    input_bundle = luigi.Parameter(description="input bundle name, or - for none")
    output_bundle = luigi.Parameter()
    pipe_cls = luigi.Parameter(description="module.PipeClass under the pipe_root")
    pipe_params = luigi.Parameter(default="{}", description='JSON object, e.g. {"min_len": 3}')
    backend = luigi.Parameter(default="", description="Local or AWSBatch (default [run] backend)")
    input_tags = luigi.DictParameter(default={})
    output_tags = luigi.DictParameter(default={})
    force = luigi.BoolParameter(description="run again even if an identical run succeeded")
    wait = luigi.OptionalBoolParameter(default=None, description="AWSBatch: wait for the jobs and pull the output "
                                                                 "(default [run] wait)")
    no_push_input = luigi.BoolParameter(description="the input must already be on the remote")
    pull_intermediates = luigi.BoolParameter(description="pull every node's output, not only the root's")
    use_aws_session_token = luigi.IntParameter(default=0, description="seconds of STS credentials for the container")
    context = luigi.Parameter(default="", description="local context (default: the active one)")

    _plan: Optional[RunPlan] = None

    def plan(self) -> RunPlan:
        """Resolve names to uuids, images and node ids, with one-line errors; once per instance (--force's
        nonce too)."""
        from .plan import plan_run

        if self._plan is None:
            self._plan = plan_run(
                context=self.context or None, input_bundle=None if self.input_bundle == "-" else self.input_bundle,
                output_bundle=self.output_bundle, pipe_cls=self.pipe_cls, pipe_params=self.pipe_params,
                backend=self.backend, input_tags=dict(self.input_tags), output_tags=dict(self.output_tags),
                force=self.force, push_input=not self.no_push_input,
                session_token_seconds=self.use_aws_session_token, pull_intermediates=self.pull_intermediates,
                wait=self.wait)
        return self._plan

    def requires(self) -> List[luigi.Task]:
        plan = self.plan()
        if not plan.wait:
            return [SubmitGraph.of(plan)]
        nodes = plan.nodes if plan.pull_intermediates else (plan.root,)
        return [PullOutput(home=plan.home, context=plan.context, node_id=n.spec.node_id,
                           output_bundle=n.spec.bundle_name, plan=plan) for n in nodes]

    def output(self) -> LocalBundleTarget:
        plan = self.plan()
        return LocalBundleTarget(plan.home, plan.context, plan.run_id)
