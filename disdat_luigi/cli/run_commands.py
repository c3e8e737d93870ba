"""Pipe commands: apply (in-process), dockerize (build the image), run (in a container, as a Luigi chain)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

import sys

from .. import config
from ..containers.backend import BACKENDS
from ..display import safe
from ..runs.record import STATUSES
from ..errors import DisdatError
from ..store.home import Home
from ..store.manifest import parse_tags



OUTPUT_HELP = "name of the output bundle, or - for the name the pipe sets (set_bundle_name), else its class name"


def _pipe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-it", "--input-tag", action="append", default=[], metavar="KEY:VALUE",
                   help="use the latest input version with this tag")
    p.add_argument("-ot", "--output-tag", action="append", default=[], metavar="KEY:VALUE",
                   help="tag the output bundle")
    p.add_argument("--force", action="store_true", help="run again even if an identical run already happened")
    p.add_argument("input_bundle", help="input bundle name, or - for none")
    p.add_argument("output_bundle", help=OUTPUT_HELP)
    p.add_argument("pipe_cls", help="module.submodule.PipeClass under the pipe_root")
    p.add_argument("pipe_args", nargs=argparse.REMAINDER,
                   help="the pipe's parameters in Luigi's form: --min-len 3 (after the pipe class)")


def register(sub: Any) -> None:
    p = sub.add_parser("apply", help="run a pipe class in this process (no container)")
    _pipe_arguments(p)
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("dockerize", help="build the image that runs the pipe classes of a pipe_root")
    p.add_argument("--base-image", help="base image (default [dockerize] base_image, else python:3.11-slim)")
    p.add_argument("--push", action="store_true", help="push the image to [dockerize] registry")
    p.add_argument("pipe_root", type=Path)
    p.add_argument("module", nargs="?", help="module.submodule to name the image after (default: every module "
                                             "with pipe classes)")
    p.set_defaults(func=cmd_dockerize)

    p = sub.add_parser("run", help="run a pipe class and its upstream pipes, one container each: push the input, "
                                   "execute, pull the output")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="where the containers run ([run] backend, "
                                                                      "default Local)")
    p.add_argument("--no-push-input", action="store_true",
                   help="do not push the input; it must already be on the remote")
    p.add_argument("--use-aws-session-token", type=int, metavar="AWS_SESSION_TOKEN_DURATION", default=0,
                   help="give the containers only temporary STS credentials valid this many seconds")
    p.add_argument("--workers", type=int, metavar="N", help="run up to N independent nodes at once ([run] workers, "
                                                            "default 1)")
    p.add_argument("--scheduler-url", metavar="URL", help="run under this luigid, e.g. http://127.0.0.1:8082 "
                                                          "(default: [run] local_scheduler)")
    p.add_argument("--pull-intermediates", action="store_true",
                   help="also pull the outputs of the upstream pipes (only the requested output by default)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print Luigi's own log too (the scheduler's and workers' lines, every container's output)")
    p.add_argument("--wait", action="store_true", default=None,
                   help="AWSBatch: wait for the jobs, showing their state and logs, then pull the output (default "
                        "[run] wait; without it the jobs are submitted and `dsdt pull OUTPUT` fetches it later)")
    _pipe_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", help="list the runs recorded on the remote, newest first (one line per attempt of "
                                    "a node)")
    p.add_argument("name", nargs="?", metavar="NAME", help="only runs whose output bundle matches (a glob)")
    p.add_argument("--status", choices=STATUSES, help="only attempts with this status")
    p.add_argument("--pipe", metavar="GLOB", help="only runs of these pipe classes, e.g. 'report.*'")
    p.add_argument("--run", metavar="RUN_ID", help="only the nodes the run RUN_ID (its id, or a prefix) ran")
    p.add_argument("-n", type=int, default=20, metavar="N", help="at most N lines (default 20; 0: all)")
    p.add_argument("--clean", action="store_true",
                   help="stop and remove the containers of runs whose client died, and record them interrupted")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("report", help="write one HTML page about the run that made a bundle: its graph by pipe "
                                      "and status, a timeline, and each node's attempts, image, output and data")
    p.add_argument("name", metavar="NAME", help="a bundle's name (its latest version) or uuid")
    p.add_argument("-o", "--output", metavar="FILE", type=Path,
                   help="where to write it (default NAME-report.html here; - for stdout)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("logs", help="print the container log of a run (a unique prefix of its id is enough)")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--attempt", type=int, metavar="N", help="the log of attempt N (default: the latest)")
    p.set_defaults(func=cmd_logs)


def _name(given: str) -> Optional[str]:
    """``-``: none given."""
    return None if given == "-" else given


def cmd_apply(args: argparse.Namespace) -> None:
    from ..pipe.apply import apply
    from ..pipe.loader import code_version, load_pipe_class, parse_pipe_args

    ctx = Home().context()
    root = config.pipe_root()
    cls = load_pipe_class(args.pipe_cls, root)
    params = parse_pipe_args(cls, args.pipe_args)
    name = _name(args.input_bundle)
    input_bundle = ctx.latest(name, parse_tags(args.input_tag)) if name else None
    result = apply(ctx, cls, params, input_bundle, _name(args.output_bundle), parse_tags(args.output_tag),
                   code_version=code_version(root), force=args.force)
    b = result.bundle
    state = "up to date" if result.up_to_date else f"made {len(result.produced)} bundle(s)"
    print(f"{b.name} {b.uuid}: {state} (`dsdt cat {b.name}`; `dsdt commit {b.name}` to share it)")


def cmd_dockerize(args: argparse.Namespace) -> None:
    from ..containers.dockerize import dockerize

    for line in dockerize(args.pipe_root.resolve(), args.module, args.base_image, push=args.push):
        print(line)


def cmd_run(args: argparse.Namespace) -> int:
    from ..chain.run import RunOptions, output_bundle, run, submitted_jobs

    if args.use_aws_session_token < 0:
        raise DisdatError("--use-aws-session-token takes a number of seconds")
    if args.workers is not None and not 1 <= args.workers <= 64:
        raise DisdatError("--workers takes a number from 1 to 64")
    plan = run(RunOptions(
        input_bundle=_name(args.input_bundle), output_bundle=args.output_bundle, pipe_cls=args.pipe_cls,
        pipe_args=args.pipe_args, backend=args.backend or "", input_tags=parse_tags(args.input_tag),
        output_tags=parse_tags(args.output_tag), force=args.force, push_input=not args.no_push_input,
        session_token_seconds=args.use_aws_session_token, pull_intermediates=args.pull_intermediates,
        workers=args.workers, scheduler_url=args.scheduler_url, wait=args.wait, verbose=args.verbose))
    if not plan.wait:
        jobs = submitted_jobs(plan)
        for node_id, pipe_cls, job_id, status in jobs:
            print(f"node {node_id[:12]} {pipe_cls}: " + (f"job {job_id} ({status})" if job_id else status))
        name = plan.root.spec.bundle_name
        if any(status == "running" for *_, status in jobs):
            print(f"submitted to {plan.backend}; fetch the output when the jobs finish: dsdt pull {name}")
        else:
            print(f"every node is done already: dsdt pull {name}")
        return 0
    bundle = output_bundle(plan)
    print(f"{bundle.name} {bundle.uuid} is in context {plan.context} (`dsdt cat {bundle.name}`)")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ..runs.history import RunFilter, clean, list_runs

    ctx = Home().context()
    if args.clean:
        for line in clean(ctx):
            print(safe(line))
        return 0
    which = RunFilter(name=args.name, status=args.status, pipe=args.pipe, run=args.run)
    for line in list_runs(ctx, which, args.n):
        print(line)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..fsutil import atomic_write
    from ..report import report_page

    page, about = report_page(Home().context(), args.name)
    if str(args.output) == "-":
        sys.stdout.write(page)
        return 0
    to = args.output or Path(f"{args.name}-report.html")
    try:
        atomic_write(to, page.encode())
    except OSError as exc:
        raise DisdatError(f"cannot write the report to {to}: {exc.strerror or exc}") from None
    print(safe(f"{about}: {to}"))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from ..runs.history import log_of

    if args.attempt is not None and args.attempt < 1:
        raise DisdatError("--attempt takes an attempt number: 1, 2, ...")
    sys.stdout.write(log_of(Home().context(), args.run_id, args.attempt))
    return 0
