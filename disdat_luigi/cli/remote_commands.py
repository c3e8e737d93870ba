"""Sharing commands: remote, push, pull."""
from __future__ import annotations

import argparse
from typing import Any, List

from ..store.context import Bundle, Context, RemoteBinding
from ..errors import DisdatError
from ..store.home import Home
from ..store.manifest import check_name
from ..remotes import Remote, open_store, remote_of
from ..remotes.transfer import TransferStats, pull, push
from .data_commands import selected_bundle


def register(sub: Any) -> None:
    p = sub.add_parser("remote", help="bind the active context to a remote context (no arguments: show it)")
    p.add_argument("remote_context", nargs="?", metavar="REMOTE_CONTEXT")
    p.add_argument("url", nargs="?", metavar="URL", help="s3://bucket/prefix or file:///dir")
    p.set_defaults(func=cmd_remote)

    for verb, what in (("push", "push committed bundles to the remote"),
                       ("pull", "pull bundles from the remote into the active context")):
        p = sub.add_parser(verb, help=f"{what} (NAME: its latest version; -u UUID; --all)")
        p.add_argument("name", nargs="?", metavar="NAME")
        p.add_argument("-u", "--uuid", metavar="UUID")
        p.add_argument("--all", action="store_true", help="every bundle version")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=cmd_push if verb == "push" else cmd_pull)


def _one_selector(args: argparse.Namespace) -> None:
    if sum(map(bool, (args.name, args.uuid, args.all))) != 1:
        raise DisdatError("give a bundle NAME, -u UUID or --all (exactly one)")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _report(verb: str, b: Bundle, stats: TransferStats, where: str) -> None:
    print(f"{verb} {b.name} {b.uuid}: {stats.files} files, {_mb(stats.bytes)} moved, "
          f"{stats.reused} already {where}")


def cmd_remote(args: argparse.Namespace) -> None:
    ctx = Home().context()
    if not args.remote_context and not args.url:
        binding = ctx.remote
        print(f"{ctx.name} -> {binding.remote_context} @ {binding.url}" if binding
              else f"context {ctx.name} has no remote")
        return
    if not (args.remote_context and args.url):
        raise DisdatError("give both REMOTE_CONTEXT and URL, e.g. `dsdt remote shared s3://bucket/prefix`")
    check_name(args.remote_context, "remote context name")
    store = open_store(args.url)
    try:
        store.check()
    finally:
        store.close()
    ctx.bind_remote(RemoteBinding(args.remote_context, store.url))
    print(f"{ctx.name} -> {args.remote_context} @ {store.url}")


def _bundles_to_push(ctx: Context, args: argparse.Namespace) -> List[Bundle]:
    if args.all:
        return [ctx.bundle(r.uuid) for r in ctx.find(committed=True)]
    return [selected_bundle(ctx, args)]


def cmd_push(args: argparse.Namespace) -> None:
    _one_selector(args)
    ctx = Home().context()
    bundles = _bundles_to_push(ctx, args)
    with remote_of(ctx) as remote:
        for b in bundles:
            _report("pushed", b, push(ctx, remote, b, quiet=args.quiet), "on the remote")


def _uuids_to_pull(remote: Remote, args: argparse.Namespace) -> List[str]:
    if args.all:
        return [uuid for _, _, uuid in remote.versions()]
    if args.uuid:
        return [args.uuid]
    from ..runs.history import pending_output

    return [pending_output(remote, args.name) or remote.latest(args.name).uuid]


def cmd_pull(args: argparse.Namespace) -> None:
    _one_selector(args)
    ctx = Home().context()
    with remote_of(ctx) as remote:
        for uuid in _uuids_to_pull(remote, args):
            b, stats = pull(ctx, remote, uuid, quiet=args.quiet)
            _report("pulled", b, stats, "local")


def refetch(ctx: Context, uuid: str) -> bool:
    """For `dsdt check --repair`: fetch bundle ``uuid`` again from the context's remote, if it has it."""
    if ctx.remote is None:
        return False
    try:
        with remote_of(ctx) as remote:
            if not remote.has_bundle(uuid):
                return False
            pull(ctx, remote, uuid, quiet=True)
            return True
    except DisdatError:
        return False
