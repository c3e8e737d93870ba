"""Settings: luigi.cfg with environment variables on top, validated against one schema (disdat_luigi.config)."""
from __future__ import annotations

import os

import pytest

from disdat_luigi import config
from disdat_luigi.config import SettingsError, env_name, get, parse_bool, validate


@pytest.fixture(autouse=True)
def no_disdat_env(monkeypatch):
    """Only the settings a test sets (tests/conftest.py sets a few for the whole suite)."""
    for name in list(os.environ):
        if name.startswith("DISDAT_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path, monkeypatch):
    """No luigi.cfg but the ones a test writes (the repository has one in its root)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    """Write a luigi.cfg and point LUIGI_CONFIG_PATH at it."""
    path = tmp_path / "etc" / "luigi.cfg"
    path.parent.mkdir()

    def write(text: str):
        path.write_text(text)
        monkeypatch.setenv("LUIGI_CONFIG_PATH", str(path))
        return path

    return write


def test_env_names():
    assert env_name("disdat", "home") == "DISDAT_HOME"
    assert env_name("disdat", "transfer_workers") == "DISDAT_TRANSFER_WORKERS"
    assert env_name("run", "backend") == "DISDAT_RUN_BACKEND"
    assert env_name("dockerize", "base_image") == "DISDAT_DOCKERIZE_BASE_IMAGE"


def test_defaults_when_nothing_is_set():
    assert get("disdat", "transfer_workers") == 10
    assert get("disdat", "pack_threshold") == 1024 * 1024
    assert get("disdat", "s3_max_attempts") == 5
    assert get("disdat", "pipe_root") == "."
    assert get("run", "backend") == "Local"
    assert get("run", "timeout") is None
    assert get("run", "local_scheduler") is True
    assert get("run", "network_mode") == "default"
    assert get("dockerize", "base_image") == "python:3.11-slim"
    assert get("dockerize", "registry") is None


def test_luigi_cfg_over_default(cfg):
    cfg("[disdat]\ntransfer_workers = 7\n[run]\ntimeout = 60\nlocal_scheduler = no\n")
    assert get("disdat", "transfer_workers") == 7
    assert get("run", "timeout") == 60
    assert get("run", "local_scheduler") is False


def test_environment_over_luigi_cfg(cfg, monkeypatch):
    cfg("[disdat]\ntransfer_workers = 7\n[run]\ntimeout = 60\n")
    monkeypatch.setenv("DISDAT_TRANSFER_WORKERS", "3")
    monkeypatch.setenv("DISDAT_RUN_TIMEOUT", "30")
    assert get("disdat", "transfer_workers") == 3
    assert get("run", "timeout") == 30


def test_luigi_cfg_in_the_current_directory_is_read(empty_cwd):
    (empty_cwd / "luigi.cfg").write_text("[disdat]\ntransfer_workers = 4\n")
    assert get("disdat", "transfer_workers") == 4


def test_luigi_config_path_is_read_after_the_current_directory(empty_cwd, cfg):
    (empty_cwd / "luigi.cfg").write_text("[disdat]\ntransfer_workers = 4\npack_threshold = 99\n")
    cfg("[disdat]\ntransfer_workers = 6\n")
    assert get("disdat", "transfer_workers") == 6
    assert get("disdat", "pack_threshold") == 99


def test_get_returns_typed_values(monkeypatch):
    monkeypatch.setenv("DISDAT_PACK_THRESHOLD", " 0 ")
    monkeypatch.setenv("DISDAT_RUN_WAIT", "YES")
    monkeypatch.setenv("DISDAT_RUN_BACKEND", "AWSBatch")
    monkeypatch.setenv("DISDAT_DOCKERIZE_BASE_IMAGE", "  debian:bookworm  ")
    assert get("disdat", "pack_threshold") == 0 and type(get("disdat", "pack_threshold")) is int
    assert get("run", "wait") is True
    assert get("run", "backend") == "AWSBatch"
    assert get("dockerize", "base_image") == "debian:bookworm"


def test_an_empty_value_means_the_default(monkeypatch):
    monkeypatch.setenv("DISDAT_TRANSFER_WORKERS", "  ")
    assert get("disdat", "transfer_workers") == 10


@pytest.mark.parametrize("text, expected", [("true", True), ("TRUE", True), (" Yes ", True), ("1", True),
                                            ("false", False), ("No", False), ("0", False), ("fAlSe", False)])
def test_parse_bool_accepts_true_false_yes_no_1_0_in_any_case(text, expected):
    assert parse_bool(text) is expected


@pytest.mark.parametrize("text", ["maybe", "on", "off", "2", "t", "y", "truthy"])
def test_parse_bool_refuses_anything_else(text):
    with pytest.raises(ValueError) as err:
        parse_bool(text)
    assert str(err.value) == "true, false, yes, no, 1 or 0"


def test_validate_passes_with_good_values(cfg, monkeypatch):
    cfg("[run]\ntimeout = 10\nnetwork_mode = container:db-1\njob_role_arn = arn:aws:iam::123456789012:role/x\n")
    monkeypatch.setenv("DISDAT_RUN_LOCAL_SCHEDULER", "False")
    assert validate() is None


def test_validate_one_line_per_bad_value_naming_key_source_and_accepted_values(monkeypatch):
    bad = {"DISDAT_S3_MAX_ATTEMPTS": "-3", "DISDAT_RUN_TIMEOUT": "-5", "DISDAT_RUN_NETWORK_MODE": "bo/gus",
           "DISDAT_RUN_LOCAL_SCHEDULER": "maybe", "DISDAT_RUN_BACKEND": "Nope", "DISDAT_RUN_JOB_ROLE_ARN": "nonsense"}
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        validate()
    assert str(err.value).split("\n") == [
        "DISDAT_S3_MAX_ATTEMPTS = '-3' is not valid: use an integer from 1 to 20",
        "DISDAT_RUN_BACKEND = 'Nope' is not valid: use Local or AWSBatch",
        "DISDAT_RUN_NETWORK_MODE = 'bo/gus' is not valid: use default, bridge, host, none, container:NAME or the "
        "name of a Docker network",
        "DISDAT_RUN_TIMEOUT = '-5' is not valid: use an integer of at least 1",
        "DISDAT_RUN_LOCAL_SCHEDULER = 'maybe' is not valid: use true, false, yes, no, 1 or 0",
        "DISDAT_RUN_JOB_ROLE_ARN = 'nonsense' is not valid: use an IAM role ARN, arn:aws:iam::123456789012:role/NAME",
    ]


def test_validate_names_the_luigi_cfg_section_and_key(cfg):
    cfg("[run]\ntimeout = -5\n[disdat]\ntransfer_workers = lots\n")
    with pytest.raises(SettingsError) as err:
        validate()
    assert str(err.value).split("\n") == [
        "[disdat] transfer_workers in luigi.cfg = 'lots' is not valid: use an integer from 1 to 256",
        "[run] timeout in luigi.cfg = '-5' is not valid: use an integer of at least 1",
    ]


def test_get_raises_the_same_line_for_one_bad_value(monkeypatch):
    monkeypatch.setenv("DISDAT_RUN_BACKEND", "Nope")
    with pytest.raises(SettingsError) as err:
        get("run", "backend")
    assert str(err.value) == "DISDAT_RUN_BACKEND = 'Nope' is not valid: use Local or AWSBatch"


@pytest.mark.parametrize("name, value", [("DISDAT_TRANSFER_WORKERS", "0"), ("DISDAT_TRANSFER_WORKERS", "257"),
                                         ("DISDAT_PACK_THRESHOLD", "-1"), ("DISDAT_RUN_GPUS", "17"),
                                         ("DISDAT_DOCKERIZE_BASE_IMAGE", "img\x1b[2J"),
                                         ("DISDAT_RUN_NETWORK_MODE", "container:"),
                                         ("DISDAT_RUN_JOB_ROLE_ARN", "arn:aws:iam::12345:role/x")])
def test_out_of_range_values_are_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        validate()
    assert str(err.value).startswith(f"{name} = {value!r} is not valid: use ")
    assert "\n" not in str(err.value)


def test_env_interpolation_in_luigi_cfg(cfg, monkeypatch):
    monkeypatch.setenv("MY_REGISTRY_HOST", "reg.example:5000")
    cfg("[dockerize]\nregistry = ${MY_REGISTRY_HOST}/mirror\nrepository_prefix = ${NOT_SET_ANYWHERE}\n")
    assert get("dockerize", "registry") == "reg.example:5000/mirror"
    assert get("dockerize", "repository_prefix") == "${NOT_SET_ANYWHERE}"


def test_the_file_is_read_again_when_it_changes(cfg):
    path = cfg("[disdat]\ntransfer_workers = 7\n")
    assert get("disdat", "transfer_workers") == 7
    stat = path.stat()
    path.write_text("[disdat]\ntransfer_workers = 8\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert get("disdat", "transfer_workers") == 8


def test_a_file_that_appears_is_read(tmp_path, monkeypatch):
    path = tmp_path / "later.cfg"
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(path))
    assert get("disdat", "transfer_workers") == 10
    path.write_text("[disdat]\ntransfer_workers = 9\n")
    assert get("disdat", "transfer_workers") == 9


def test_section_returns_a_luigi_cfg_section_without_environment(cfg, monkeypatch):
    cfg("[s3]\nendpoint_url = http://127.0.0.1:9000\nregion_name = eu-west-1\n")
    assert config.section("s3") == {"endpoint_url": "http://127.0.0.1:9000", "region_name": "eu-west-1"}
    assert config.section("nothing") == {}
