"""``dsdt``: the command line. Thin: each command parses its arguments and calls the library.

User errors (:class:`~disdat_luigi.errors.DisdatError`) print one line ``dsdt: error: ...`` and exit 1;
bad command-line syntax exits 2; an interrupt exits 130.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..errors import DisdatError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"dsdt: error: {message} (see `{self.prog} -h`)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import data_commands
    from . import remote_commands
    from . import run_commands

    parser = _Parser(prog="dsdt", description="Versioned data bundles, and Disdat pipes run in containers as "
                                              "Luigi task chains.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in (data_commands, remote_commands, run_commands):
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except DisdatError as exc:
        print(f"dsdt: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dsdt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dsdt ls | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
