"""A run has one owner, survives its client being killed, and its containers get least privilege.

* `kill -9` of `dsdt run` while it pushes the input, while the container runs and while it pulls the output
  (each moment made deterministic by the fault hook or by the container's own log line), then the same
  `dsdt run` again: it exits 0, the remote holds exactly one output version, no second container ran for the
  node at the same time, and no container is left.
* Two identical runs at once, on the local scheduler and on a real luigid: both succeed, one container runs.
* `dsdt runs --clean` removes what a dead client left (its container, its lease) and leaves live runs alone.
* A file:// run's container gets no AWS credentials; an S3 run's long-lived keys are nowhere in
  `docker inspect`; the network mode is Docker's default unless set.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import threading
import time
from urllib.parse import urlparse

import pytest

from conftest import (DSDT, REPO, TEST_PIPES, docker_containers, new_bucket, nodes_started,
                      run_dsdt, run_record as _record, running_container as _running_container,
                      wait_until as _wait_until)
from disdat_luigi.remotes import open_remote

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def texts(home, cli, tmp_path, file_remote):
    d = tmp_path / "texts"
    d.mkdir()
    for i in range(3):
        (d / f"t{i}.txt").write_text(f"text number {i}\n")
    r = cli("add", "texts", d)
    assert r.code == 0 and cli("commit", "texts").code == 0
    return r.out.split()[2]


def _run(*args, **kw):
    return run_dsdt("run", *args, cwd=REPO, timeout=100, **kw)


def _popen(*args, env=None):
    return subprocess.Popen([DSDT, "run", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, **(env or {})))


def _keys(url, prefix=""):
    with open_remote(url, "shared") as remote:
        return sorted(remote.store.list(prefix))


def _versions(url, name):
    """The output versions on the remote: the name markers under context/shared/names/<name>/."""
    return _keys(url, f"context/shared/names/{name}/")


def _node_ids(url):
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        return RunStore(remote).node_ids()


class Sampler(threading.Thread):
    """Samples this test's containers while runs go on: the most running at once, and every one seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.max_running = 0
        self.seen = set()
        self.samples = 0
        self.stopping = threading.Event()

    def run(self):
        import docker

        while not self.stopping.is_set():
            try:
                containers = docker_containers()
            except docker.errors.NotFound:  # a container removed while it was being listed: look again
                continue
            self.samples += 1
            self.max_running = max(self.max_running, sum(c.status == "running" for c in containers))
            self.seen |= {c.name for c in containers}
            self.stopping.wait(0.1)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join(10)


