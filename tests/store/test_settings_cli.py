"""Settings are validated once, at start-up, through the real `dsdt`: one line per bad value naming the key (and
where it came from) and the accepted values, before anything happens. Booleans accept only
true/false/yes/no/1/0. A network mode that has the form of a Docker network name but names none fails at
`dsdt run`, in one line, before anything is pushed. A file:// remote of the root directory is refused.
"""
from __future__ import annotations

import pytest

from conftest import REPO, TEST_PIPES, assert_user_error, docker_containers, run_dsdt, snapshot
from disdat_luigi.remotes import open_store

BAD = [
    ("DISDAT_S3_MAX_ATTEMPTS", "-3", "DISDAT_S3_MAX_ATTEMPTS = '-3' is not valid: use an integer from 1 to 20"),
    ("DISDAT_RUN_TIMEOUT", "-5", "DISDAT_RUN_TIMEOUT = '-5' is not valid: use an integer of at least 1"),
    ("DISDAT_RUN_LOCAL_SCHEDULER", "maybe",
     "DISDAT_RUN_LOCAL_SCHEDULER = 'maybe' is not valid: use true, false, yes, no, 1 or 0"),
    ("DISDAT_RUN_NETWORK_MODE", "bo/gus", "DISDAT_RUN_NETWORK_MODE = 'bo/gus' is not valid: use default, bridge, "
                                          "host, none, container:NAME or the name of a Docker network"),
    ("DISDAT_TRANSFER_WORKERS", "0", "DISDAT_TRANSFER_WORKERS = '0' is not valid: use an integer from 1 to 256"),
    ("DISDAT_RUN_BACKEND", "local", "DISDAT_RUN_BACKEND = 'local' is not valid: use Local or AWSBatch"),
]


def _tree(root):
    paths = sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*")
                   if not p.name.endswith(("-wal", "-shm")))
    return snapshot(root), paths


@pytest.fixture
def populated(home, cli, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x.txt").write_text("x")
    assert cli("add", "kept", d).code == 0
    assert cli("commit", "kept").code == 0
    return home


@pytest.mark.parametrize("name, value, line", BAD, ids=[b[0] for b in BAD])
def test_one_bad_setting_is_one_line_whatever_the_command(populated, tmp_path, name, value, line):
    """Every command refuses to start, even one that never reads the setting, and changes nothing."""
    before = _tree(populated.path)
    for args in (("ls",), ("add", "new", tmp_path / "d"), ("context", "another"), ("commit", "kept"),
                 ("remote", "shared", (tmp_path / "remote").as_uri())):
        r = run_dsdt(*args, env={name: value})
        assert_user_error(r, line)
        assert r.err == f"dsdt: error: {line}\n" and r.out == ""
    assert _tree(populated.path) == before
    assert not (tmp_path / "remote").exists()


def test_init_with_a_bad_setting_creates_nothing(tmp_path):
    home = tmp_path / "fresh-home"
    r = run_dsdt("init", env={"DISDAT_HOME": str(home), "DISDAT_RUN_TIMEOUT": "-5"})
    assert_user_error(r, "DISDAT_RUN_TIMEOUT = '-5' is not valid")
    assert not home.exists()


def test_every_bad_setting_has_its_own_line(populated):
    before = _tree(populated.path)
    r = run_dsdt("ls", env={name: value for name, value, _ in BAD})
    assert r.code == 1 and r.out == "" and "Traceback" not in r.err
    lines = r.err.splitlines()
    assert sorted(lines) == sorted(f"dsdt: error: {line}" for _, _, line in BAD)
    assert _tree(populated.path) == before


def test_a_bad_value_in_luigi_cfg_names_the_section_and_key(populated, tmp_path):
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("[run]\nlocal_scheduler = maybe\ntimeout = -5\n[disdat]\ns3_max_attempts = -3\n")
    r = run_dsdt("ls", env={"LUIGI_CONFIG_PATH": str(cfg)})
    assert r.code == 1 and r.out == ""
    assert r.err.splitlines() == [
        "dsdt: error: [disdat] s3_max_attempts in luigi.cfg = '-3' is not valid: use an integer from 1 to 20",
        "dsdt: error: [run] timeout in luigi.cfg = '-5' is not valid: use an integer of at least 1",
        "dsdt: error: [run] local_scheduler in luigi.cfg = 'maybe' is not valid: use true, false, yes, no, 1 or 0",
    ]
    fixed = run_dsdt("ls", env={"LUIGI_CONFIG_PATH": str(cfg), "DISDAT_RUN_LOCAL_SCHEDULER": "yes",
                                "DISDAT_RUN_TIMEOUT": "5", "DISDAT_S3_MAX_ATTEMPTS": "3"})
    assert fixed.code == 0, fixed.err   # the environment overrides the file


@pytest.mark.parametrize("value, meant", [("true", True), ("false", False), ("yes", True), ("no", False),
                                         ("1", True), ("0", False), ("TRUE", True), ("No", False), (" yes ", True)])
def test_booleans_accept_true_false_yes_no_1_0(populated, monkeypatch, value, meant):
    from disdat_luigi import config

    r = run_dsdt("ls", env={"DISDAT_RUN_LOCAL_SCHEDULER": value})
    assert r.code == 0 and r.err == "", r
    monkeypatch.setenv("DISDAT_RUN_LOCAL_SCHEDULER", value)
    assert config.get("run", "local_scheduler") is meant   # read back as what it says, not just accepted


@pytest.mark.parametrize("value", ["on", "off", "t", "y", "2", "-1", "maybe", "truee"])
def test_booleans_refuse_anything_else(populated, value):
    assert_user_error(run_dsdt("ls", env={"DISDAT_RUN_LOCAL_SCHEDULER": value}),
                      f"DISDAT_RUN_LOCAL_SCHEDULER = '{value}' is not valid: use true, false, yes, no, 1 or 0")


@pytest.mark.parametrize("url, fragment", [
    ("file:///", "is the root directory: give a directory of its own, file:///dir"),
    ("file:///..", "is the root directory"),
    ("file:////", "is the root directory"),
    ("file:///./", "is the root directory"),
    ("file://host/dir", "must be an absolute path: file:///dir"),
    ("file:relative/dir", "must be an absolute path: file:///dir"),
])
def test_a_file_remote_of_the_root_directory_is_refused(populated, url, fragment):
    before = _tree(populated.path)
    assert_user_error(run_dsdt("remote", "r", url), f"remote URL {url!r}", fragment)
    assert _tree(populated.path) == before
    assert run_dsdt("remote").out == "context test has no remote\n"


@pytest.mark.timeout(120)
def test_an_unknown_docker_network_fails_the_run_in_one_line(populated, cli, tmp_path, pipe_root, docker_ready):
    """'bogus' has the form of a network name, so start-up accepts it (`dsdt ls` works); `dsdt run` asks the
    engine and refuses before anything is pushed or started."""
    pipe_root(TEST_PIPES)
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    env = {"DISDAT_RUN_NETWORK_MODE": "bogus"}
    assert run_dsdt("ls", env=env).code == 0
    before = _tree(populated.path)
    r = run_dsdt("run", "kept", "out", "slow.Sleep", "--seconds", "1", env=env, cwd=REPO)
    assert_user_error(r, "the Docker engine has no network 'bogus' ([run] network_mode): use host, none, bridge, "
                         "default or an existing network")
    assert r.out == ""
    assert _tree(populated.path) == before
    store = open_store(url)
    try:
        assert list(store.list("")) == []          # the input was not pushed, no record was written
    finally:
        store.close()
    assert docker_containers() == []
