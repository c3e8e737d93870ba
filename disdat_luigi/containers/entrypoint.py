"""``dsdt-entrypoint --job JSON``: what runs inside the container of every node.

It runs exactly one pipe, the one its :class:`~.job.NodeJob` names (an image never decides which class
runs, and never runs an upstream pipe in process): it reads the outputs of its upstream nodes from their run
records, pulls them and the input bundle from the remote, calls the pipe, pushes the output bundle, and
writes the node's run record last. On any failure it writes a ``failed`` record (never one that looks
complete), prints ``dsdt-entrypoint: error: ...`` and exits 1.

Credentials never come as arguments. Under the Local backend they come as one JSON line on stdin, and stdin
stays open for as long as the client that started the container lives: its end means the client died, so
the run is recorded ``interrupted`` and the container stops. Under AWS Batch they come in the environment
(temporary STS credentials) or from the job role.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Dict, List, Optional

from ..errors import DisdatError, RemoteError
from .job import NodeJob
from .local import STDIN_FLAG


class Interrupted(KeyboardInterrupt):
    """SIGTERM: Docker stopping the container, or the client's end of stdin closing."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsdt-entrypoint", description=__doc__.splitlines()[0])
    p.add_argument("--job", required=True, help="the NodeJob, as JSON")
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
    """What to do about an S3 server on the host's loopback that the container cannot reach."""
    text = str(exc)
    if isinstance(exc, RemoteError) and "cannot reach S3 at http://127.0.0.1" in text:
        return text + " (from inside the container: set [run] network_mode = host)"
    return text


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if os.environ.get(STDIN_FLAG):
        _take_secrets_from_stdin()
    try:
        job = NodeJob.from_json(args.job)
    except DisdatError as exc:
        print(f"dsdt-entrypoint: error: {exc}", file=sys.stderr)
        return 2
    from .. import config
    from ..remotes import open_remote
    from ..remotes.runs import RunStore
    from .execute import new_record

    config.validate()
    with open_remote(job.remote_url, job.remote_context) as remote:
        runs = RunStore(remote)

        def finish(status: str, error: Optional[str] = None, **changes) -> None:
            """The final record of this attempt (never over a newer attempt or a record already final)."""
            record = runs.update_running(job.node.node_id, lambda r: r.finished(status, error, **changes),
                                         attempt=job.attempt)
            if record is None or record.attempt != job.attempt or record.status != status:
                print(f"dsdt-entrypoint: the record of node {job.node.node_id} is no longer this attempt's "
                      f"({job.attempt}): left as it is", file=sys.stderr)

        try:
            if runs.current(job.node.node_id) is None:
                runs.write(new_record(job, job.backend, job.attempt))
            output, inputs = _run(job, remote, runs)
        except Interrupted as exc:
            with contextlib.suppress(Exception):
                finish("interrupted", str(exc))
            print(f"dsdt-entrypoint: {exc}", file=sys.stderr)
            return 130
        except Exception as exc:
            if isinstance(exc, DisdatError):
                message = _hint(exc)
            else:  # the pipe raised (or a bug): its traceback goes to the log, its one line to the record
                traceback.print_exc()
                message = f"{job.node.pipe_cls} failed: {type(exc).__name__}: {exc}"
            message = message.splitlines()[0] if message.strip() else type(exc).__name__
            with contextlib.suppress(Exception):  # an unreachable remote takes no record either: the line says why
                finish("failed", message)
            print(f"dsdt-entrypoint: error: {message}", file=sys.stderr)
            return 1
        finish("succeeded", output_uuid=output, inputs=inputs)
        return 0


def _run(job: NodeJob, remote, runs) -> tuple:
    """Pull the inputs, run the pipe, push its output: (output uuid, {dependency: uuid read})."""
    from ..config import pipe_root
    from ..pipe.loader import from_canonical, load_pipe_class
    from ..pipe.produce import produce
    from ..remotes.transfer import pull, push
    from ..store.context import RemoteBinding
    from ..store.home import Home

    home = Home(Path(os.environ.get("DISDAT_HOME", "/tmp/disdat")))
    home.init()
    home.create_context("run")
    ctx = home.context("run")
    ctx.bind_remote(RemoteBinding(job.remote_context, job.remote_url))
    node = job.node
    cls = load_pipe_class(node.pipe_cls, pipe_root())
    task = from_canonical(cls, node.params)
    upstream = {}
    for dep, up_id in node.upstream.items():
        up = runs.record(up_id)
        if up is None or up.status != "succeeded":
            raise DisdatError(f"upstream {dep} (node {up_id[:12]}) has not succeeded: "
                              f"{'no record' if up is None else up.status}")
        upstream[dep], stats = pull(ctx, remote, up.output_uuid, quiet=True)
        print(f"dsdt-entrypoint: pulled {dep}: {upstream[dep].name} {up.output_uuid} ({stats.files} files)",
              flush=True)
    input_bundle = None
    if job.input_uuid and node.reads_input:
        input_bundle, stats = pull(ctx, remote, job.input_uuid, quiet=True)
        print(f"dsdt-entrypoint: pulled input {input_bundle.name} {input_bundle.uuid} ({stats.files} files)",
              flush=True)
    bundle = produce(ctx, task, name=node.bundle_name, tags=node.tags, upstream=upstream, input_bundle=input_bundle,
                     lineage={"processing_id": node.node_id, "run_id": job.run_id, "image_id": job.image},
                     commit=True)
    stats = push(ctx, remote, bundle, quiet=True)
    print(f"dsdt-entrypoint: pushed {bundle.name} {bundle.uuid} ({stats.files} files, {stats.bytes} bytes)",
          flush=True)
    inputs: Dict[str, str] = {dep: b.uuid for dep, b in upstream.items()}
    if input_bundle is not None:
        inputs["pipeline_input"] = input_bundle.uuid
    return bundle.uuid, inputs


if __name__ == "__main__":
    sys.exit(main())
