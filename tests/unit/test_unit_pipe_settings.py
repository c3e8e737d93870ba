"""A pipe's own resources, retries and timeout (disdat_luigi.pipe.settings): the decorators, luigi.cfg's
[run module.PipeClass] sections over them, [run] under them, every value checked in one line; and the retry
strategy an AWS Batch job gets from them."""
from __future__ import annotations

import pytest

from disdat_luigi import PipeTask, resources, retry, timeout
from disdat_luigi.config import SettingsError, validate
from disdat_luigi.containers.aws_batch import retry_strategy
from disdat_luigi.errors import DisdatError
from disdat_luigi.pipe.settings import RunSettings, settings_of


@resources(vcpus=4, memory=16384, gpus=1)
@retry(times=2)
@timeout(seconds=3600)
class Train(PipeTask):
    pass


class Tuned(Train):
    """A subclass's decorators win over its base class's, key by key."""


Tuned = resources(memory=512)(Tuned)


class Plain(PipeTask):
    pass


def _cfg(tmp_path, monkeypatch, text: str) -> None:
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(text)
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(cfg))


def test_a_pipe_without_decorators_keeps_the_run_defaults(monkeypatch):
    assert settings_of(Plain) == RunSettings(vcpus=1, memory=2048, gpus=0, retries=0, timeout=None)
    monkeypatch.setenv("DISDAT_RUN_MEMORY", "4096")
    monkeypatch.setenv("DISDAT_RUN_RETRIES", "1")
    assert settings_of(Plain) == RunSettings(memory=4096, retries=1)


def test_decorators_say_what_a_pipe_needs_over_the_defaults(monkeypatch):
    monkeypatch.setenv("DISDAT_RUN_MEMORY", "4096")
    assert settings_of(Train) == RunSettings(vcpus=4, memory=16384, gpus=1, retries=2, timeout=3600)
    assert settings_of(Tuned) == RunSettings(vcpus=4, memory=512, gpus=1, retries=2, timeout=3600)
    assert settings_of(Train).attempts == 3
    assert "resources" not in Train.__dict__ and Train.resources == PipeTask.resources  # Luigi's own, untouched


def test_a_luigi_cfg_section_overrides_one_pipe_class(tmp_path, monkeypatch):
    name = f"{Train.__module__}.Train"
    _cfg(tmp_path, monkeypatch, f"[run]\ntimeout = 60\n[run {name}]\nmemory = 32768\nretries = 0\n")
    assert settings_of(Train) == RunSettings(vcpus=4, memory=32768, gpus=1, retries=0, timeout=3600)
    assert settings_of(Plain) == RunSettings(timeout=60)   # [run] for everyone else
    validate()


@pytest.mark.parametrize("decorate, line", [
    (lambda: resources(memory=0), "@resources(memory=0): use an integer from 6 to 4000000"),
    (lambda: resources(vcpus="2"), "@resources(vcpus='2'): vcpus takes a whole number, not str"),
    (lambda: resources(gpus=-1), "@resources(gpus=-1): use an integer from 0 to 16"),
    (lambda: resources(memory=1.5), "@resources(memory=1.5): memory takes a whole number, not float"),
    (lambda: retry(times=10), "@retry(times=10): use an integer from 0 to 9"),
    (lambda: timeout(seconds=0), "@timeout(seconds=0): use an integer of at least 1"),
    (lambda: resources(vcpus=True), "@resources(vcpus=True): vcpus takes a whole number, not bool"),
])
def test_a_bad_decorator_value_is_one_line(decorate, line):
    with pytest.raises(DisdatError) as err:
        decorate()
    assert str(err.value) == line


def test_decorators_decorate_classes_only():
    with pytest.raises(DisdatError, match="@retry decorates a pipe class"):
        retry(times=1)(lambda: None)


def test_bad_pipe_sections_are_one_line_each(tmp_path, monkeypatch):
    _cfg(tmp_path, monkeypatch, "[run a.B]\nmemory = lots\ncolor = red\n[run  two.Spaces]\ntimeout = 5\n")
    with pytest.raises(SettingsError) as err:
        validate()
    assert str(err.value).splitlines() == [
        "[run a.B] memory in luigi.cfg = 'lots' is not valid: use an integer from 6 to 4000000",
        "[run  two.Spaces] in luigi.cfg is not a section of one pipe class: write [run module.PipeClass]"]


def test_an_unknown_key_of_a_pipe_section_is_refused(tmp_path, monkeypatch):
    _cfg(tmp_path, monkeypatch, "[run a.B]\ncolor = red\n")
    with pytest.raises(SettingsError, match=r"\[run a.B\] color in luigi.cfg = 'red' is not valid: use one of "
                                            r"vcpus, memory, gpus, retries, timeout"):
        validate()


def test_batch_retries_a_hosts_failure_once_more_and_a_pipes_own_only_with_retries():
    host = {"onStatusReason": "Host EC2*", "action": "RETRY"}
    assert retry_strategy(1) == {"attempts": 2, "evaluateOnExit": [host, {"onStatusReason": "*", "action": "EXIT"}]}
    assert retry_strategy(3) == {"attempts": 3, "evaluateOnExit": [host, {"onStatusReason": "*", "action": "RETRY"}]}
