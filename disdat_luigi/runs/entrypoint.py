"""``dsdt-entrypoint``: what runs inside the container of every node.

It runs exactly one pipe, the one its :class:`~disdat_luigi.containers.job.NodeJob` names (an image never
decides which class runs, and never runs an upstream pipe in process): it reads the outputs of its upstream
nodes from their run records, pulls them and the input bundle from the remote, calls the pipe, pushes the
output bundle, stores its own log next to the record, and writes the node's run record last. On any failure
it writes a ``failed`` record (never one that looks complete), prints ``dsdt-entrypoint: error: ...`` and
exits 1.

The job comes as ``--job JSON``, or, when it is too large for a command line or a Batch request (a join of
hundreds of upstream nodes), as ``--job-at URL CONTEXT SHA256``: a content-addressed copy on the remote,
checked against its hash. ``--barrier`` does nothing and exits 0: AWS Batch's barrier jobs (fan-ins wider
than Batch allows) run it.

Everything the pipe (and any process it starts) writes to stdout and stderr still goes there, so Docker
and CloudWatch show it as it comes, and its last MAX_LOG bytes are kept to be stored on the remote: a node's
log is there whatever backend ran it, and no client has to read it back from the engine or CloudWatch.

Credentials never come as arguments. Under the Local backend they come as one JSON line on stdin, and stdin
stays open for as long as the client that started the container lives: its end means the client died, so
the run is recorded ``interrupted`` and the container stops. Under AWS Batch they come in the environment
(temporary STS credentials) or from the job role.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Deque, Dict, List, Optional

from ..containers.job import NodeJob
from ..containers.local import STDIN_FLAG, UMASK
from ..containers.backend import INFRASTRUCTURE, INTERRUPTED, USER_ERROR
from ..errors import DiskFull, DisdatError, RemoteError
from .record import ERROR_PREFIX, FAILED, RUNNING
from .store import MAX_LOG

UPSTREAM_PULLS = 4      # upstream outputs pulled at once (each pull has its own pool of requests)


class Interrupted(KeyboardInterrupt):
    """SIGTERM: Docker stopping the container, or the client's end of stdin closing."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsdt-entrypoint", description=__doc__.splitlines()[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--job", help="the NodeJob, as JSON")
    what.add_argument("--job-at", nargs=3, metavar=("URL", "CONTEXT", "SHA256"),
                      help="the NodeJob, stored on the remote URL (remote context CONTEXT) under its sha256")
    what.add_argument("--barrier", action="store_true", help="do nothing: a job that only waits for others")
    return p


def _take_secrets_from_stdin() -> None:
    """The first stdin line holds the credentials; the end of stdin means the client is gone."""
    line = sys.stdin.readline()
    secrets = json.loads(line) if line.strip() else {}
    os.environ.update({str(k): str(v) for k, v in secrets.items()})

    def watch() -> None:
        sys.stdin.read()  # returns at EOF: the client's attachment closed
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="client-watch").start()


def _on_sigterm(signum, frame) -> None:
    raise Interrupted("stopped: the client that started this run is gone, or the container was stopped")


def _hint(exc: Exception) -> str:
    """The error line, with what to do where the host's advice would be wrong inside a container: an S3
    server on the host's loopback, or no credentials in an AWS Batch job (a job has no keys to set)."""
    text = str(exc)
    if isinstance(exc, RemoteError) and "cannot reach S3 at http://127.0.0.1" in text:
        return text + " (from inside the container: set [run] network_mode = host)"
    if isinstance(exc, RemoteError) and text.startswith("no AWS credentials") and os.environ.get("AWS_BATCH_JOB_ID"):
        return ("this AWS Batch job has no AWS credentials for the S3 remote: give its jobs a role that may use "
                "the bucket ([run] job_role_arn), or run with --use-aws-session-token SECONDS, or give the compute "
                "environment's instance role access to the bucket")
    return text


