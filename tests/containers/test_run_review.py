"""What a hostile review of the run machinery found, each kept from coming back: a crafted run record that
named another container, clean-ups of detached or foreign records, Ctrl-C with several workers, a container
that cannot start, succeeded records whose output is gone or was made by another node, pending markers for
another name."""
from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import (DSDT, REPO, assert_user_error, docker_containers, run_dsdt,
                      run_record as _record, running_container as _running_container, wait_until as _wait_until)
from disdat_luigi.remotes import open_remote
from disdat_luigi.runs.store import RunStore

pytestmark = pytest.mark.timeout(120)
NODE = "deadbeef" * 4


def _craft(url: str, key: str, value) -> None:
    with open_remote(url, "shared") as remote:
        body = value if isinstance(value, bytes) else json.dumps(value).encode()
        remote.store.put_bytes(f"context/shared/{key}", body)


def _running_record(job_id: str, backend: str = "Local", node: str = NODE, name: str = "victim") -> dict:
    return {"format": 1, "node_id": node, "run_id": node, "status": "running", "pipe_cls": "slow.Sleep",
            "params": {}, "bundle_name": name, "backend": backend, "image": "sha256:x",
            "started": "2026-01-01T00:00:00.000000Z", "job_id": job_id, "attempt": 1}


def test_a_record_naming_another_container_cannot_make_clean_touch_it(file_remote, docker_ready):
    import docker

    from conftest import _TEST_LABEL

    victim = docker.from_env().containers.run(docker_ready, ["sleep", "120"], name=f"victim-{_TEST_LABEL}",
                                              labels={"disdat.test": _TEST_LABEL}, detach=True, network_mode="none")
    try:
        _craft(file_remote, f"runs/{NODE}.json", _running_record(victim.name))
        _craft(file_remote, f"leases/{NODE}.json", {"owner": "x", "host": "elsewhere/x", "pid": 1,
                                                    "pid_start": None, "renewed": 0.0})
        r = run_dsdt("runs", "--clean")
        assert r.code == 0 and r.out == f"run {NODE[:12]} (slow.Sleep -> victim): recorded interrupted\n", r
        victim.reload()
        assert victim.status == "running"  # untouched: it carries no label of this node and remote
        with open_remote(file_remote, "shared") as remote:
            assert RunStore(remote).log(NODE) is None  # and its log was not copied to the shared remote
        _craft(file_remote, f"runs/{NODE}.json", _running_record("../images/x"))  # a path, not a job id
        r = run_dsdt("runs")
        assert r.code == 0 and f"({NODE[:12]}: refused, " in r.out and "is not a job id" in r.out
    finally:
        victim.remove(force=True)


def test_clean_skips_records_of_backends_it_cannot_use(file_remote):
    _craft(file_remote, f"runs/{NODE}.json", _running_record("some-job", backend="Bogus"))
    r = run_dsdt("runs", "--clean")
    assert r.code == 0, r
    assert r.out.splitlines()[0] == f"run {NODE[:12]}: skipped (unknown backend 'Bogus': use one of Local, AWSBatch " \
                                    f"([run] backend))"


def test_ctrl_c_with_two_workers_removes_the_container(file_remote):
    proc = subprocess.Popen([DSDT, "run", "--workers", "2", "-", "nap", "slow.Sleep", "--seconds", "60"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        container = _running_container(proc)
        node = container.labels["disdat.node_id"]
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "dsdt: interrupted"
    assert _wait_until(lambda: docker_containers() == [], 20), [c.name for c in docker_containers()]
    assert _record(file_remote, node).status == "interrupted"


def test_a_container_that_cannot_start_is_one_line_and_leaves_nothing(file_remote, monkeypatch):
    monkeypatch.setenv("DISDAT_RUN_NETWORK_MODE", "container:no-such-container")
    r = run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO)
    assert r.code == 1
    last = r.err.strip().splitlines()[-1]
    assert last == ("dsdt: error: the run failed: the Docker engine could not start the container: No such "
                    "container: no-such-container"), last
    assert docker_containers() == []
    with open_remote(file_remote, "shared") as remote:
        (node,) = RunStore(remote).node_ids()
    record = _record(file_remote, node)
    assert record.status == "failed" and record.error.startswith("the container could not run: ")


def test_a_succeeded_record_whose_output_is_gone_runs_again(file_remote, home):
    first = run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO)
    assert first.code == 0, first.err
    with open_remote(file_remote, "shared") as remote:
        (node,) = RunStore(remote).node_ids()
        output = RunStore(remote).record(node).output_uuid
        remote.store.delete(remote.manifest_key(output))  # somebody removed the output from the remote
    home.context().remove([output])
    again = run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO)
    assert again.code == 0, again.err
    record = _record(file_remote, node)
    assert record.attempt == 2 and record.output_uuid != output and home.context().latest("nap").data() == 0.0