def _one_output(home, url, name):
    assert len(_versions(url, name)) == 1, _versions(url, name)
    assert len(home.context().find([name])) == 1
    assert list(home.context().tmp.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# kill -9 of the client, then the same run again
# ---------------------------------------------------------------------------------------------------

def test_kill_9_while_pushing_the_input_then_rerun(home, file_remote, texts, tmp_path):
    hit = tmp_path / "fault-hit"
    proc = _popen("texts", "out", "passthrough.PassThrough",
                  env={"DISDAT_FAULT": "put:packs/:1", "DISDAT_FAULT_SIGNAL": str(hit)})
    try:
        assert _wait_until(hit.exists, 60), "the push never reached its first pack"
    finally:
        proc.kill()
        proc.wait()
    assert not any(k.startswith("context/") for k in _keys(file_remote)), "the input is on the remote"
    assert docker_containers() == []
    r = _run("texts", "out", "passthrough.PassThrough")
    assert r.code == 0, r.err
    assert nodes_started(r.err) == 1
    _one_output(home, file_remote, "out")
    (node,) = _node_ids(file_remote)
    record = _record(file_remote, node)
    assert (record.status, record.attempt, record.inputs) == ("succeeded", 1, {"pipeline_input": texts})
    assert docker_containers() == []


def test_kill_9_while_the_container_runs_then_rerun(home, file_remote):
    proc = _popen("-", "nap", "slow.Sleep", "--seconds", "3")
    try:
        first = _running_container(proc)
    finally:
        proc.kill()
        proc.wait()
    node = first.labels["disdat.node_id"]
    assert {k: first.labels[k] for k in ("disdat.run_id", "disdat.pipe_cls")} == {"disdat.run_id": node,
                                                                                  "disdat.pipe_cls": "slow.Sleep"}
    # its client is gone: the container notices (stdin closed) and stops by itself
    assert _wait_until(lambda: all(c.status == "exited" for c in docker_containers()), 15), \
        [(c.name, c.status) for c in docker_containers()]
    record = _record(file_remote, node)
    assert record.status == "interrupted" and record.output_uuid is None
    assert f"context/shared/leases/{node}.json" in _keys(file_remote)   # the dead client's lease
    with Sampler() as sampler:
        r = _run("-", "nap", "slow.Sleep", "--seconds", "3")
    assert r.code == 0, r.err
    assert sampler.samples > 10 and sampler.seen, "the sampler never saw the run's container"
    assert sampler.max_running == 1 and first.name not in {c.name for c in docker_containers()}
    assert docker_containers() == []
    _one_output(home, file_remote, "nap")
    record = _record(file_remote, node)
    assert (record.status, record.attempt) == ("succeeded", 2)
    assert _free(file_remote, node)  # released (or gone): nobody holds the node


def test_kill_9_while_pulling_the_output_then_rerun(home, file_remote, tmp_path):
    hit = tmp_path / "fault-hit"
    proc = _popen("-", "nap", "slow.Sleep", "--seconds", "0.5",
                  env={"DISDAT_FAULT": "get:context/shared/bundles/:1", "DISDAT_FAULT_SIGNAL": str(hit)})
    try:
        assert _wait_until(hit.exists, 60), "the run never reached the pull of its output"
    finally:
        proc.kill()
        proc.wait()
    (node,) = _node_ids(file_remote)
    assert _record(file_remote, node).status == "succeeded"
    assert home.context().find(["nap"]) == [] and docker_containers() == []
    r = _run("-", "nap", "slow.Sleep", "--seconds", "0.5")
    assert r.code == 0, r.err
    assert nodes_started(r.err) == 0          # the node is complete: no second container
    _one_output(home, file_remote, "nap")
    assert _record(file_remote, node).attempt == 1
    assert docker_containers() == []


# ---------------------------------------------------------------------------------------------------
# two identical runs at once
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", ["local", "central"])
def test_two_identical_runs_at_once_run_one_container(home, file_remote, scheduler, request):
    extra = [] if scheduler == "local" else ["--scheduler-url", request.getfixturevalue("luigid_url")]
    args = [*extra, "-", "nap", "slow.Sleep", "--seconds", "4"]
    with Sampler() as sampler:
        procs = [_popen(*args) for _ in range(2)]
        outs = [p.communicate(timeout=100) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert sampler.samples > 10 and sampler.max_running == 1 and len(sampler.seen) == 1, (sampler.max_running,
                                                                                          sampler.seen)
    _one_output(home, file_remote, "nap")
    (node,) = _node_ids(file_remote)
    record = _record(file_remote, node)
    assert (record.status, record.attempt) == ("succeeded", 1)
    uuids = {re.search(r"^nap (\S+) is in context test", out, re.M).group(1) for out, _ in outs}
    assert uuids == {record.output_uuid}
    assert docker_containers() == []


# ---------------------------------------------------------------------------------------------------
# dsdt runs --clean
# ---------------------------------------------------------------------------------------------------

def test_runs_clean_removes_what_a_dead_client_left(home, file_remote):
    proc = _popen("-", "nap", "slow.Sleep", "--seconds", "30")
    try:
        first = _running_container(proc)
    finally:
        proc.kill()
        proc.wait()
    node = first.labels["disdat.node_id"]
    assert _wait_until(lambda: all(c.status == "exited" for c in docker_containers()), 15), \
        [(c.name, c.status) for c in docker_containers()]
    r = run_dsdt("runs", "--clean")
    assert r.code == 0 and r.err == "", r
    assert r.out == f"run {node[:12]} (slow.Sleep -> nap): cleaned, removed {first.name}\n"
    assert docker_containers() == []
    assert _free(file_remote, node)  # released (or gone): nobody holds the node
    assert _record(file_remote, node).status == "interrupted"
    assert "sleeping 30.0 s" in run_dsdt("logs", node[:12]).out      # its log was kept before it was removed
    again = run_dsdt("runs", "--clean")
    assert (again.code, again.out) == (0, "nothing to clean: no run whose client died\n")
    assert re.search(rf"^{node[:12]}\s+1\s+slow\.Sleep\s+interrupted\s", run_dsdt("runs").out, re.M)


def _lease(url, node):
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        held = RunStore(remote).lease(node)
    return held[0] if held else None


def _free(url, node) -> bool:
    """Nobody holds the node's lease: there is none, or it was released."""
    held = _lease(url, node)
    return held is None or held.free


def test_a_live_run_holds_a_renewed_lease_and_runs_clean_leaves_it_alone(home, file_remote):
    from disdat_luigi.runs.lease import HEARTBEAT

    proc = _popen("-", "nap", "slow.Sleep", "--seconds", str(HEARTBEAT + 3))
    try:
        running = _running_container(proc)
        node = running.labels["disdat.node_id"]
        assert _record(file_remote, node).status == "running"
        first = _lease(file_remote, node)
        assert first.pid == proc.pid and not first.stale()
        r = run_dsdt("runs", "--clean")
        assert (r.code, r.out) == (0, "nothing to clean: no run whose client died\n")
        assert re.search(rf"^{node[:12]}\s+1\s+slow\.Sleep\s+running\s", run_dsdt("runs").out, re.M)
        assert _wait_until(lambda: (_lease(file_remote, node) or first).renewed > first.renewed, HEARTBEAT + 5), \
            "the lease was never renewed"
        running.reload()
        assert running.status == "running"
        _, err = proc.communicate(timeout=100)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert _free(file_remote, node)
    _one_output(home, file_remote, "nap")
    assert docker_containers() == []


# ---------------------------------------------------------------------------------------------------
# a lease held on another machine
# ---------------------------------------------------------------------------------------------------

def _planned_node(*pipe_args):
    from disdat_luigi.chain.run import RunOptions, make_task

    return make_task(RunOptions(input_bundle=None, output_bundle="nap", pipe_cls="slow.Sleep",
                                pipe_args=list(pipe_args))).plan().run_id


def _foreign_lease(url, node, age):
    from disdat_luigi.runs.lease import Lease
    from disdat_luigi.runs.store import RunStore

    lease = Lease(owner="f" * 32, host="elsewhere/0123456789ab", pid=4242, pid_start="1", renewed=time.time() - age)
    with open_remote(url, "shared") as remote:
        assert RunStore(remote).take(node, lease) is not None


def _status_message(luigid_url, node):
    import urllib.parse
    import urllib.request

    query = urllib.parse.quote(json.dumps({"status": "RUNNING", "upstream_status": "", "search": node[:16]}))
    with urllib.request.urlopen(f"{luigid_url}/api/task_list?data={query}", timeout=5) as resp:
        tasks = json.loads(resp.read())["response"]
    return [t.get("status_message") for t in tasks.values() if t["name"] == "slow.Sleep"]


def test_a_run_waits_for_a_live_lease_held_on_another_machine(home, file_remote, luigid_url):
    node = _planned_node("--seconds", "1")
    _foreign_lease(file_remote, node, age=0)
    proc = _popen("--scheduler-url", luigid_url, "-", "nap", "slow.Sleep", "--seconds", "1")
    try:
        waiting = "waiting for the same node, run by pid 4242 on elsewhere/0123456789ab"
        def waits():
            if proc.poll() is not None:
                raise AssertionError(f"dsdt run of {node} ended instead of waiting: {proc.communicate()}")
            return any(waiting in (message or "") for message in _status_message(luigid_url, node))

        assert _wait_until(waits, 60), "the run did not wait"
        assert docker_containers() == []
        with open_remote(file_remote, "shared") as remote:   # the other machine's run ends without a result
            remote.store.delete(f"context/shared/leases/{node}.json")
        _, err = proc.communicate(timeout=100)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert _record(file_remote, node).status == "succeeded"
    _one_output(home, file_remote, "nap")
    assert docker_containers() == []


def test_a_lease_whose_heartbeat_stopped_on_another_machine_is_taken_over(home, file_remote):
    from disdat_luigi.runs.lease import LEASE_TTL

    node = _planned_node("--seconds", "1")
    _foreign_lease(file_remote, node, age=LEASE_TTL + 5)
    r = _run("-", "nap", "slow.Sleep", "--seconds", "1")
    assert r.code == 0, r.err
    record = _record(file_remote, node)
    assert record.status == "succeeded"
    assert _free(file_remote, node)
    _one_output(home, file_remote, "nap")
    assert docker_containers() == []


@pytest.mark.parametrize("how", ["runs --clean", "run"])
def test_a_dead_run_on_one_remote_is_cleaned_without_touching_another_remotes_live_container(
        home, file_remote, tmp_path, how):
    """Node ids do not name the remote: the same pipe, parameters and image make the same node on two remotes
    (two users of one machine, say). Cleaning up after a dead client of remote B, by `dsdt runs --clean` or by
    the takeover of the next `dsdt run`, must not stop the container that a live client runs for remote A."""
    from disdat_luigi.runs.lease import Lease, host_id
    from disdat_luigi.runs.record import RunRecord
    from disdat_luigi.runs.store import RunStore
    from disdat_luigi.store.manifest import now_utc

    proc = _popen("-", "nap", "slow.Sleep", "--seconds", "8")             # user A, remote A
    try:
        live = _running_container(proc)
        node = live.labels["disdat.node_id"]
        gone = subprocess.Popen(["true"])
        gone.wait()
        url_b = (tmp_path / "remote-b").as_uri()
        with open_remote(url_b, "shared") as remote:                        # user B's client died on that node
            runs = RunStore(remote)
            runs.write(RunRecord(node_id=node, run_id=node, status="running", pipe_cls="slow.Sleep",
                                 params={"seconds": "8.0"}, bundle_name="nap", backend="Local",
                                 image="sha256:" + "0" * 64, started=now_utc(), host=host_id()))
            assert runs.take(node, Lease(owner="b" * 32, host=host_id(), pid=gone.pid, pid_start="1",
                                         renewed=time.time())) is not None
        env_b = {"DISDAT_HOME": str(tmp_path / "home-b")}
        for args in (("init",), ("context", "b"), ("remote", "shared", url_b)):
            assert run_dsdt(*args, env=env_b).code == 0
        if how == "run":
            r = run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "8", env=env_b, cwd=REPO, timeout=100)
        else:
            r = run_dsdt("runs", "--clean", env=env_b)
            assert r.out == f"run {node[:12]} (slow.Sleep -> nap): recorded interrupted\n", r.out
        assert r.code == 0, r.err[-2000:]
        _, err = proc.communicate(timeout=100)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert _record(file_remote, node).status == "succeeded"
    _one_output(home, file_remote, "nap")


# ---------------------------------------------------------------------------------------------------
# least privilege
# ---------------------------------------------------------------------------------------------------

def _env_names(container):
    return {item.split("=", 1)[0] for item in container.attrs["Config"]["Env"] or []}


def test_a_file_remotes_container_gets_no_aws_credentials(home, file_remote, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAHOSTLONGTERMKEY0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-long-term-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "host-session-token")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    r = _run("-", "env", "envcheck.Environment")
    assert r.code == 0, r.err
    env = home.context().latest("env").data()
    assert env["access_key_id"] is None and env["endpoint_s3"] is None and env["has_session_token"] is False
    assert env["secret_sha256"] == hashlib.sha256(b"").hexdigest()
    mounts = env["mounts"].split()
    assert urlparse(file_remote).path in mounts and not any(str(home.path) in m for m in mounts)
    assert "host-long-term-secret" not in r.err + r.out
    proc = _popen("-", "nap", "slow.Sleep", "--seconds", "2")
    try:
        container = _running_container(proc)
        assert not any(name.startswith("AWS_") for name in _env_names(container)), _env_names(container)
        assert [m["Source"] for m in container.attrs["Mounts"]] == [urlparse(file_remote).path]
        assert proc.wait(60) == 0
    finally:
        proc.kill()


def test_an_s3_runs_keys_are_not_in_the_containers_configuration(home, cli, s3_env, pipe_root, test_pipes_image):
    pipe_root(TEST_PIPES)
    url = f"s3://{new_bucket(s3_env)}/shared"
    assert cli("remote", "shared", url).code == 0
    proc = _popen("-", "nap", "slow.Sleep", "--seconds", "2")
    try:
        container = _running_container(proc)
        inspected = json.dumps(container.attrs)
        assert s3_env.secret_key not in inspected and s3_env.access_key not in inspected
        names = _env_names(container)
        assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}, names
        assert "AWS_ENDPOINT_URL_S3" in names and container.attrs["Mounts"] == []
        _, err = proc.communicate(timeout=100)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]            # the container had the keys all the same (on its stdin)
    assert len(_versions(url, "nap")) == 1
    with open_remote(url, "shared") as remote:
        stored = b"".join(remote.store.get_bytes(k) for k in remote.store.list("context/"))
    assert s3_env.secret_key.encode() not in stored
    assert docker_containers() == []


@pytest.mark.parametrize("setting, mode", [(None, "default"), ("host", "host"), ("none", "none")])
def test_the_network_mode_is_dockers_default_unless_set(home, file_remote, monkeypatch, setting, mode):
    if setting is None:
        monkeypatch.delenv("DISDAT_RUN_NETWORK_MODE")
    else:
        monkeypatch.setenv("DISDAT_RUN_NETWORK_MODE", setting)
    proc = _popen("-", "nap", "slow.Sleep", "--seconds", "1")
    try:
        container = _running_container(proc)
        assert container.attrs["HostConfig"]["NetworkMode"] == mode
        _, err = proc.communicate(timeout=100)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert docker_containers() == []
