"""The dsdt data commands: init, context, switch, add, ls, cat, commit, rm, lineage, and their bad inputs."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import DSDT, assert_user_error, run_dsdt, snapshot


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
        assert r.code == 0 and "usage: dsdt " + cmd in r.out


def test_init_is_idempotent(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "h"))
    assert "initialized" in cli("init").out
    assert "already initialized" in cli("init").out


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


def test_add_ls_cat_commit_rm_lineage(home, cli, sample):
    r = cli("add", "-t", "source:test", "words", sample)
    assert r.code == 0, r.err
    uuid = _uuid_of(r.out)
    paths = json.loads(cli("cat", "words").out)
    assert [p.split("/files/")[1] for p in paths] == ["sample/one.txt", "sample/deep/two.txt"]
    assert open(paths[0]).read() == "one\n"
    assert json.loads(cli("cat", "-u", uuid).out) == paths

    second = _uuid_of(cli("add", "words", sample / "one.txt").out)
    ls = cli("ls").out.splitlines()
    assert ls[0].split() == ["NAME", "UUID", "CREATED", "COMMITTED", "TAGS"]
    assert len(ls) == 2 and second in ls[1] and " no" in ls[1]
    assert len(cli("ls", "-v").out.splitlines()) == 3
    assert uuid in cli("ls", "-t", "source:test").out and second not in cli("ls", "-t", "source:test").out
    assert cli("ls", "nomatch*").out.splitlines()[1:] == []

    assert cli("commit", "-t", "release:1", "words").code == 0
    assert "yes" in cli("ls", "words").out and "release:1" in cli("ls", "words").out
    assert second not in cli("ls", "--uncommitted").out and uuid in cli("ls", "-v", "--uncommitted").out

    lineage = json.loads(cli("lineage", uuid).out)
    assert lineage["uuid"] == uuid and lineage["name"] == "words" and lineage["lineage"] is None

    assert cli("rm", "words").code == 0  # removes the latest version only
    assert [ln.split()[1] for ln in cli("ls", "-v").out.splitlines()[1:]] == [uuid]
    cli("add", "words", sample)
    assert "2 bundle versions" in cli("rm", "--all", "words").out
    assert cli("ls", "-v").out.splitlines()[1:] == []


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
