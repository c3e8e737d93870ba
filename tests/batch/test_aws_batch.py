"""The AWSBatch backend against moto's server: AWS Batch, STS, ECR, CloudWatch Logs, IAM and S3 are AWS's, so
moto stands in for them (the only mocked services here), and it really runs every job's container on this
machine's Docker engine. The remote is moto's own S3, where moto's STS credentials are valid, as on a real
account. The registry test pushes for real, to Debian's docker-registry on 127.0.0.1."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import uuid


from conftest import DSDT, LONG_KEY, LONG_SECRET, REPO, TEST_PIPES, TOKEN, assert_user_error
from conftest import batch_records as _records
from conftest import jobs_of as _jobs_of
from conftest import killed_after_submitting as _killed_after_submitting
from conftest import run_batch as _run
from conftest import luigid_nodes, run_dsdt, snapshot, wait_until
from disdat_luigi.remotes import open_remote



def _definitions(batch, family):
    return sorted(d["revision"] for d in batch.describe_job_definitions(
        jobDefinitionName=f"disdat-{family}-job-definition", status="ACTIVE")["jobDefinitions"])


def test_a_waiting_run_streams_the_job_log_and_pulls_the_output(aws, home):
    batch, url = aws
    r = _run("-v", "--wait", *TOKEN, "-", "nap", "slow.Sleep", "--seconds", "1")
    assert r.code == 0, r.err
    assert re.search(r"\[slow\.Sleep [0-9a-f]{12}\] sleeping 1\.0 s", r.err)  # CloudWatch lines in Luigi's log
    assert home.context().latest("nap").data() == 1.0
    record = _records(url)["nap"]
    node = record.node_id[:12]   # the node's event lines: its job's id, its states as the poller saw them, the end
    assert re.search(rf"^\d\d:\d\d:\d\d slow\.Sleep {node} started: job {record.job_id} on AWSBatch$", r.err, re.M)
    assert re.search(rf"^\d\d:\d\d:\d\d slow\.Sleep {node} job RUNNING$", r.err, re.M), r.err
    assert re.search(rf"^\d\d:\d\d:\d\d slow\.Sleep {node} succeeded in [\d.]+s: nap {record.output_uuid}$",
                     r.err, re.M)
    job = batch.describe_jobs(jobs=[record.job_id])["jobs"][0]
    assert record.status == "succeeded" and record.backend == "AWSBatch" and job["status"] == "SUCCEEDED"
    assert job["jobName"] == f"disdat-{record.node_id[:12]}-slow"


def test_a_pipes_own_progress_reaches_luigid_from_its_batch_job(aws, home, luigid_url):
    """set_status_message / set_progress_percentage inside a Batch job: mid-run in luigid (the job writes its
    words to the remote; the waiting client's one watcher reads them), then the final message."""
    batch, url = aws
    proc = subprocess.Popen([DSDT, "run", "--wait", "--scheduler-url", luigid_url, *TOKEN, "-", "steps", "talky.Steps",
                             "--steps", "4", "--seconds", "3"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = set()
    try:
        def said_something() -> bool:
            seen.update((t.get("status_message"), t.get("progress_percentage"))
                        for t in luigid_nodes(luigid_url, "steps", "RUNNING"))
            return any(re.fullmatch(r"step [2-4] of 4", m or "") and p in (25, 50, 75) for m, p in seen)

        assert wait_until(said_something, 120, every=0.3), seen
    finally:
        _, err = proc.communicate(timeout=200)
    assert proc.returncode == 0, err[-3000:]
    record = _records(url)["steps"]
    (done,) = [t for t in luigid_nodes(luigid_url, "steps", "DONE") if t["params"]["node_id"] == record.node_id]
    assert done["name"] == "talky.Steps" and done["status_message"] == f"succeeded: steps {record.output_uuid}"
    assert re.search(rf"^\d\d:\d\d:\d\d talky\.Steps {record.node_id[:12]} says: step [1-4] of 4 \(\d+%\)$", err,
                     re.M), err
    with open_remote(url, "shared") as remote:   # the pipe's status object went with it
        assert not list(remote.store.list("context/shared/status/"))


def test_a_non_blocking_diamond_is_submitted_whole_and_pulled_later(aws, home):
    batch, url = aws
    r = _run(*TOKEN, "-", "joined", "diamond.Join", "--seconds", "2")
    assert r.code == 0, r.err
    lines = r.out.strip().splitlines()
    assert lines[-1] == "submitted to AWSBatch; fetch the output when the jobs finish: dsdt pull joined"
    # each node's job, running (Root may have finished by the time the lines are printed)
    jobs = dict(re.findall(r"node [0-9a-f]{12} (diamond\.\w+): job ([0-9a-f-]{36}) \((?:running|succeeded)\)",
                           r.out))
    assert set(jobs) == {"diamond.Root", "diamond.Left", "diamond.Right", "diamond.Join"}
    join = batch.describe_jobs(jobs=[jobs["diamond.Join"]])["jobs"][0]
    assert sorted(d["jobId"] for d in join["dependsOn"]) == sorted([jobs["diamond.Left"], jobs["diamond.Right"]])
    left = batch.describe_jobs(jobs=[jobs["diamond.Left"]])["jobs"][0]
    assert [d["jobId"] for d in left["dependsOn"]] == [jobs["diamond.Root"]]
    assert home.context().find(["joined"]) == []  # nothing waits: the client is gone
    early = run_dsdt("pull", "joined")
    assert_user_error(early, "joined is not ready yet: its run", "pull again when it has finished")
    deadline = time.monotonic() + 120
    while (pulled := run_dsdt("pull", "joined")).code != 0 and time.monotonic() < deadline:
        time.sleep(2)
    assert pulled.code == 0, pulled.err
    assert home.context().latest("joined").data() == {"sum": 5}
    assert {name: rec.status for name, rec in _records(url).items()} == {
        "joined": "succeeded", "joined-left": "succeeded", "joined-right": "succeeded", "joined-root": "succeeded"}
    again = _run(*TOKEN, "-", "joined", "diamond.Join", "--seconds", "2")  # everything is done: nothing submitted
    assert again.code == 0, again.err
    assert dict(re.findall(r"node [0-9a-f]{12} (diamond\.\w+): job ([0-9a-f-]{36}) \(succeeded\)", again.out)) == jobs
    assert again.out.strip().splitlines()[-1] == "every node is done already: dsdt pull joined"


def test_a_failing_job_fails_with_its_reason_and_log_and_pulls_nothing(aws, home):
    batch, url = aws
    r = _run("--wait", *TOKEN, "-", "bad", "unstorable.ReturnsASocket")
    assert r.code == 1
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("dsdt: error: the run failed: a bundle cannot hold a socket")
    assert re.search(r"AWS Batch job [0-9a-f-]{36} failed", last)
    assert "dsdt-entrypoint: error: a bundle cannot hold a socket" in r.err  # the job's log lines
    assert home.context().find(["bad"]) == [] and _records(url)["bad"].status == "failed"
    submitted = _run(*TOKEN, "-", "bad2", "unstorable.ReturnsASocket")  # non-blocking: the pull says why
    assert submitted.code == 0, submitted.err
    deadline = time.monotonic() + 60
    while "is not ready yet" in (pulled := run_dsdt("pull", "bad2")).err and time.monotonic() < deadline:
        time.sleep(2)
    assert_user_error(pulled, "the latest run of bad2 failed (", ", failed): a bundle cannot hold a socket",
                      "(`dsdt logs ")
    assert home.context().find(["bad2"]) == []


def test_job_definitions_are_reused_and_revised_only_when_the_image_changes(aws, home, docker_ready, tmp_path,
                                                                          monkeypatch):
    batch, url = aws
    before = _definitions(batch, "slow")
    assert _run("--wait", *TOKEN, "-", "a", "slow.Sleep", "--seconds", "0").code == 0
    after_one = _definitions(batch, "slow")
    assert _run("--wait", *TOKEN, "--force", "-", "b", "slow.Sleep", "--seconds", "0").code == 0
    assert _definitions(batch, "slow") == after_one and len(after_one) - len(before) <= 1  # never one per run
    root = tmp_path / "pipe_root"
    shutil.copytree(TEST_PIPES, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "changed.txt").write_text(uuid.uuid4().hex)  # another image, same module
    monkeypatch.setenv("DISDAT_PIPE_ROOT", str(root))
    prefix = f"changed{uuid.uuid4().hex[:6]}"  # its own tags: the session's images stay as they are
    monkeypatch.setenv("DISDAT_DOCKERIZE_REPOSITORY_PREFIX", prefix)
    assert run_dsdt("dockerize", "--base-image", docker_ready, str(root), "slow").code == 0
    try:
        assert _run("--wait", *TOKEN, "-", "c", "slow.Sleep", "--seconds", "0").code == 0
    finally:
        import docker

        docker.from_env().images.remove(f"{prefix}/disdat-slow:latest", force=True)
    revised = _definitions(batch, "slow")
    assert len(revised) == len(after_one) + 1  # exactly one new revision
    latest = batch.describe_job_definitions(jobDefinitionName="disdat-slow-job-definition")["jobDefinitions"]
    assert [d for d in latest if d["revision"] == revised[-1]][0]["containerProperties"]["image"] == \
        _records(url)["c"].image


def test_bad_batch_setups_are_one_line_before_anything_is_pushed(aws, home, cli, tmp_path, monkeypatch):
    from conftest import _remote_keys

    batch, url = aws
    cli("add", "texts", TEST_PIPES / "slow.py")
    cli("commit", "texts")
    before = (snapshot(home.path), _remote_keys(url))
    monkeypatch.setenv("DISDAT_RUN_AWS_BATCH_QUEUE", "no-such-queue")
    assert_user_error(_run("texts", "out", "passthrough.PassThrough"), "AWS Batch has no job queue 'no-such-queue'")
    monkeypatch.delenv("DISDAT_RUN_AWS_BATCH_QUEUE")
    assert_user_error(_run("texts", "out", "passthrough.PassThrough"),
                      "no AWS Batch job queue: set [run] aws_batch_queue")
    assert (snapshot(home.path), _remote_keys(url)) == before  # nothing pushed, nothing changed
    monkeypatch.setenv("DISDAT_RUN_AWS_BATCH_QUEUE", "disdat-queue")
    cli("context", "local")
    cli("switch", "local")
    assert cli("remote", "shared", (tmp_path / "remote").as_uri()).code == 0
    cli("add", "texts", TEST_PIPES / "slow.py")
    cli("commit", "texts")
    assert_user_error(_run("texts", "out", "passthrough.PassThrough"),
                      "AWS Batch jobs run on other machines and cannot reach the remote file://")
    assert list((tmp_path / "remote").rglob("*.json")) == []  # the input was not pushed


def test_session_credentials_reach_the_job_and_long_lived_keys_reach_nothing(aws, home, luigid_url):
    batch, url = aws
    r = _run("--wait", "--scheduler-url", luigid_url, *TOKEN, "-", "env", "envcheck.Environment")
    assert r.code == 0, r.err
    env = home.context().latest("env").data()
    assert env["has_session_token"] and env["access_key_id"] not in (None, LONG_KEY)
    record = _records(url)["env"]
    job = batch.describe_jobs(jobs=[record.job_id])["jobs"][0]
    names = {e["name"] for e in job["container"]["environment"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} <= names
    definitions = batch.describe_job_definitions(jobDefinitionName="disdat-envcheck-job-definition")
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        stored_log = RunStore(remote).log(record.node_id) or b""
        remote_text = b"".join(remote.store.get_bytes(k) for k in remote.store.list("context/"))
    from urllib.request import urlopen
    from urllib.parse import quote

    query = quote(json.dumps({"status": "DONE", "upstream_status": ""}))
    scheduler = urlopen(f"{luigid_url}/api/task_list?data={query}", timeout=10).read().decode()
    for place in (r.err, r.out, json.dumps(job, default=str), json.dumps(definitions, default=str),
                  stored_log.decode(), remote_text.decode(errors="replace"), scheduler):
        assert LONG_KEY not in place and LONG_SECRET not in place
    (task,) = [t for t in json.loads(scheduler)["response"].values() if t["name"] == record.pipe_cls
               and t["params"]["node_id"] == record.node_id]  # this run's node, whatever other tests ran
    console = "https://us-east-1.console.aws.amazon.com/batch/home?region=us-east-1#jobs/detail/"
    assert task["tracking_url"] == console + record.job_id


def test_without_a_session_token_jobs_get_no_credentials_at_all(aws, home):
    batch, url = aws
    r = _run("-", "envless", "envcheck.Environment")  # non-blocking; the job relies on its (emulated) role
    assert r.code == 0, r.err
    job_id = re.search(r"job ([0-9a-f-]{36})", r.out).group(1)
    environment = {e["name"] for e in batch.describe_jobs(jobs=[job_id])["jobs"][0]["container"]["environment"]}
    assert "AWS_DEFAULT_REGION" in environment and "AWS_ENDPOINT_URL_S3" in environment
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} & environment, environment


def test_interrupting_a_waiting_run_terminates_its_job(aws, home):
    batch, url = aws
    proc = subprocess.Popen([DSDT, "run", "--wait", *TOKEN, "-", "long", "slow.Sleep", "--seconds", "120"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        job = None
        while time.monotonic() < deadline:
            record = _records(url).get("long")
            if record is not None and record.job_id:
                job = batch.describe_jobs(jobs=[record.job_id])["jobs"][0]
                if job["status"] == "RUNNING":
                    break
            time.sleep(0.5)
        assert job is not None and job["status"] == "RUNNING", job
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "dsdt: interrupted"
    deadline = time.monotonic() + 30
    while (job := batch.describe_jobs(jobs=[job["jobId"]])["jobs"][0])["status"] != "FAILED":
        assert time.monotonic() < deadline, job["status"]
        time.sleep(0.5)
    assert job["statusReason"] == "disdat-luigi: interrupted by its client (Ctrl-C or SIGTERM)"
    assert _records(url)["long"].status == "interrupted"


def test_a_job_submitted_by_a_client_killed_before_naming_it_is_found_not_submitted_again(aws, home, tmp_path):
    """Non-blocking: the record says running and names no job. The next identical run finds the job by its
    name (and tags), names it in the record, submits nothing, and writes the pending marker that `dsdt pull`
    needs."""
    batch, url = aws
    _killed_after_submitting(tmp_path, *TOKEN, "-", "orphan", "slow.Sleep", "--seconds", "30")
    record = _records(url)["orphan"]
    assert record.status == "running" and record.job_id is None and record.detached
    (job_id,) = _jobs_of(batch, record.node_id)

    r = _run(*TOKEN, "-", "orphan", "slow.Sleep", "--seconds", "30")
    assert r.code == 0, r.err
    assert f"job {job_id} (running)" in r.out
    assert list(_jobs_of(batch, record.node_id)) == [job_id]
    assert _records(url)["orphan"].job_id == job_id
    pulled = run_dsdt("pull", "orphan")
    assert pulled.code == 1 and pulled.err == (f"dsdt: error: orphan is not ready yet: its run {record.node_id[:12]} "
                                               f"(slow.Sleep) is RUNNING as job {job_id}; pull again when it has "
                                               f"finished (`dsdt runs orphan`)\n"), pulled
    batch.terminate_job(jobId=job_id, reason="the test ends")


def test_a_waiting_client_killed_before_naming_its_job_leaves_it_to_the_next_run(aws, home, tmp_path):
    """--wait: the job owns its node as any Batch job does (the graph is submitted whole, then followed). Its
    client died before naming it in the record; the next run finds it by its name and tags, names it, and waits
    for it: one job, one attempt, the output pulled."""
    batch, url = aws
    _killed_after_submitting(tmp_path, "--wait", *TOKEN, "-", "taken", "slow.Sleep", "--seconds", "5")
    record = _records(url)["taken"]
    assert record.status == "running" and record.job_id is None and record.detached
    (first,) = _jobs_of(batch, record.node_id)
    r = _run("--wait", *TOKEN, "-", "taken", "slow.Sleep", "--seconds", "5")
    assert r.code == 0, r.err
    assert list(_jobs_of(batch, record.node_id)) == [first]
    final = _records(url)["taken"]
    assert (final.job_id, final.attempt, final.status) == (first, record.attempt, "succeeded")
    assert home.context().latest("taken").data() == 5.0


def test_images_go_to_a_registry_and_a_local_run_pulls_them(aws, home, cli, registry, docker_ready, monkeypatch,
                                                            tmp_path):
    """A real `docker push` to docker-registry on 127.0.0.1, treated as ECR (moto's ECR creates the repository
    and hands out the login), then a Local run on an engine without the image pulls it from there."""
    import boto3
    import docker

    monkeypatch.setenv("DISDAT_DOCKERIZE_REGISTRY", registry)
    monkeypatch.setenv("DISDAT_DOCKERIZE_ECR", "true")
    prefix = f"team{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("DISDAT_DOCKERIZE_REPOSITORY_PREFIX", prefix)
    pushed = run_dsdt("dockerize", "--base-image", docker_ready, "--push", str(TEST_PIPES), "slow")
    assert pushed.code == 0, pushed.err
    name = f"{registry}/{prefix}/disdat-slow:latest"
    assert f"created the ECR repository {prefix}/disdat-slow" in pushed.out
    assert pushed.out.strip().splitlines()[-1] == f"pushed {name}"
    repos = boto3.client("ecr").describe_repositories()["repositories"]
    assert f"{prefix}/disdat-slow" in [r["repositoryName"] for r in repos]
    client = docker.from_env()
    client.images.remove(name)  # this engine no longer has it: a team member pushed it
    monkeypatch.setenv("DISDAT_RUN_BACKEND", "Local")
    assert cli("remote", "shared", (tmp_path / "remote").as_uri()).code == 0
    r = _run("-", "pulled", "slow.Sleep", "--seconds", "0")
    assert r.code == 0, r.err
    assert client.images.get(name).attrs["RepoDigests"]  # it came from the registry
    assert home.context().latest("pulled").data() == 0.0
    client.images.remove(name)


def test_a_job_that_fails_before_it_starts_says_it_has_no_log(aws):
    """An image Batch cannot start: the job fails with no log stream, and waiting says so instead of crashing."""
    from disdat_luigi.containers.aws_batch import AWSBatch
    from disdat_luigi.containers.backend import RunRequest

    backend = AWSBatch()
    request = RunRequest(image="disdat-no-such-image:never", args=["--job", "{}"], environment={}, secrets={},
                         name="x", family="nosuch", remote_url=aws[1],
                         labels={"disdat.node_id": "0123456789abcdef0123456789abcdef"})
    job = backend.submit(request)
    states = []
    result = job.wait(on_lines=lambda lines: None, on_status=states.append)
    assert result.status == "failed" and states[-1] == "FAILED"
    assert result.reason.endswith("the job has no log stream: it failed before it started")
    assert result.log_tail == [] and job.logs() == [] and job.result() == result


def test_detached_jobs_are_owned_by_their_jobs_not_a_client(aws, home):
    """Non-blocking: `dsdt runs` says the node runs as its job, `--clean` leaves it alone, a second identical
    submission chains to the same job, and a waiting run adopts it instead of running the node again."""
    batch, url = aws
    first = _run(*TOKEN, "-", "nb", "slow.Sleep", "--seconds", "6")
    assert first.code == 0, first.err
    job = re.search(r"job ([0-9a-f-]{36}) \(running\)", first.out).group(1)
    again = _run(*TOKEN, "-", "nb", "slow.Sleep", "--seconds", "6")
    assert again.code == 0 and re.search(rf"job {job} \(running\)", again.out), again.out  # no second job
    listed = run_dsdt("runs").out
    assert re.search(rf"slow\.Sleep\s+running \(job {job}\)", listed), listed
    clean = run_dsdt("runs", "--clean")
    assert (clean.code, clean.out) == (0, "nothing to clean: no run whose client died\n")
    waited = _run("--wait", *TOKEN, "-", "nb", "slow.Sleep", "--seconds", "6")
    assert waited.code == 0, waited.err
    record = _records(url)["nb"]
    assert record.job_id == job and record.status == "succeeded" and record.attempt == 1
    assert list(_jobs_of(batch, record.node_id)) == [job]  # the node ran once


def test_job_definitions_alternate_between_two_settings_without_piling_up(aws, monkeypatch):
    batch, _ = aws
    for seconds in ("0", "0.1", "0.2", "0.3"):
        monkeypatch.setenv("DISDAT_RUN_MEMORY", "1024" if seconds in ("0", "0.2") else "1536")
        assert _run("--wait", *TOKEN, "-", f"m{seconds.replace('.', '')}", "slow.Sleep", "--seconds", seconds).code == 0
    definitions = batch.describe_job_definitions(jobDefinitionName="disdat-slow-job-definition",
                                                 status="ACTIVE")["jobDefinitions"]
    memories = [_requirement(d, "MEMORY") for d in definitions]
    assert sorted(m for m in memories if m in ("1024", "1536")) == ["1024", "1536"], _definitions(batch, "slow")


def _requirement(definition: dict, kind: str):
    """A job definition's resource requirement of one kind (VCPU, MEMORY, GPU), None when it has none."""
    found = [r["value"] for r in definition["containerProperties"].get("resourceRequirements", [])
             if r["type"] == kind]
    return found[0] if found else None


def test_a_failed_upstream_of_a_non_blocking_graph_is_named_by_pull(aws, home):
    r = _run(*TOKEN, "-", "broken", "unstorable.AfterASocket")
    assert r.code == 0, r.err
    deadline = time.monotonic() + 90
    while "is not ready yet" in (pulled := run_dsdt("pull", "broken")).err and time.monotonic() < deadline:
        time.sleep(2)
    assert_user_error(pulled, "the latest run of broken failed at its upstream unstorable.ReturnsASocket (",
                      "failed): a bundle cannot hold a socket")
    assert home.context().find(["broken"]) == []
