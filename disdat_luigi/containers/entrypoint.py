"""``dsdt-entrypoint``: what runs inside the container of every run.

It pulls the input bundle from the remote, runs the pipe class it is given explicitly (an image never
decides which class runs), commits and tags the output bundle, pushes every bundle the run made, and
writes the run record last. On any failure it writes a ``failed`` run record (never one that looks
complete), prints one line ``dsdt-entrypoint: error: ...`` to stderr and exits non-zero.

Everything but credentials comes as arguments; credentials come in the environment (never as arguments,
which ``docker inspect`` and the Batch console show).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

from ..errors import DisdatError
from ..store.manifest import now_utc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsdt-entrypoint", description=__doc__.splitlines()[0])
    p.add_argument("--remote-url", required=True)
    p.add_argument("--remote-context", required=True)
    p.add_argument("--input-uuid", default="")
    p.add_argument("--output-bundle", required=True)
    p.add_argument("--output-tags", default="{}", help="JSON object")
    p.add_argument("--pipe-cls", required=True)
    p.add_argument("--pipe-params", default="{}", help="JSON object of Luigi-serialized values")
    p.add_argument("--run-id", required=True)
    p.add_argument("--image-id", default="")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    from ..pipe.apply import apply
    from ..config import pipe_root
    from ..store.context import RemoteBinding
    from ..store.home import Home
    from ..pipe.loader import code_version, instantiate_params, load_pipe_class
    from ..remotes import remote_of
    from ..remotes.remote import SUCCEEDED
    from ..remotes.transfer import pull, push

    started = now_utc()
    record = {"run_id": args.run_id, "pipe_cls": args.pipe_cls, "pipe_params": json.loads(args.pipe_params),
              "input_uuid": args.input_uuid or None, "output_bundle": args.output_bundle,
              "image_id": args.image_id or None, "started": started, "host": os.uname().nodename}
    home = Home(Path(os.environ.get("DISDAT_HOME", "/tmp/disdat")))
    home.init()
    home.create_context("run")
    ctx = home.context("run")
    ctx.bind_remote(RemoteBinding(args.remote_context, args.remote_url))
    with remote_of(ctx) as remote:
        try:
            root = pipe_root()
            cls = load_pipe_class(args.pipe_cls, root)
            params = instantiate_params(cls, args.pipe_params)
            input_bundle = None
            if args.input_uuid:
                input_bundle, stats = pull(ctx, remote, args.input_uuid, quiet=True)
                print(f"dsdt-entrypoint: pulled input {input_bundle.name} {input_bundle.uuid} ({stats.files} files)")
            result = apply(ctx, cls, params, input_bundle, args.output_bundle, json.loads(args.output_tags),
                           code_version=code_version(root), commit=True, run_id=args.run_id,
                           image_id=args.image_id or None)
            for b in result.produced:  # upstream bundles first, the output last
                stats = push(ctx, remote, b, quiet=True)
                print(f"dsdt-entrypoint: pushed {b.name} {b.uuid} ({stats.files} files, {stats.bytes} bytes)")
            record.update(status=SUCCEEDED, output_uuid=result.bundle.uuid,
                          bundles={b.name: b.uuid for b in result.produced}, finished=now_utc())
            remote.write_run_record(args.run_id, record)
            return 0
        except Exception as exc:
            if not isinstance(exc, DisdatError):  # a bug, not a user error: keep its traceback in the log
                traceback.print_exc()
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            record.update(status="failed", error=message, finished=now_utc())
            try:
                remote.write_run_record(args.run_id, record)
            finally:
                print(f"dsdt-entrypoint: error: {message}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
