"""dsdt run and luigi --module disdat_luigi RunPipe on the real Docker engine, with S3 and file:// remotes."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import (DSDT, IMAGE_PREFIX, REPO, TEST_PIPES, assert_user_error, docker_containers, nodes_started,
                      run_dsdt, second_context, snapshot)
from disdat_luigi.remotes import open_remote

LUIGI = str(Path(sys.executable).parent / "luigi")


def _texts(cli, tmp_path) -> str:
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("The cat sat on the mat.\nThe end.\n")
    (d / "b.txt").write_text("A cat and a dog.\n")
    uuid = cli("add", "-t", "v:1", "texts", d).out.split()[2]
    assert cli("commit", "texts").code == 0
    return uuid


@pytest.fixture
def texts(home, bound, cli, tmp_path, pipes_image, pipe_root):
    """A committed bundle of text files, in a context bound to a fresh remote of each kind."""
    return _texts(cli, tmp_path)


@pytest.fixture
def file_bound(home, cli, tmp_path):
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    return url


@pytest.fixture
def file_texts(home, file_bound, cli, tmp_path, pipes_image, pipe_root):
    """The same, on a file:// remote only (for what does not depend on the remote's kind)."""
    return _texts(cli, tmp_path)


def _run(*args, **kw):
    return run_dsdt("run", *args, cwd=REPO, **kw)


def _remote_keys(url):
    remote = open_remote(url, "shared")
    try:
        return sorted(remote.store.list(""))
    finally:
        remote.close()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run_record(url, node_id):
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        return RunStore(remote).record(node_id)


def test_run_pushes_runs_and_pulls(home, bound, texts):
    r = _run("-v", "-ot", "stage:test", "texts", "counts", "wordcount.WordCount", "--min-len", "3", "--top", "2")
    assert r.code == 0, r.err
    b = home.context().latest("counts")
    assert b.committed and b.tags == {"stage": "test"}
    data = b.data()
    assert data["total_words"] == 10 and data["top"] == [["the", 3], ["cat", 2]]
    assert open(data["counts_csv"]).readline().strip() == "word,count"
    lineage = b.manifest.lineage
    assert lineage["pipe"] == "wordcount.WordCount" and lineage["params"] == {"min_len": "3", "top": "2"}
    assert lineage["inputs"] == {"pipeline_input": texts} and lineage["image_id"].startswith("sha256:")
    record = _run_record(bound, lineage["run_id"])
    assert record.status == "succeeded" and record.output_uuid == b.uuid
    assert f"context/shared/bundles/{texts}.json" in _remote_keys(bound)  # the input was pushed
    assert docker_containers() == []  # removed after the run
    assert re.search(r"\[wordcount\.WordCount [0-9a-f]{12}\] counted 10 words", r.err)  # streamed into Luigi's log (-v)


def test_rerun_is_a_noop_and_force_runs_again(home, bound, texts):
    args = ("texts", "counts", "wordcount.WordCount", "--min-len", "3")
    assert _run(*args).code == 0
    first = home.context().latest("counts")
    record = _run_record(bound, first.manifest.lineage["run_id"])
    again = _run(*args)
    assert again.code == 0 and nodes_started(again.err) == 0 and "1 done already" in again.err
    assert [row.uuid for row in home.context().find(["counts"])] == [first.uuid]
    assert _run_record(bound, first.manifest.lineage["run_id"]) == record  # nothing ran
    forced = _run("--force", *args)
    assert forced.code == 0 and nodes_started(forced.err) == 1
    versions = home.context().find(["counts"])
    assert len(versions) == 2 and versions[0].uuid != first.uuid
    assert home.context().latest("counts").data()["total_words"] == 10


def test_input_version_by_tag(home, file_bound, file_texts, cli, tmp_path):
    d = tmp_path / "newer"
    d.mkdir()
    (d / "z.txt").write_text("zebra zebra zebra\n")
    cli("add", "-t", "v:2", "texts", d)
    cli("commit", "texts")
    assert _run("-it", "v:1", "texts", "old", "wordcount.WordCount").code == 0
    assert _run("texts", "new", "wordcount.WordCount").code == 0
    assert home.context().latest("old").manifest.lineage["inputs"]["pipeline_input"] == file_texts
    assert home.context().latest("new").data()["top"] == [["zebra", 3]]