class LogTee:
    """stdout and stderr (file descriptors 1 and 2, so child processes too) through pipes: every byte goes on
    to where it went before, and the last ``keep`` bytes of both are kept, in the order they came, until
    :meth:`stop` puts the file descriptors back and returns them."""

    def __init__(self, keep: int = MAX_LOG):
        self.keep = keep
        self._kept: Deque[bytes] = collections.deque()
        self._size = 0
        self._lock = threading.Lock()
        self._originals: List[int] = []
        self._pumps: List[threading.Thread] = []
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            original = os.dup(fd)
            read, write = os.pipe()
            os.dup2(write, fd)
            os.close(write)
            self._originals.append(original)
            pump = threading.Thread(target=self._pump, args=(read, original), daemon=True, name=f"tee-{fd}")
            pump.start()
            self._pumps.append(pump)

    def _pump(self, read: int, original: int) -> None:
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(1 << 16)
                if not chunk:
                    return
                view = memoryview(chunk)
                while view:
                    view = view[os.write(original, view):]
                with self._lock:
                    self._kept.append(chunk)
                    self._size += len(chunk)
                    while self._size - len(self._kept[0]) >= self.keep:
                        self._size -= len(self._kept.popleft())

    def stop(self) -> bytes:
        """Put stdout and stderr back, and return what went through them (its last ``keep`` bytes). A child
        process that still holds a pipe (left running in the background) is not waited for long."""
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), self._originals):
            os.dup2(original, fd)   # closes our end of the pipe: its pump reads to the end, then stops
        for pump in self._pumps:
            pump.join(2)
        with self._lock:
            data = b"".join(self._kept)
        if len(data) > self.keep:
            return b"(the log's first bytes are not kept)\n" + data[-self.keep:]
        return data


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.barrier:
        return 0
    signal.signal(signal.SIGTERM, _on_sigterm)
    if os.environ.get(UMASK, "").isdigit():
        os.umask(int(os.environ[UMASK], 8) & 0o777)   # the client's, for a file:// remote shared with others
    if os.environ.get(STDIN_FLAG):
        _take_secrets_from_stdin()
    from .. import config
    from ..remotes import open_remote
    from .owner import new_record
    from .store import RunStore

    try:
        config.validate()
        job = NodeJob.from_json(args.job) if args.job else _stored_job(*args.job_at)
    except DisdatError as exc:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
        return 2
    tee = LogTee()
    with open_remote(job.remote_url, job.remote_context) as remote:
        runs = RunStore(remote)
        job = _this_attempt(job, runs)
        os.environ["DISDAT_ATTEMPT"] = str(job.attempt)   # what the pipe may read: 1, 2, ...

        def finish(status: str, error: Optional[str] = None, **changes) -> None:
            """The log, then the final record of this attempt (never over a newer attempt or a record already
            final)."""
            with contextlib.suppress(Exception):
                runs.write_log(job.node.node_id, tee.stop())
            record = runs.update_running(job.node.node_id, lambda r: r.finished(status, error, **changes),
                                         attempt=job.attempt)
            if record is None:  # nobody wrote it running (or it was removed): this attempt's, from nothing
                runs.write(new_record(job, job.backend, job.attempt).finished(status, error, **changes))
            elif record.attempt != job.attempt or record.status != status:
                print(f"dsdt-entrypoint: the record of node {job.node.node_id} is no longer this attempt's "
                      f"({job.attempt}): left as it is", file=sys.stderr)

        try:
            output, inputs = _run(job, remote, runs)
        except Interrupted as exc:
            print(f"dsdt-entrypoint: {exc}", file=sys.stderr)
            with contextlib.suppress(Exception):
                finish("interrupted", str(exc), exit_code=130, cause=INTERRUPTED)
            return 130
        except Exception as exc:
            if isinstance(exc, DisdatError):
                message = _hint(exc)
            else:  # the pipe raised (or a bug): its traceback goes to the log, its one line to the record
                traceback.print_exc()
                message = f"{job.node.pipe_cls} failed: {type(exc).__name__}: {exc}"
            message = message.splitlines()[0] if message.strip() else type(exc).__name__
            print(f"{ERROR_PREFIX}{message}", file=sys.stderr)
            cause = INFRASTRUCTURE if isinstance(exc, (RemoteError, DiskFull)) else USER_ERROR
            with contextlib.suppress(Exception):  # an unreachable remote takes no record either: the line says why
                finish("failed", message, exit_code=1, cause=cause)
            return 1
        finish("succeeded", output_uuid=output, inputs=inputs)
        return 0


