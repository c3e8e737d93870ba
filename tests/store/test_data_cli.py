"""The dsdt data commands: init, context, switch, add, ls, cat, commit, rm, lineage, and their bad inputs."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import DSDT, assert_user_error, run_dsdt, snapshot
from disdat_luigi.store.home import Home


@pytest.fixture
def sample(tmp_path):
    d = tmp_path / "sample"
    (d / "deep").mkdir(parents=True)
    (d / "one.txt").write_text("one\n")
    (d / "deep" / "two.txt").write_text("two\n")
    return d


def _uuid_of(out: str) -> str:
    return out.split()[2]


def test_every_command_has_help(cli):
    for cmd in ("init", "context", "switch", "add", "ls", "cat", "commit", "rm", "lineage"):
        r = cli(cmd, "-h")
        assert r.code == 0 and r.out.startswith(f"usage: dsdt {cmd} [-h]"), r.out


def test_init_is_idempotent(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "h"))
    first = cli("init")
    assert (first.code, first.out, first.err) == (0, f"initialized: {tmp_path / 'h'}\n", "")
    before = snapshot(tmp_path / "h")
    again = cli("init")
    assert (again.code, again.out, again.err) == (0, f"already initialized: {tmp_path / 'h'}\n", "")
    assert snapshot(tmp_path / "h") == before


def test_the_first_context_created_is_the_active_one(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "h"))
    assert cli("init").code == 0
    assert cli("context").out == ""
    assert cli("context", "first").out == "created first (active)\n"
    assert cli("context", "second").out == "created second\n"
    assert cli("context").out.splitlines() == ["* first", "  second"]
    sample = tmp_path / "x.txt"
    sample.write_text("x")
    assert cli("add", "x", sample).code == 0
    assert [row.name for row in Home(tmp_path / "h").context("first").find()] == ["x"]
    assert Home(tmp_path / "h").context("second").find() == []


def test_commands_before_init_say_to_init(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "nothing"))
    for args in (("ls",), ("context",), ("context", "x"), ("cat", "x")):
        assert_user_error(cli(*args), "dsdt init")
    assert not (tmp_path / "nothing").exists()


def test_contexts_create_list_switch_delete(home, cli):
    assert cli("context", "second").code == 0
    r = cli("context")
    assert r.out.splitlines() == ["  second", "* test"]
    assert cli("switch", "second").code == 0
    assert cli("context").out.splitlines() == ["* second", "  test"]
    assert cli("context", "-d", "test").code == 0
    assert cli("context").out.splitlines() == ["* second"]


def test_context_bad_inputs_change_nothing(home, cli):
    before = snapshot(home.path)
    assert_user_error(cli("context", "-d", "test"), "active context")
    assert_user_error(cli("context", "-d", "missing"), "no context named missing")
    assert_user_error(cli("context", "-d"), "NAME")
    assert_user_error(cli("switch", "missing"), "no context named missing")
    assert_user_error(cli("context", "bad/name"), "invalid context name")
    assert snapshot(home.path) == before


def _rows(out: str) -> list:
    """`dsdt ls` as rows of (name, uuid, committed, tags), after checking its header."""
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "UUID", "CREATED", "COMMITTED", "TAGS"], out
    rows = []
    for line in lines[1:]:
        name, uuid, created, committed, *tags = line.split()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", created), line
        rows.append((name, uuid, committed, " ".join(tags)))
    return rows


def test_add_ls_cat_commit_rm_lineage(home, cli, sample):
    r = cli("add", "-t", "source:test", "words", sample)
    assert r.code == 0, r.err
    uuid = _uuid_of(r.out)
    assert r.out == f"added words {uuid} (2 files)\n"
    paths = json.loads(cli("cat", "words").out)
    assert [p.split("/files/")[1] for p in paths] == ["sample/one.txt", "sample/deep/two.txt"]
    assert open(paths[0]).read() == "one\n"
    assert json.loads(cli("cat", "-u", uuid).out) == paths

    second = _uuid_of(cli("add", "words", sample / "one.txt").out)
    assert _rows(cli("ls").out) == [("words", second, "no", "")]
    assert _rows(cli("ls", "-v").out) == [("words", second, "no", ""), ("words", uuid, "no", "source:test")]
    assert _rows(cli("ls", "-t", "source:test").out) == [("words", uuid, "no", "source:test")]
    assert _rows(cli("ls", "nomatch*").out) == []
    assert _rows(cli("ls", "wo*").out) == [("words", second, "no", "")]     # names are glob patterns
    assert _rows(cli("ls", "w?rds", "nomatch").out) == [("words", second, "no", "")]

    assert cli("commit", "-t", "release:1", "words").out == f"committed words {second}\n"
    assert _rows(cli("ls", "words").out) == [("words", second, "yes", "release:1")]
    assert _rows(cli("ls", "--uncommitted").out) == [("words", uuid, "no", "source:test")]
    assert _rows(cli("ls", "-v", "--uncommitted").out) == [("words", uuid, "no", "source:test")]

    lineage = json.loads(cli("lineage", uuid).out)
    assert lineage["uuid"] == uuid and lineage["name"] == "words" and lineage["lineage"] is None

    assert cli("rm", "words").out == "removed 1 bundle version\n"  # removes the latest version only
    assert _rows(cli("ls", "-v").out) == [("words", uuid, "no", "source:test")]
    third = _uuid_of(cli("add", "words", sample).out)
    assert cli("rm", "-u", uuid).out == "removed 1 bundle version\n"  # that version only, even if not the latest
    assert _rows(cli("ls", "-v").out) == [("words", third, "no", "")]
    cli("add", "words", sample)
    assert cli("rm", "--all", "words").out == "removed 2 bundle versions\n"
    assert _rows(cli("ls", "-v").out) == []
    assert list(home.context().objects.iterdir()) == []


def test_data_bad_inputs_give_one_line_and_change_nothing(home, cli, sample):
    uuid = _uuid_of(cli("add", "kept", sample).out)
    before = snapshot(home.path)
    cases = [
        (("add", "-t", "a:b:c", "x", sample), "bad tag 'a:b:c'"),
        (("add", "-t", ":v", "x", sample), "key before ':' is empty"),
        (("add", "-t", "novalue", "x", sample), "bad tag 'novalue'"),
        (("add", "x", sample / "missing.txt"), "no such file"),
        (("add", "bad/name", sample), "invalid bundle name"),
        (("add", "x"), "required"),
        (("cat", "nothing"), "no bundle named nothing"),
        (("cat", "-u", "00000000-0000-0000-0000-000000000000"), "no bundle with uuid"),
        (("cat",), "exactly one"),
        (("cat", "kept", "-u", uuid), "exactly one"),
        (("commit", "nothing"), "no bundle named nothing"),
        (("rm", "nothing"), "no bundle named nothing"),
        (("rm", "--all", "nothing"), "no bundle named nothing"),
        (("rm", "--all", "-u", uuid), "--all"),
        (("ls", "-t", "a:b:c"), "bad tag"),
        (("lineage", "not-a-uuid"), "no bundle with uuid"),
        (("nosuchcommand",), "invalid choice"),
    ]
    for args, fragment in cases:
        assert_user_error(cli(*args), fragment)
    assert snapshot(home.path) == before


def test_unreadable_paths_are_refused(home, cli, sample, tmp_path):
    """Paths that cannot be read as data: a dangling symlink and a FIFO (root reads any mode, so no chmod)."""
    (sample / "dangling").symlink_to(tmp_path / "gone")
    before = snapshot(home.path)
    assert_user_error(cli("add", "x", sample / "dangling"), "no such file")
    os.mkfifo(tmp_path / "fifo")
    assert_user_error(cli("add", "x", tmp_path / "fifo"), "neither a file nor a directory")
    assert snapshot(home.path) == before


def test_concurrent_adds_from_real_processes(home, sample):
    """Eight `dsdt add` processes on one context at once: all succeed, the index stays consistent."""
    env = {"DISDAT_HOME": str(home.path)}
    procs = [subprocess.Popen([DSDT, "add", "-t", f"n:{i}", "together", str(sample)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **env}) for i in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rows = home.context().find(["together"])
    assert len(rows) == 8 and sorted(r.tags["n"] for r in rows) == [str(i) for i in range(8)]
    for r in rows:
        b = home.context().bundle(r.uuid)
        assert sorted(b.manifest.files) == ["sample/deep/two.txt", "sample/one.txt"]
        assert all(b.path(rel).read_text() in ("one\n", "two\n") for rel in b.manifest.files)
    assert list(home.context().tmp.iterdir()) == []


def test_console_script_reports_errors_without_traceback(home):
    r = run_dsdt("cat", "missing", env={"DISDAT_HOME": str(home.path)})
    assert_user_error(r, "no bundle named missing")