def test_a_succeeded_record_naming_another_nodes_bundle_is_not_believed(file_remote, home):
    assert run_dsdt("run", "-", "other", "slow.Sleep", "--seconds", "1", cwd=REPO).code == 0
    other = home.context().latest("other").uuid
    crafted = run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO)  # learn the node id
    assert crafted.code == 0
    node = home.context().latest("nap").manifest.lineage["processing_id"]
    record = dict(_running_record(None, node=node, name="nap"), status="succeeded", output_uuid=other,
                  stopped="2026-01-01T00:00:01.000000Z")
    _craft(file_remote, f"runs/{node}.json", record)
    home.context().remove([home.context().latest("nap").uuid])
    again = run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO)
    assert again.code == 0, again.err
    assert home.context().latest("nap").data() == 0.0 and _record(file_remote, node).output_uuid != other


def test_a_pending_marker_for_another_name_is_ignored(file_remote, home, cli):
    assert run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO).code == 0
    node = home.context().latest("nap").manifest.lineage["processing_id"]
    _craft(file_remote, "pending/other.json", {"nodes": [node]})  # claims the output of 'other' is node's
    assert_user_error(run_dsdt("pull", "other"), "no bundle named other on the remote")
    assert home.context().find(["other"]) == []


@pytest.mark.parametrize("own_run", [True, False])
def test_a_run_whose_root_has_no_job_yet_is_not_ready_and_no_earlier_version_is_pulled_meanwhile(
        file_remote, home, own_run):
    """A waiting client holds a wide join (the run's root) back until its upstream jobs are done, so the run's
    pending marker names a root without a record, and the client may be killed meanwhile: `dsdt pull` says the
    run is not ready instead of handing out the earlier version. A marker whose upstream records are another
    run's (their run id is not the root's) is not believed: the earlier version is pulled."""
    assert run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO).code == 0
    earlier = home.context().latest("nap").uuid
    home.context().remove([earlier])
    root, part = "ab" * 16, "cd" * 16
    _craft(file_remote, f"runs/{part}.json", dict(_running_record(None, node=part, name="nap-part"),
                                                   run_id=root if own_run else NODE,
                                                   started="2030-01-01T00:00:00.000000Z"))
    _craft(file_remote, "pending/nap.json", {"nodes": [part, root]})
    pulled = run_dsdt("pull", "nap")
    if own_run:
        assert_user_error(pulled, "nap is not ready yet", f"the last node of its run ({root[:12]}) has no job yet")
        assert home.context().find(["nap"]) == []
    else:
        assert pulled.code == 0, pulled.err
        assert home.context().latest("nap").uuid == earlier


def test_a_crafted_succeeded_root_cannot_hand_out_another_bundle_under_the_name(file_remote, home):
    """A pending marker of `nap` whose root record says succeeded with the output of another pipe (bundle
    `other`): `dsdt pull nap` does not believe it and pulls nap's own latest version."""
    assert run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO).code == 0
    assert run_dsdt("run", "-", "other", "slow.Sleep", "--seconds", "1", cwd=REPO).code == 0
    nap, other = home.context().latest("nap").uuid, home.context().latest("other").uuid
    home.context().remove([nap, other])
    root = "ef" * 16
    _craft(file_remote, f"runs/{root}.json", dict(_running_record(None, node=root, name="nap"), status="succeeded",
                                                   output_uuid=other, started="2030-01-01T00:00:00.000000Z",
                                                   stopped="2030-01-01T00:00:01.000000Z"))
    _craft(file_remote, "pending/nap.json", {"nodes": [root]})
    pulled = run_dsdt("pull", "nap")
    assert pulled.code == 0, pulled.err
    assert home.context().latest("nap").uuid == nap and home.context().find(["other"]) == []
