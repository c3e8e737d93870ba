"""The command line builds only what the command it runs needs (issue 18: every dsdt process pays its start-up)."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from disdat_luigi.cli import COMMANDS, _Parser

from conftest import run_dsdt


@pytest.mark.parametrize("module", list(COMMANDS))
def test_the_command_table_says_what_each_module_registers(module):
    parser = _Parser(prog="dsdt")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    importlib.import_module(f"disdat_luigi.cli.{module}").register(sub)
    assert tuple(sub.choices) == COMMANDS[module]


def _modules_after(argv: list) -> set:
    """The modules a fresh interpreter has imported after ``dsdt <argv>`` (a command's -h: nothing is run)."""
    code = ("import sys\nfrom disdat_luigi.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sys.modules))" % (argv,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_a_transfer_command_neither_imports_nor_builds_the_run_commands():
    loaded = _modules_after(["pull", "-h"])
    assert "disdat_luigi.cli.remote_commands" in loaded
    assert not {"disdat_luigi.cli.run_commands", "disdat_luigi.containers.backend", "luigi", "docker",
                "boto3", "s3transfer", "tqdm"} & loaded


def test_help_and_a_misspelt_command_still_list_every_command(cli):
    every = [name for names in COMMANDS.values() for name in names]
    r = cli("-h")
    assert r.code == 0 and all(name in r.out for name in every)
    r = cli("pul")
    assert r.code == 2
    assert "invalid choice: 'pul'" in r.err and all(f"'{name}'" in r.err for name in every)


def test_a_command_gets_its_own_options_and_usage_errors():
    r = run_dsdt("push", "-h")
    assert r.code == 0 and "--all" in r.out and "usage: dsdt push" in r.out
    r = run_dsdt("pull", "--no-such-flag")
    assert r.code == 2 and r.err.startswith("dsdt: error: ") and "--no-such-flag" in r.err
