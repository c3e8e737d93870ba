"""Settings the README documents and no other test exercised: --workers' bounds, a network_mode that names a
Docker network, and the user's own luigi.cfg winning over the defaults this package gives Luigi."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import DSDT, REPO, assert_user_error, run_dsdt, running_container, snapshot

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("workers", ["0", "65", "-1"])
def test_workers_outside_1_to_64_are_refused_before_anything_happens(file_remote, home, workers):
    before = snapshot(home.path)
    r = run_dsdt("run", "--workers", workers, "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO)
    assert_user_error(r, "--workers takes a number from 1 to 64")
    assert snapshot(home.path) == before


def test_a_network_mode_naming_a_docker_network_puts_the_container_on_it(file_remote, home, monkeypatch):
    """An internal network (no route anywhere: the file:// remote is a mount, nothing is sent over it)."""
    import docker

    client = docker.from_env()
    network = client.networks.create(f"disdat-test-{uuid.uuid4().hex[:8]}", internal=True)
    try:
        monkeypatch.setenv("DISDAT_RUN_NETWORK_MODE", network.name)
        proc = subprocess.Popen([DSDT, "run", "-", "nap", "slow.Sleep", "--seconds", "3"], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        container = running_container(proc)
        assert container.attrs["HostConfig"]["NetworkMode"] == network.name
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [network.name]
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        network.remove()


def test_the_users_luigi_cfg_wins_over_the_package_defaults(file_remote, home, tmp_path):
    """disdat-luigi gives Luigi its own [retcode] and [worker] defaults unless luigi.cfg sets them: a user's
    [retcode] task_failed = 7 is the exit code of a failed RunPipe, not ours (30)."""
    cfg = tmp_path / "user.cfg"
    cfg.write_text(Path(REPO / "luigi.cfg").read_text() + "\n[retcode]\ntask_failed = 7\n")
    luigi = str(Path(sys.executable).parent / "luigi")
    args = [luigi, "--module", "disdat_luigi", "RunPipe", "--input-bundle", "-", "--output-bundle", "bad",
            "--pipe-cls", "unstorable.ReturnsASocket", "--local-scheduler"]
    mine = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=150,
                          env={**os.environ, "LUIGI_CONFIG_PATH": str(cfg)})
    assert mine.returncode == 7, mine.stderr[-2000:]
    ours = subprocess.run([*args[:7], "bad2", *args[8:]], cwd=REPO, capture_output=True, text=True, timeout=150)
    assert ours.returncode == 30, ours.stderr[-2000:]
