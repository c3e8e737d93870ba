"""The run chain as Luigi tasks::

    PushInput -> ExecuteContainer -> PullOutput        (RunPipe wraps the chain)

Each step is complete when its target exists: the input's manifest on the remote, the run record with
status ``succeeded``, the run's output bundle in the local context. So an identical run is a no-op, the
central scheduler shows every step, and ``luigi --module disdat_luigi RunPipe ...`` works like ``dsdt run``.
Credentials are never task parameters: the container gets them from the environment at execution time.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Optional

import luigi
from luigi.util import inherits

from ..errors import ContainerFailed, DisdatError
from ..store.home import Home
from .targets import LocalRunOutputTarget, RemoteBundleTarget, RunRecordTarget

logger = logging.getLogger("luigi-interface")


class _UserErrorsWithoutTraceback(logging.Filter):
    """A DisdatError in a task is a user error with a one-line message: log the line, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DisdatError):
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = ()
            record.exc_info = None
        return True


logger.addFilter(_UserErrorsWithoutTraceback())


def _context(name: str):
    return Home().context(name)


class PushInput(luigi.Task):
    """The input bundle is complete on the remote."""

    context = luigi.Parameter(description="local context")
    input_uuid = luigi.Parameter()

    def output(self) -> RemoteBundleTarget:
        return RemoteBundleTarget(self.context, self.input_uuid)

    def run(self) -> None:
        from ..remotes import remote_of
        from ..remotes.transfer import push

        ctx = _context(self.context)
        with remote_of(ctx) as remote:
            bundle = ctx.bundle(self.input_uuid)
            stats = push(ctx, remote, bundle, quiet=True)
        logger.info("pushed input %s %s: %d files, %d bytes", bundle.name, bundle.uuid, stats.files, stats.bytes)


class InputOnRemote(luigi.ExternalTask):
    """With --no-push-input: the input must already be on the remote."""

    context = luigi.Parameter()
    input_uuid = luigi.Parameter()

    def output(self) -> RemoteBundleTarget:
        return RemoteBundleTarget(self.context, self.input_uuid)


class ExecuteContainer(luigi.Task):
    """The pipe ran in a container and its run record says it succeeded."""

    context = luigi.Parameter(description="local context (its remote is where the data goes)")
    pipe_cls = luigi.Parameter(description="module.PipeClass run in the container")
    pipe_params = luigi.Parameter(default="{}", description="the pipe's parameters (canonical JSON)")
    input_uuid = luigi.Parameter(default="", description="input bundle uuid ('' for none)")
    output_bundle = luigi.Parameter()
    output_tags = luigi.DictParameter(default={})
    image = luigi.Parameter(description="image id")
    backend = luigi.Parameter(default="Local")
    run_id = luigi.Parameter()
    push_input = luigi.BoolParameter(default=True, significant=False)
    session_token_seconds = luigi.IntParameter(default=0, significant=False)

    def requires(self):
        if not self.input_uuid:
            return []
        task = PushInput if self.push_input else InputOnRemote
        return task(context=self.context, input_uuid=self.input_uuid)

    def output(self) -> RunRecordTarget:
        return RunRecordTarget(self.context, self.run_id)

    def run(self) -> None:
        from ..containers.backend import get_backend
        from ..containers.launch import container_spec

        spec = container_spec(binding=_context(self.context).require_remote(), image=self.image,
                              pipe_cls=self.pipe_cls, pipe_params=self.pipe_params, input_uuid=self.input_uuid,
                              output_bundle=self.output_bundle, output_tags=json.dumps(dict(self.output_tags)),
                              run_id=self.run_id, session_token_seconds=self.session_token_seconds)
        backend = get_backend(self.backend)
        self.set_status_message(f"starting {self.pipe_cls} ({backend.name})")
        try:
            backend.execute(spec, self._on_line)
        except ContainerFailed as exc:
            record = self.output().record() or {}
            if record.get("status") == "failed":  # the entrypoint said why: lead with that
                raise ContainerFailed(f"{record.get('error')} ({exc.args[0]})", exc.logs, exc.exit_code) from None
            raise
        record = self.output().record() or {}
        if record.get("status") != "succeeded":
            raise ContainerFailed(f"the container of run {self.run_id} exited 0 but its run record says "
                                  f"{record.get('status', 'nothing')}: {record.get('error', '')}")

    _last_status = 0.0

    def _on_line(self, line: str) -> None:
        logger.info("[%s] %s", self.pipe_cls, line)
        now = time.monotonic()
        if now - self._last_status >= 1.0:  # the scheduler does not need every line
            self._last_status = now
            self.set_status_message(f"{self.pipe_cls}: {line[:200]}")


@inherits(ExecuteContainer)
class PullOutput(luigi.Task):
    """The run's output bundle is in the local context."""

    def requires(self) -> ExecuteContainer:
        return self.clone(ExecuteContainer)

    def output(self) -> LocalRunOutputTarget:
        return LocalRunOutputTarget(self.context, self.run_id)

    def run(self) -> None:
        from ..remotes import remote_of
        from ..remotes.transfer import pull

        record = self.input().record() or {}
        ctx = _context(self.context)
        with remote_of(ctx) as remote:
            bundle, stats = pull(ctx, remote, record["output_uuid"], quiet=True)
        logger.info("pulled output %s %s: %d files, %d bytes", bundle.name, bundle.uuid, stats.files, stats.bytes)


class RunPipe(luigi.WrapperTask):
    """Run a pipe class in a container: push the input, execute, pull the output (DESIGN.md's chain)."""

    input_bundle = luigi.Parameter(description="input bundle name, or - for none")
    output_bundle = luigi.Parameter()
    pipe_cls = luigi.Parameter(description="module.PipeClass under the pipe_root")
    pipe_params = luigi.Parameter(default="{}", description='JSON object, e.g. {"min_len": 3}')
    backend = luigi.Parameter(default="", description="Local or AWSBatch (default [run] backend)")
    input_tags = luigi.DictParameter(default={})
    output_tags = luigi.DictParameter(default={})
    force = luigi.BoolParameter(description="run again even if an identical run succeeded")
    no_push_input = luigi.BoolParameter(description="the input must already be on the remote")
    use_aws_session_token = luigi.IntParameter(default=0, description="seconds of STS credentials for the container")
    context = luigi.Parameter(default="", description="local context (default: the active one)")

    _plan = None

    def plan(self):
        """Resolve names to uuids and images, with one-line errors; once per instance (--force's nonce too)."""
        from .run import plan_run

        if self._plan is None:
            self._plan = plan_run(
                context=self.context or None, input_bundle=None if self.input_bundle == "-" else self.input_bundle,
                output_bundle=self.output_bundle, pipe_cls=self.pipe_cls, pipe_params=self.pipe_params,
                backend=self.backend, input_tags=dict(self.input_tags), output_tags=dict(self.output_tags),
                force=self.force, push_input=not self.no_push_input,
                session_token_seconds=self.use_aws_session_token)
        return self._plan

    def requires(self) -> PullOutput:
        return PullOutput(**self.plan().task_params())

    def output(self) -> Optional[LocalRunOutputTarget]:
        return self.requires().output()