def test_luigi_module_runpipe_gives_the_same_result(home, file_bound, file_texts):
    assert _run("texts", "counts", "wordcount.WordCount", "--min-len", "3").code == 0
    proc = subprocess.run([LUIGI, "--module", "disdat_luigi", "RunPipe", "--input-bundle", "texts",
                           "--output-bundle", "counts-luigi", "--pipe-cls", "wordcount.WordCount",
                           "--pipe-params", '{"min_len": 3}', "--local-scheduler"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ours, theirs = (home.context().latest(n).data() for n in ("counts", "counts-luigi"))
    assert {k: v for k, v in ours.items() if k != "counts_csv"} == {k: v for k, v in theirs.items()
                                                                   if k != "counts_csv"}
    assert open(ours["counts_csv"]).read() == open(theirs["counts_csv"]).read()


def test_luigi_exits_non_zero_when_the_container_fails(home, file_bound, file_texts):
    proc = subprocess.run([LUIGI, "--module", "disdat_luigi", "RunPipe", "--input-bundle", "texts",
                           "--output-bundle", "bad", "--pipe-cls", "wordcount.WordCount",
                           "--pipe-params", '{"min_len": 0}', "--local-scheduler"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "min_len must be at least 1" in proc.stderr


def test_a_failing_pipe_fails_the_run_and_leaves_nothing(home, bound, texts):
    r = _run("texts", "bad", "wordcount.WordCount", "--min-len", "0")
    assert r.code == 1
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("dsdt: error: the run failed: wordcount.WordCount failed: ValueError: min_len must be")
    assert "--- last container log lines ---" in r.err and 'raise ValueError(f"min_len' in r.err
    assert home.context().find(["bad"]) == []
    assert not any("/names/bad/" in k for k in _remote_keys(bound))
    runs = [k for k in _remote_keys(bound) if "/runs/" in k]
    assert len(runs) == 1 and _run_record(bound, Path(runs[0]).stem).status == "failed"
    assert docker_containers() == []


def test_upstream_pipes_and_no_input_in_one_container(home, file_bound, file_texts, pipe_root, test_pipes_image,
                                                      cli):
    pipe_root(TEST_PIPES)
    r = _run("-", "total", "chain.Total", "--extra", "2")
    assert r.code == 0, r.err
    assert home.context().latest("total").data() == {"total": 22, "seed_type": "int",
                                                     "note": "written through a LocalTarget",
                                                     "same_file_twice": True}
    keys = _remote_keys(file_bound)
    assert any("/names/notes/" in k for k in keys) and any("/names/total-seed/" in k for k in keys)
    other = second_context(home, cli, file_bound)
    assert cli("pull", "notes").code == 0
    assert other.latest("notes").path("notes/first.txt").read_text() == "written through a LocalTarget\n"


def test_two_upstream_example_pipe_in_a_container(home, file_bound, file_texts):
    assert _run("texts", "report", "report.TextReport").code == 0
    assert home.context().latest("report").data()["top_words"] == ["the", "cat", "sat", "mat", "end"]


def test_dataframe_output_from_a_container(home, file_bound, pipes_image, pipe_root, cli, tmp_path):
    import pandas as pd

    d = tmp_path / "sales"
    d.mkdir()
    (d / "jan.csv").write_text("region,amount\neu,3\nus,4\neu,5\n")
    cli("add", "sales", d)
    cli("commit", "sales")
    assert _run("sales", "totals", "sales.GroupBy").code == 0
    frame = home.context().latest("totals").data()
    pd.testing.assert_frame_equal(frame, pd.DataFrame({"region": ["eu", "us"], "sum": [8, 4], "count": [2, 1]}))


def _wait_for_container(timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [c for c in docker_containers() if c.status == "running"]
        if running and b"sleeping" in running[0].logs():
            return running[0]
        time.sleep(0.2)
    raise AssertionError("the container never started")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_and_removes_the_container(home, file_bound, file_texts, pipe_root, test_pipes_image,
                                                   sig):
    """Ctrl-C (and SIGTERM, which unwinds the same way) exits 130 with one last line and no traceback; the
    node is recorded interrupted, its container is gone and no output came back."""
    pipe_root(TEST_PIPES)
    proc = subprocess.Popen([DSDT, "run", "-", "nap", "slow.Sleep", "--seconds", "300"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        container = _wait_for_container()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.splitlines()[-1] == "dsdt: interrupted", err
    assert "Traceback" not in err and out == ""
    runs = [k for k in _remote_keys(file_bound) if "/runs/" in k and k.endswith(".json")]
    assert len(runs) == 1 and Path(runs[0]).stem == container.labels["disdat.node_id"], runs
    record = _run_record(file_bound, Path(runs[0]).stem)
    assert record.status == "interrupted" and record.output_uuid is None
    assert record.error == "interrupted by its client (Ctrl-C or SIGTERM)"
    assert docker_containers() == []
    assert home.context().find(["nap"]) == [] and list(home.context().tmp.iterdir()) == []


def test_timeout_stops_the_container(home, file_bound, file_texts, pipe_root, test_pipes_image, monkeypatch):
    pipe_root(TEST_PIPES)
    monkeypatch.setenv("DISDAT_RUN_TIMEOUT", "3")
    start = time.monotonic()
    r = _run("-", "nap", "slow.Sleep", "--seconds", "120")
    assert r.code == 1 and "ran longer than its timeout of 3 s" in r.err
    assert time.monotonic() - start < 60 and docker_containers() == []


def _bare_mounts(image: str) -> set:
    """The mount points a container of this image gets from Docker alone (no volume asked for; Docker's init,
    as every node's container has, is mounted by Docker itself)."""
    proc = subprocess.run(["docker", "run", "--rm", "--init", "--network", "host", "--entrypoint", "cat", image,
                           "/proc/self/mounts"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return {line.split()[1] for line in proc.stdout.splitlines()}


def test_what_the_container_gets(home, bound, texts, pipe_root, test_pipes_image):
    """Credentials by environment only; of the host's files, a file:// remote's directory alone (compared with
    a bare container of the same image, so that a mount of /, /tmp, /root or ~/.aws shows); the host user; no
    secrets stored."""
    pipe_root(TEST_PIPES)
    r = _run("-", "env", "envcheck.Environment")
    assert r.code == 0, r.err
    env = home.context().latest("env").data()
    assert env["uid"] == os.getuid()
    bare = _bare_mounts(f"{IMAGE_PREFIX}/disdat-envcheck:latest")
    assert {"/", "/proc", "/etc/hosts"} <= bare
    extra = set(env["mounts"].split()) - bare
    if bound.startswith("file://"):
        assert extra == {urllib.parse.urlparse(bound).path}
        assert env["access_key_id"] is None and env["secret_sha256"] == _sha("")
    else:
        assert extra == set()
        secret = os.environ["AWS_SECRET_ACCESS_KEY"]
        assert env["access_key_id"] == os.environ["AWS_ACCESS_KEY_ID"] and env["secret_sha256"] == _sha(secret)
        assert env["endpoint_s3"] == os.environ["AWS_ENDPOINT_URL"]
        remote = open_remote(bound, "shared")
        stored = b"".join(remote.store.get_bytes(k) for k in remote.store.list("context/"))
        remote.close()
        assert secret.encode() not in stored  # not in manifests nor run records
        assert secret not in r.err and secret not in r.out  # not in task parameters or logs


def test_network_mode_setting(home, file_bound, file_texts, pipe_root, test_pipes_image, monkeypatch):
    pipe_root(TEST_PIPES)
    monkeypatch.setenv("DISDAT_RUN_NETWORK_MODE", "none")  # a file:// remote needs no network at all
    assert _run("-", "env", "envcheck.Environment").code == 0
    assert home.context().latest("env").data()["interfaces"] == ["lo"]


def test_session_token_gives_only_temporary_credentials(home, cli, tmp_path, pipes_image, pipe_root,
                                                        test_pipes_image, moto_url, monkeypatch):
    """STS is AWS's: moto's server stands in for it and for S3 (the only mocked services here). moto's S3 is
    the remote, because SeaweedFS would refuse credentials that moto issued."""
    import boto3

    pipe_root(TEST_PIPES)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAHOSTLONGTERMKEY0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-long-term-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    boto3.client("s3").create_bucket(Bucket="sts-remote")
    assert cli("remote", "shared", "s3://sts-remote/r").code == 0
    r = _run("--use-aws-session-token", "900", "-", "env", "envcheck.Environment")
    assert r.code == 0, r.err
    env = home.context().latest("env").data()
    assert env["access_key_id"] not in (None, "AKIAHOSTLONGTERMKEY0")
    assert env["secret_sha256"] != _sha("host-long-term-secret") and env["has_session_token"]
    assert "host-long-term-secret" not in r.err + r.out


def test_central_scheduler_shows_every_step(home, file_bound, file_texts, luigid_url, tmp_path, monkeypatch):
    port = urllib.parse.urlparse(luigid_url).port
    cfg = tmp_path / "central.cfg"
    cfg.write_text(f"[core]\nscheduler_host = 127.0.0.1\nscheduler_port = {port}\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(cfg))
    monkeypatch.setenv("DISDAT_RUN_LOCAL_SCHEDULER", "false")
    r = _run("texts", "central", "wordcount.WordCount", "--min-len", "3")
    assert r.code == 0, r.err
    query = urllib.parse.quote(json.dumps({"status": "DONE"}))
    with urllib.request.urlopen(f"{luigid_url}/api/task_list?data={query}", timeout=10) as resp:
        tasks = json.loads(resp.read())["response"]
    families = {t["name"] for t in tasks.values()}
    assert {"RunPipe", "PushInput", "wordcount.WordCount", "PullOutput"} <= families   # the node: by its pipe
    execute = next(t for t in tasks.values() if t["name"] == "wordcount.WordCount" and
                   t["params"]["output_bundle"] == "central")
    assert execute["params"]["pipe_cls"] == "wordcount.WordCount"
    counts = home.context().latest("central")
    assert execute["status_message"] == f"succeeded: central {counts.uuid}"
    # (that no credential reaches the scheduler is tests/scheduler/test_dag.py's, with an S3 remote's keys)


def test_no_push_input_uses_the_remote_copy(home, file_bound, file_texts, cli):
    assert cli("push", "texts").code == 0
    assert _run("--no-push-input", "texts", "counts", "wordcount.WordCount").code == 0
    assert home.context().latest("counts").data()["total_words"] == 13


def test_run_bad_inputs_give_one_line_and_change_nothing(home, bound, texts, cli, tmp_path, monkeypatch):
    cli("add", "draft", tmp_path / "texts")
    before = (snapshot(home.path), _remote_keys(bound))
    cases = [
        (("texts", "out", "nosuch.Pipe"), {}, "unknown pipe class nosuch.Pipe"),
        (("missing", "out", "wordcount.WordCount"), {}, "no bundle named missing"),
        (("draft", "out", "wordcount.WordCount"), {}, "is not committed"),
        (("texts", "out", "wordcount.WordCount", "--nope", "1"), {}, "no parameter --nope"),
        (("-ot", "a:b:c", "texts", "out", "wordcount.WordCount"), {}, "bad tag"),
        (("--no-push-input", "texts", "out", "wordcount.WordCount"), {}, "is not on the remote"),
        (("--backend", "AWSBatch", "texts", "out", "wordcount.WordCount"), {},
         "no AWS Batch job queue" if bound.startswith("s3") else "AWS Batch jobs run on other machines and cannot "
                                                                  "reach the remote file://"),
        (("texts", "out", "wordcount.WordCount"), {"DISDAT_DOCKERIZE_REPOSITORY_PREFIX": "elsewhere"},
         "image elsewhere/disdat-wordcount:latest does not exist: run `dsdt dockerize"),
        (("texts", "out", "wordcount.WordCount"), {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
         "cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
    ]
    for args, env, fragment in cases:
        assert_user_error(_run(*args, env=env), fragment)
    with monkeypatch.context() as m:
        m.setenv("DISDAT_HOME", str(tmp_path / "unbound"))
        cli("init")
        cli("context", "lonely")
        assert_user_error(_run("-", "out", "wordcount.WordCount"), "has no remote")
    assert (snapshot(home.path), _remote_keys(bound)) == before
    assert docker_containers() == []