def _this_attempt(job: NodeJob, runs) -> NodeJob:
    """The job as the attempt it is: on AWS Batch, a retry of the same submission (``AWS_BATCH_JOB_ATTEMPT``
    2, 3, ...) is a new attempt of the node, after the one before it is kept in the node's history (recorded
    failed by the container itself, or, when it ended without a word, here)."""
    from dataclasses import replace

    from .owner import new_record

    retry = os.environ.get("AWS_BATCH_JOB_ATTEMPT", "1")
    attempt = job.attempt + (int(retry) - 1 if retry.isdigit() and int(retry) > 1 else 0)
    if attempt == job.attempt:
        return job
    record, version = runs.read(job.node.node_id)
    if record is not None and record.attempt < attempt:
        if record.status == RUNNING:
            record = record.finished(FAILED, "its container stopped without a word: AWS Batch tried it again",
                                     cause=INFRASTRUCTURE)
        runs.archive(record)
        runs.write_if(new_record(replace(job, attempt=attempt), job.backend, attempt, record.job_id,
                                 record.detached), version)
    return replace(job, attempt=attempt)


def _stored_job(url: str, remote_context: str, sha256: str) -> NodeJob:
    """The job stored on the remote under its hash (see RunStore.job_arguments), checked against it."""
    from ..remotes import open_remote
    from .store import RunStore

    with open_remote(url, remote_context) as remote:
        text = RunStore(remote).stored_job(sha256)
    job = NodeJob.from_json(text)
    if (job.remote_url, job.remote_context) != (url, remote_context):
        raise DisdatError(f"the job stored as {sha256} names another remote than the one it was read from")
    return job


def _run(job: NodeJob, remote, runs) -> tuple:
    """Pull the inputs, run the pipe, push its output: (output uuid, {dependency: uuid read})."""
    from ..config import pipe_root
    from ..pipe.loader import from_canonical, load_pipe_class
    from ..pipe.produce import produce
    from ..remotes.transfer import pull, push
    from ..store.context import RemoteBinding
    from ..store.home import Home
    from .status import PipeStatus
    from .store import in_parallel

    home = Home(Path(os.environ.get("DISDAT_HOME", "/tmp/disdat")))
    home.init()
    home.create_context("run")
    ctx = home.context("run")
    ctx.bind_remote(RemoteBinding(job.remote_context, job.remote_url))
    node = job.node
    cls = load_pipe_class(node.pipe_cls, pipe_root())
    task = from_canonical(cls, node.params)
    records = dict(zip(node.upstream, in_parallel(runs.record, node.upstream.values())))
    for dep, up in records.items():
        if up is None or up.status != "succeeded":
            raise DisdatError(f"upstream {dep} (node {node.upstream[dep][:12]}) has not succeeded: "
                              f"{'no record' if up is None else up.status}")

    def pull_upstream(dep: str):  # each pull with a context of its own: an index connection is one thread's
        bundle, stats = pull(home.context("run"), remote, records[dep].output_uuid, quiet=True)
        print(f"dsdt-entrypoint: pulled {dep}: {bundle.name} {bundle.uuid} ({stats.files} files)", flush=True)
        return bundle

    upstream = dict(zip(records, in_parallel(pull_upstream, records, UPSTREAM_PULLS)))
    input_bundle = None
    if job.input_uuid and node.reads_input:
        input_bundle, stats = pull(ctx, remote, job.input_uuid, quiet=True)
        print(f"dsdt-entrypoint: pulled input {input_bundle.name} {input_bundle.uuid} ({stats.files} files)",
              flush=True)
    status = PipeStatus(runs, node.node_id, job.attempt)
    status.attach(task)   # the pipe's set_status_message and set_progress_percentage reach its client
    try:
        bundle = produce(ctx, task, name=node.bundle_name, tags=node.tags, upstream=upstream,
                         input_bundle=input_bundle, commit=True,
                         lineage={"processing_id": node.node_id, "run_id": job.run_id, "image_id": job.image})
    finally:
        status.close()
    stats = push(ctx, remote, bundle, quiet=True)
    print(f"dsdt-entrypoint: pushed {bundle.name} {bundle.uuid} ({stats.files} files, {stats.bytes} bytes)",
          flush=True)
    inputs: Dict[str, str] = {dep: b.uuid for dep, b in upstream.items()}
    if input_bundle is not None:
        inputs["pipeline_input"] = input_bundle.uuid
    return bundle.uuid, inputs


def console() -> int:
    """The ``dsdt-entrypoint`` console script."""
    from ..console import console as ending_fast

    return ending_fast(main)


if __name__ == "__main__":
    sys.exit(console())
