"""Bundle and context commands: init, context, switch, add, ls, cat, commit, rm, lineage."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, List

from ..store.context import Bundle, Context
from ..display import safe
from ..errors import DisdatError
from ..store.home import Home
from ..store.manifest import check_name, parse_tags


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="create the local store ($DISDAT_HOME, default ~/.disdat)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("context", help="list contexts, create one, or delete one with -d")
    p.add_argument("-d", "--delete", action="store_true", help="delete the context NAME and all its bundles")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.set_defaults(func=cmd_context)

    p = sub.add_parser("switch", help="make NAME the active context")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_switch)

    p = sub.add_parser("add", help="add files and directories as a new bundle version")
    _tag_option(p, "tag the new bundle")
    p.add_argument("name", metavar="NAME")
    p.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("ls", help="list bundles (latest version of each name unless -v)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every version")
    _tag_option(p, "only bundles with this tag")
    p.add_argument("--uncommitted", action="store_true", help="only uncommitted bundles")
    p.add_argument("names", nargs="*", metavar="NAME", help="bundle names or glob patterns")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("cat", help="print a bundle's data: JSON (files as local paths), a DataFrame as a table")
    p.add_argument("--json", action="store_true", help="JSON even for a DataFrame (the path of its file)")
    bundle_selector(p)
    p.set_defaults(func=cmd_cat)

    p = sub.add_parser("commit", help="commit a bundle (the latest version of NAME, or -u UUID)")
    _tag_option(p, "add this tag while committing")
    bundle_selector(p)
    p.set_defaults(func=cmd_commit)

    p = sub.add_parser("rm", help="remove the latest version of NAME (every version with --all), or -u UUID")
    p.add_argument("--all", action="store_true", help="remove every version of NAME")
    bundle_selector(p)
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("check", help="verify the local store against its manifests (--repair: fix what can be)")
    p.add_argument("--repair", action="store_true",
                   help="rebuild the index from the manifests, remove leftovers of killed commands, move damaged "
                        "bundles to quarantine/ and fetch them again from the remote when it has them")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("lineage", help="print how a bundle was made (the latest version of NAME, or -u UUID)")
    p.add_argument("name", nargs="?", metavar="NAME", help="a bundle name (or a uuid, as earlier versions took)")
    p.add_argument("-u", "--uuid", metavar="UUID")
    p.set_defaults(func=cmd_lineage)


def _tag_option(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("-t", "--tag", action="append", default=[], metavar="KEY:VALUE", help=help_text)


def bundle_selector(p: argparse.ArgumentParser) -> None:
    """``NAME | -u UUID``: exactly one of them."""
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("-u", "--uuid", metavar="UUID")


def selected_bundle(ctx: Context, args: argparse.Namespace) -> Bundle:
    if bool(args.name) == bool(args.uuid):
        raise DisdatError("give a bundle NAME or -u UUID (exactly one)")
    return ctx.resolve(args.name, args.uuid)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def cmd_init(args: argparse.Namespace) -> None:
    home = Home()
    created = home.init()
    print(f"{'initialized' if created else 'already initialized'}: {home.path}")


def cmd_context(args: argparse.Namespace) -> None:
    home = Home()
    if args.delete:
        if not args.name:
            raise DisdatError("give the NAME of the context to delete")
        home.delete_context(args.name)
        print(f"deleted context {args.name}")
    elif args.name:
        created = home.create_context(args.name)
        print(f"{'created' if created else 'context exists:'} {args.name}"
              + (" (active)" if home.active_name == args.name else ""))
    else:
        active = home.active_name
        for name in home.contexts():
            binding = home.context(name).remote
            remote = f"  -> {binding.remote_context} @ {binding.url}" if binding else ""
            print(f"{'*' if name == active else ' '} {name}{remote}")


def cmd_switch(args: argparse.Namespace) -> None:
    Home().switch(args.name)
    print(f"switched to context {args.name}")


def cmd_add(args: argparse.Namespace) -> None:
    tags = parse_tags(args.tag)
    b = Home().context().add_paths(args.name, args.paths, tags)
    print(f"added {b.name} {b.uuid} ({len(b.manifest.files)} files)")


def cmd_ls(args: argparse.Namespace) -> None:
    tags = parse_tags(args.tag)
    rows = Home().context().find(args.names, tags, committed=False if args.uncommitted else None,
                                 latest_only=not args.verbose)
    table: List[List[str]] = [["NAME", "UUID", "CREATED", "COMMITTED", "TAGS"]]
    for r in rows:
        table.append([r.name, r.uuid, r.created, "yes" if r.committed else "no",
                      " ".join(f"{k}:{v}" for k, v in sorted(r.tags.items()))])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_cat(args: argparse.Namespace) -> None:
    b = selected_bundle(Home().context(), args)
    if b.manifest.presentation == "dataframe" and not args.json:
        print(safe(b.data().to_string(), keep_newlines=True))  # cells may come from a shared remote
    else:
        _print_json(b.data(load_frames=False))


def cmd_commit(args: argparse.Namespace) -> None:
    tags = parse_tags(args.tag)
    ctx = Home().context()
    b = ctx.commit(selected_bundle(ctx, args), tags)
    print(f"committed {b.name} {b.uuid}")


def cmd_rm(args: argparse.Namespace) -> None:
    ctx = Home().context()
    if args.all:
        if not args.name or args.uuid:
            raise DisdatError("--all removes every version of a NAME: give NAME, not -u")
        uuids = [r.uuid for r in ctx.find([check_name(args.name)])]
        if not uuids:
            raise DisdatError(f"no bundle named {args.name} in context {ctx.name} (see `dsdt ls`)")
    else:
        uuids = [selected_bundle(ctx, args).uuid]
    ctx.remove(uuids)
    print(f"removed {len(uuids)} bundle version{'s' if len(uuids) != 1 else ''}")


def cmd_lineage(args: argparse.Namespace) -> None:
    ctx = Home().context()
    b = ctx.by_uuid_or_name(args.name) if args.name and not args.uuid else selected_bundle(ctx, args)
    m = b.manifest
    _print_json({"name": m.name, "uuid": m.uuid, "created": m.created, "committed": b.committed,
                 "tags": b.tags, "lineage": m.lineage})


def cmd_check(args: argparse.Namespace) -> int:
    from ..store.check import check_home
    from .remote_commands import refetch

    home = Home()
    findings = check_home(home, args.repair, refetch if args.repair else None)
    for f in findings:
        print(safe(f"{f.context}: {f.problem}" + (f" -> {f.repaired}" if f.repaired else "")))
    left = [f for f in findings if not f.repaired]
    if not findings:
        print(f"the store at {home.path} is sound")
        return 0
    if not left:
        print(f"{len(findings)} problem(s) found, all repaired")
        return 0
    hint = "" if args.repair else ": run `dsdt check --repair`"
    raise DisdatError(f"{len(left)} problem(s) found in the store at {home.path}{hint}")
