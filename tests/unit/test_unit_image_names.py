"""Image names of pipe modules (disdat_luigi.containers.dockerize.image_repository / image_name), and the AWS Batch
job names of nodes (disdat_luigi.containers.aws_batch.job_name)."""
from __future__ import annotations

import os

import pytest

from disdat_luigi.containers.dockerize import image_name, image_repository


@pytest.fixture(autouse=True)
def no_settings(tmp_path, monkeypatch):
    """No luigi.cfg of the repository's own, no DISDAT_* settings (tests/conftest.py sets an image prefix)."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("DISDAT_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("module, expected", [
    ("a", "disdat-a:latest"),
    ("a.b", "disdat-a-b:latest"),
    ("report", "disdat-report:latest"),
    ("pkg.sub.mod", "disdat-pkg-sub-mod:latest"),
    ("My.SubMod", "disdat-my-submod:latest"),
])
def test_image_name_of_a_module(module, expected):
    assert image_name(module) == expected
    assert image_repository(module) == expected[:-len(":latest")]


@pytest.mark.parametrize("registry, prefix, expected", [
    ("reg.example:5000", None, "reg.example:5000/disdat-a-b:latest"),
    (None, "team", "team/disdat-a-b:latest"),
    ("reg.example:5000", "team", "reg.example:5000/team/disdat-a-b:latest"),
    ("reg.example:5000/", "/team/ml/", "reg.example:5000/team/ml/disdat-a-b:latest"),
    ("//reg.example//", "team/", "reg.example/team/disdat-a-b:latest"),
    ("/", "team", "team/disdat-a-b:latest"),
    ("reg.example", "/", "reg.example/disdat-a-b:latest"),
    ("", "", "disdat-a-b:latest"),
])
def test_image_name_with_registry_and_prefix(monkeypatch, registry, prefix, expected):
    if registry is not None:
        monkeypatch.setenv("DISDAT_DOCKERIZE_REGISTRY", registry)
    if prefix is not None:
        monkeypatch.setenv("DISDAT_DOCKERIZE_REPOSITORY_PREFIX", prefix)
    assert image_name("a.b") == expected


def test_image_name_registry_from_luigi_cfg(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg" / "luigi.cfg"
    cfg.parent.mkdir()
    cfg.write_text("[dockerize]\nregistry = cfg.example\nrepository_prefix = from-file\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(cfg))
    assert image_name("a.b") == "cfg.example/from-file/disdat-a-b:latest"
    monkeypatch.setenv("DISDAT_DOCKERIZE_REPOSITORY_PREFIX", "from-env")
    assert image_name("a.b") == "cfg.example/from-env/disdat-a-b:latest"


NODE = "0123456789abcdef" * 2


@pytest.mark.parametrize("family, expected", [
    ("slow", "disdat-0123456789ab-slow"),
    ("pkg.sub", "disdat-0123456789ab-pkg-sub"),
    ("we!rd mod", "disdat-0123456789ab-we-rd-mod"),
])
def test_batch_job_names_start_with_their_node(family, expected):
    """ListJobs finds a node's jobs by name prefix: the node comes first, whatever the module is called."""
    from disdat_luigi.containers.aws_batch import job_name, job_name_prefix

    assert job_name(family, NODE) == expected
    assert job_name(family, NODE).startswith(job_name_prefix(NODE))


def test_batch_job_names_stay_within_the_limit():
    import re

    from disdat_luigi.containers.aws_batch import job_name

    name = job_name("m" * 300, NODE)
    assert len(name) <= 128 and re.fullmatch(r"[A-Za-z0-9_-]+", name) and name.startswith("disdat-0123456789ab-")
