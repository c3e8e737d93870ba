"""``dsdt``: the command line. Thin: each command parses its arguments and calls the library.

User errors (:class:`~disdat_luigi.errors.DisdatError`) print one line ``dsdt: error: ...`` and exit 1;
bad command-line syntax exits 2; an interrupt exits 130.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

from .. import config
from ..config import SettingsError
from ..display import safe
from ..errors import DisdatError
from ..fsutil import is_disk_full, no_room
from ..remotes import faults


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"dsdt: error: {message} (see `{self.prog} -h`)\n")


# The commands each module registers: a command line naming one builds that module's parser alone (importing and
# registering the others cost `dsdt pull` ~7 ms, ~1% of pulling 256 MiB). tests/unit/test_unit_cli.py
# checks this against what the modules register.
COMMANDS = {
    "data_commands": ("init", "context", "switch", "add", "ls", "cat", "commit", "rm", "check", "lineage"),
    "remote_commands": ("remote", "push", "pull"),
    "run_commands": ("apply", "dockerize", "run", "runs", "report", "logs"),
}


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """dsdt's parser, with only the named command's module when ``argv`` names a command; with every command
    otherwise (``dsdt -h``, no command, a misspelt one), so that help and errors list them all."""
    named = argv[0] if argv else None
    modules = [m for m, commands in COMMANDS.items() if named in commands] or list(COMMANDS)
    parser = _Parser(prog="dsdt", description="Versioned data bundles, and Disdat pipes run in containers as "
                                              "Luigi task chains.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in modules:
        importlib.import_module(f"{__name__}.{module}").register(sub)
    return parser


def _print_error(exc: DisdatError) -> None:
    """One line per error (a SettingsError holds one per bad setting); remote text is made safe to print."""
    text = str(exc)
    if isinstance(exc, SettingsError):
        for line in text.splitlines():
            print(f"dsdt: error: {safe(line)}", file=sys.stderr)
    else:
        print(f"dsdt: error: {safe(text, keep_newlines=True)}", file=sys.stderr)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a killed dsdt, a supervisor stopping it) unwinds like Ctrl-C: transfers abort their
        # multipart uploads, staging directories are released, containers are stopped.
        signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parser.parse_args(argv)
        config.validate()
        faults.check()
        return int(args.func(args) or 0)
    except DisdatError as exc:
        _print_error(exc)
        return 1
    except BrokenPipeError:  # `dsdt runs | head`: the reader has what it wanted
        _quiet_stdout()
        return 0
    except Exception as exc:  # a full disk met where no command said what it was writing
        if not is_disk_full(exc):
            raise
        where = getattr(exc, "filename", None)
        lack, fix = no_room(Path(where)) if where else ("no space left on the device", "free some space")
        print(f"dsdt: error: {safe(lack)}: {fix} and run it again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dsdt: interrupted", file=sys.stderr)
        return 130


def console() -> int:
    """The ``dsdt`` console script."""
    from ..console import console as ending_fast

    return ending_fast(main)


def _quiet_stdout() -> None:
    """stdout's reader is gone: whatever is still buffered goes nowhere, so that Python's flush at exit does not
    print a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(console())
