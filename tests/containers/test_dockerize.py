"""dsdt dockerize: names, labels, no rebuild when nothing changed, stale images refused, push to a registry."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request

import pytest

from conftest import IMAGE_PREFIX, REPO, TEST_PIPES, assert_user_error, run_dsdt


@pytest.fixture
def untag():
    """Image names a test adds, removed afterwards (an image that other tags share stays)."""
    names = []
    yield names.append
    import docker

    for name in names:
        try:
            docker.from_env().images.remove(name)
        except docker.errors.ImageNotFound:
            pass


def _dockerize(*args, env=None):
    return run_dsdt("dockerize", *args, env=env, cwd=REPO)


def test_up_to_date_image_is_not_rebuilt(test_pipes_image, docker_ready):
    import docker

    r = _dockerize("--base-image", docker_ready, str(TEST_PIPES))
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].startswith("up to date: ") and not any(line.startswith("building") for line in lines)
    for module in ("slow", "chain"):
        assert f"tagged {IMAGE_PREFIX}/disdat-{module}:latest" in r.out
    image = docker.from_env().images.get(f"{IMAGE_PREFIX}/disdat-slow:latest")
    # one image, a tag per module
    assert image.id == docker.from_env().images.get(f"{IMAGE_PREFIX}/disdat-envcheck:latest").id
    assert image.labels["disdat.code_version"] and image.labels["disdat.package_version"]
    assert image.labels["disdat.base_image"] == docker_ready


def test_one_module_and_prefixes(test_pipes_image, docker_ready, untag):
    untag("team/tools/disdat-slow:latest")
    env = {"DISDAT_DOCKERIZE_REPOSITORY_PREFIX": "team/tools"}
    r = _dockerize("--base-image", docker_ready, str(TEST_PIPES), "slow", env=env)
    assert r.code == 0, r.err
    assert r.out.strip().splitlines()[-1].startswith("tagged team/tools/disdat-slow:latest")
    assert "disdat-chain" not in r.out


def test_dockerize_bad_inputs(docker_ready, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(_dockerize(str(tmp_path / "nowhere")), "is not a directory")
    assert_user_error(_dockerize(str(tmp_path / "empty")), "no pipe classes under")
    assert_user_error(_dockerize(str(TEST_PIPES), "nosuch"), "no pipe classes in module nosuch")
    # a registry on a closed loopback port: the pull fails at once, and no address but 127.0.0.1 is tried
    assert_user_error(_dockerize("--base-image", "127.0.0.1:9/nosuch:latest", str(TEST_PIPES)),
                      "cannot be pulled", "scripts/build-base-image.sh")
    assert_user_error(_dockerize(str(TEST_PIPES), env={"DOCKER_HOST": "unix:///nonexistent.sock"}),
                      "cannot reach the Docker engine")


def test_a_stale_image_is_refused_with_the_command_that_fixes_it(home, docker_ready, tmp_path, monkeypatch, cli,
                                                                   test_pipes_image, untag):
    """A pipe_root of its own (a unique file in it), so that the first dockerize really builds an image that
    nothing else shares; removing its one tag removes it, and the build cache it leaves behind (layers that
    are not a finished image) must not pass for the image."""
    import uuid

    import docker

    untag("stale-test/disdat-slow:latest")
    root = tmp_path / "pipe_root"
    shutil.copytree(TEST_PIPES, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "unique.txt").write_text(uuid.uuid4().hex)
    env = {"DISDAT_DOCKERIZE_REPOSITORY_PREFIX": "stale-test", "DISDAT_PIPE_ROOT": str(root)}
    monkeypatch.setenv("DISDAT_DOCKERIZE_REPOSITORY_PREFIX", "stale-test")
    monkeypatch.setenv("DISDAT_PIPE_ROOT", str(root))
    first = _dockerize("--base-image", docker_ready, str(root), "slow", env=env)
    assert first.code == 0 and first.out.startswith("building the image of"), first.out
    client = docker.from_env()
    built = client.images.get("stale-test/disdat-slow:latest").id
    client.images.remove("stale-test/disdat-slow:latest")
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(built)  # the image is gone; its build cache stays
    again = _dockerize("--base-image", docker_ready, str(root), "slow", env=env)
    assert again.code == 0 and again.out.startswith("building the image of"), again.out
    assert client.images.get("stale-test/disdat-slow:latest").attrs["Config"]["Entrypoint"] == ["dsdt-entrypoint"]
    assert cli("remote", "shared", (tmp_path / "remote").as_uri()).code == 0
    (root / "slow.py").write_text((root / "slow.py").read_text() + "\n# changed after dockerize\n")
    r = run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO)
    assert_user_error(r, "built from a different pipe_root", f"run `dsdt dockerize {root} slow`")
    assert _dockerize("--base-image", docker_ready, str(root), "slow", env=env).code == 0
    r = run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO)
    assert r.code == 0, r.err


def test_push_to_a_registry(test_pipes_image, docker_ready, registry, untag):
    name = f"{registry}/{IMAGE_PREFIX}/disdat-slow:latest"
    untag(name)
    env = {"DISDAT_DOCKERIZE_REGISTRY": registry}
    r = _dockerize("--base-image", docker_ready, "--push", str(TEST_PIPES), "slow", env=env)
    assert r.code == 0, r.err
    assert r.out.splitlines()[-1] == f"pushed {name}"
    with urllib.request.urlopen(f"http://{registry}/v2/{IMAGE_PREFIX}/disdat-slow/tags/list", timeout=10) as resp:
        assert json.loads(resp.read()) == {"name": f"{IMAGE_PREFIX}/disdat-slow", "tags": ["latest"]}


def test_the_image_holds_botocores_data_for_our_services(test_pipes_image):
    """A node's container finds the copy made at build time (it runs as the host's user, who could not make
    it), so its first client skips botocore's listing of every service."""
    code = ("from disdat_luigi.remotes import botocore_data, s3; made = botocore_data.location().is_dir(); "
            "print(made, type(s3.make_session().get_component('data_loader')).__name__)")
    proc = subprocess.run(["docker", "run", "--rm", "--user", "12345", "--entrypoint", "python",
                           f"{IMAGE_PREFIX}/disdat-slow:latest", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "TrimmedLoader"]
