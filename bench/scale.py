"""Wide graphs at our users' size, side by side with the peer each number is judged against.

    .venv/bin/python bench/scale.py [--widths 100,1000] [--workers 2] [--latency 0.02] [--only local,batch]

* **local**: ``wide.Sink --width N`` (Gate -> N Parts -> Sink) on the Local backend and a file:// remote, with
  ``--workers W``; the peer is the same N + 2 bare ``docker run --rm`` of the same image running the same few
  lines of Python, W at a time. Reported: both times, the per-node overhead ((ours - bare) / nodes), and the
  up-to-date rerun of the same graph. Then the same run once more under luigid, through a counting proxy:
  the scheduler RPCs per node, and how long Chromium takes to render luigid's task list of the run.
* **requests**: the remote requests per node of a Local run on S3 (SeaweedFS behind the proxy, with
  ``--latency`` a request, like a region), client and containers together.
* **batch**: moto's AWS Batch behind the limits proxy (``--latency`` on every call; AWS's limits enforced, so
  a job depending on more than 20 jobs or more than 50 calls a second would fail the bench):
  - submission: ``wide.Sink --width N --hold 900`` non-blocking (the Gate holds every other job queued, so no
    container competes with the submitting client), against bare boto3 submitting N + 2 jobs one after the
    other through the same proxy; and the most dependencies any job got;
  - waiting: ``wide.Naps --width 24 --seconds 20 --wait`` against the same run done bare: 24 jobs of the same
    image (its entrypoint left out) sleeping 20 s, submitted at once by boto3 through the same proxy and polled
    with DescribeJobs once a second until all finish (ours also runs the gathering Naps job, submitted once at
    most 20 naps are left, and pulls its output); the Batch calls a minute while waiting (after the last
    SubmitJob), in all and by API, ours and the peer's.

Results go to stdout and to bench/results/scale.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench_env import DSDT, container_bench, make_bucket, timed, write_results  # noqa: E402

BARE = "print(sum(x * 3 for x in range(1000)))"
IMPORTING = "import wide; " + BARE   # the same, importing the pipe module (and so luigi) as any run of it must
QUEUE = "bench-queue"


def _dsdt(env: dict, *args: str) -> float:
    return timed([DSDT, *args], env)


def _setup(env: dict, url: str, base: str) -> None:
    for cmd in (["init"], ["context", "bench"], ["remote", "shared", url],
                ["dockerize", "--base-image", base, str(HERE / "pipe_root")]):
        _dsdt(env, *cmd)


def _bare_graph(image: str, nodes: int, workers: int, code: str = BARE) -> float:
    """The same number of bare containers running ``code``, ``workers`` at a time."""
    cmd = ["docker", "run", "--rm", "--network", "host", "-e", "PYTHONPATH=/pipe_root", "--entrypoint", "python3",
           image, "-c", code]
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: subprocess.run(cmd, check=True, capture_output=True), range(nodes)))
    return time.perf_counter() - start


def local(b, widths, workers) -> dict:
    out = {}
    env = dict(b.env)
    _setup(env, (b.work / "remote").as_uri(), b.base)
    image = f"{env['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/disdat-wide:latest"
    for width in widths:
        nodes = width + 2
        args = ["run", "--workers", str(workers), "-", f"wide{width}", "wide.Sink", "--width", str(width)]
        ours = _dsdt(env, *args[:1], "--force", *args[1:])
        rerun = statistics.median(_dsdt(env, *args) for _ in range(3))
        bare = _bare_graph(image, nodes, workers)
        importing = _bare_graph(image, nodes, workers, IMPORTING)
        out[f"local_{width}"] = row = {
            "nodes": nodes, "workers": workers, "ours_s": round(ours, 2), "bare_docker_s": round(bare, 2),
            "bare_importing_s": round(importing, 2), "overhead_per_node_s": round((ours - bare) / nodes, 3),
            "overhead_beyond_imports_per_node_s": round((ours - importing) / nodes, 3),
            "ratio": round(ours / bare, 2), "up_to_date_rerun_s": round(rerun, 2)}
        print(f"local {nodes} nodes, {workers} workers: ours {ours:.1f} s, bare docker {bare:.1f} s, bare importing "
              f"the pipe module {importing:.1f} s; overhead {row['overhead_per_node_s']} s/node "
              f"({row['overhead_beyond_imports_per_node_s']} beyond the imports any run of the pipe pays); "
              f"up-to-date rerun {rerun:.2f} s", flush=True)
    return out


def luigid_ui(b, width, workers) -> dict:
    """One run of the widest graph under luigid behind the counting proxy; then the UI rendered in Chromium."""
    import aws_proxy
    import services

    env = dict(b.env, DISDAT_HOME=str(b.work / "home-luigid"))   # its own: it runs with or without `local`
    _setup(env, (b.work / "remote-luigid").as_uri(), b.base)
    with services.luigid(b.work / "luigid") as url, aws_proxy.aws_proxy(url) as proxy:
        nodes = width + 2
        ours = _dsdt(env, "run", "--force", "--workers", str(workers), "--scheduler-url", proxy.url, "-",
                     f"wide{width}", "wide.Sink", "--width", str(width))
        rpcs = proxy.counts()
        page = f"{url}/static/visualiser/index.html"
        start = time.perf_counter()
        dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                              "--no-first-run", "--disable-background-networking", "--disable-component-update",
                              "--disable-sync", f"--user-data-dir={b.work / 'chromium'}",
                              "--virtual-time-budget=60000", "--dump-dom", page],
                             capture_output=True, text=True, timeout=600).stdout
        rendered = time.perf_counter() - start
        api = time.perf_counter()
        query = json.dumps({"status": "DONE", "upstream_status": "", "search": ""})
        subprocess.run(["curl", "-s", "-G", "--data-urlencode", f"data={query}", f"{url}/api/task_list"],
                       capture_output=True, check=True)
        task_list = time.perf_counter() - api
    total = sum(rpcs.values())
    row = {"nodes": nodes, "run_s": round(ours, 1), "rpcs": rpcs, "rpcs_per_node": round(total / nodes, 2),
           "ui_render_s": round(rendered, 1), "ui_shows_tasks": dom.count("wide.Part"),
           "task_list_api_s": round(task_list, 2)}
    print(f"luigid, {nodes} nodes: {row['rpcs_per_node']} RPCs a node ({rpcs}); the visualiser rendered in "
          f"{rendered:.1f} s; task_list of the run {task_list:.2f} s", flush=True)
    return {f"luigid_{width}": row}


def requests_per_node(b, width, workers, latency) -> dict:
    import aws_proxy

    with aws_proxy.aws_proxy(b.s3.endpoint, latency=latency) as proxy:
        env = dict(b.env, AWS_ENDPOINT_URL=proxy.url, DISDAT_HOME=str(b.work / "home-s3"))
        _setup(env, make_bucket(b.s3, "scale-requests"), b.base)
        proxy.reset()
        took = _dsdt(env, "run", "--workers", str(workers), "-", "req", "wide.Sink", "--width", str(width))
        counts = proxy.counts()
    nodes = width + 2
    row = {"nodes": nodes, "latency_s": latency, "run_s": round(took, 1), "requests": counts,
           "requests_per_node": round(sum(counts.values()) / nodes, 1)}
    print(f"S3 with {latency * 1000:.0f} ms a request, {nodes} nodes: {row['requests_per_node']} requests a node "
          f"(client and containers: {counts})", flush=True)
    return {f"requests_{width}": row}


def _moto_queue(batch) -> None:
    import boto3

    iam = boto3.client("iam", endpoint_url=batch.meta.endpoint_url, region_name="us-east-1",
                       aws_access_key_id="k", aws_secret_access_key="s")
    role = iam.create_role(RoleName="bench-batch", AssumeRolePolicyDocument="{}")["Role"]
    ce = batch.create_compute_environment(computeEnvironmentName="bench-ce", type="UNMANAGED", state="ENABLED",
                                          serviceRole=role["Arn"])["computeEnvironmentArn"]
    batch.create_job_queue(jobQueueName=QUEUE, state="ENABLED", priority=1,
                           computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])


def _all_jobs(batch) -> list:
    ids = [j["jobId"] for status in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
           for page in batch.get_paginator("list_jobs").paginate(jobQueue=QUEUE, jobStatus=status)
           for j in page["jobSummaryList"]]
    return [j for i in range(0, len(ids), 100) for j in batch.describe_jobs(jobs=ids[i:i + 100])["jobs"]]


def _stop_all(batch) -> None:
    for job in _all_jobs(batch):
        if job["status"] not in ("SUCCEEDED", "FAILED"):
            batch.terminate_job(jobId=job["jobId"], reason="the bench ends")


def batch_bench(b, widths, latency, wait_parts: list) -> dict:
    import boto3

    import aws_proxy
    import services

    out = {}
    with services.moto_server(b.work / "moto") as moto, \
            aws_proxy.aws_proxy(moto, latency=latency, enforce_limits=True) as proxy:
        kw = dict(region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
        batch = boto3.client("batch", endpoint_url=moto, **kw)
        _moto_queue(batch)
        env = dict(b.env, AWS_ENDPOINT_URL=proxy.url, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
                   DISDAT_HOME=str(b.work / "home-batch"), DISDAT_RUN_BACKEND="AWSBatch",
                   DISDAT_RUN_AWS_BATCH_QUEUE=QUEUE)
        boto3.client("s3", endpoint_url=moto, **kw).create_bucket(Bucket="bench-batch")
        _setup(env, "s3://bench-batch/remote", b.base)
        try:
            for width in widths:
                proxy.reset()
                nodes = width + 2
                ours = _dsdt(env, "run", "--use-aws-session-token", "3600", "-", f"sub{width}", "wide.Sink",
                             "--width", str(width), "--hold", "900")
                counts = proxy.counts()
                jobs = _all_jobs(batch)
                widest = max(len(j.get("dependsOn", [])) for j in jobs)
                gate = [j for j in jobs if j["tags"].get("disdat.pipe_cls") == "wide.Gate"
                        and j["status"] not in ("SUCCEEDED", "FAILED")][0]
                proxied = boto3.client("batch", endpoint_url=proxy.url, **kw)
                start = time.perf_counter()  # the peer's jobs wait behind the same gate, as ours do
                for i in range(nodes):
                    proxied.submit_job(jobName=f"bare-{i}", jobQueue=QUEUE, jobDefinition=gate["jobDefinition"],
                                       containerOverrides={"command": ["--barrier"]},
                                       dependsOn=[{"jobId": gate["jobId"]}])
                bare = time.perf_counter() - start
                _stop_all(batch)
                out[f"batch_submit_{width}"] = row = {
                    "nodes": nodes, "latency_s": latency, "ours_s": round(ours, 1),
                    "bare_boto3_sequential_s": round(bare, 1), "ratio": round(ours / bare, 2),
                    "submit_jobs": counts.get("batch:SubmitJob"), "most_dependencies": widest,
                    "violations": proxy.violations()}
                print(f"Batch submission, {nodes} nodes, {latency * 1000:.0f} ms a call: ours {ours:.1f} s "
                      f"({row['submit_jobs']} SubmitJob, at most {widest} dependencies a job), bare boto3 one by "
                      f"one {bare:.1f} s; violations {proxy.violations()}", flush=True)
            for parts in wait_parts:
                out.update(_wait_bench(env, batch, proxy, parts))
        finally:
            _stop_all(batch)
    return out


def _bare_image(env: dict) -> str:
    """The wide pipes' image without its entrypoint (the same layers), so that a bare job runs any command."""
    import io

    import docker

    image = f"{env['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/disdat-wide:latest"
    tag = f"{env['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/bare-wide:latest"
    docker.from_env().images.build(fileobj=io.BytesIO(f"FROM {image}\nENTRYPOINT []\n".encode()), tag=tag,
                                   network_mode="none", rm=True)
    return docker.from_env().images.get(tag).id


def _batch_calls(calls, since: float, until: float) -> dict:
    """Batch and CloudWatch Logs calls by API between two times of the proxy's clock."""
    out: dict = {}
    for t, op in calls:
        if since < t <= until and op.startswith(("batch:", "logs:")):
            out[op] = out.get(op, 0) + 1
    return out


def _timeline(jobs: list, began: float) -> dict:
    """Per pipe (or barrier): when its jobs were created, started and stopped, seconds after the run began."""
    groups: dict = {}
    for j in (j for j in jobs if j["createdAt"] / 1000 >= began):
        name = j["tags"].get("disdat.pipe_cls") or ("barrier" if "barrier" in j["jobName"] else j["jobName"])
        groups.setdefault(name, []).append(j)
    def span(js, field):
        stamps = [j.get(field, 0) for j in js]
        return [round(min(stamps) / 1000 - began, 1) if all(stamps) else None,
                round(max(stamps) / 1000 - began, 1) if all(stamps) else None]
    fields = ("createdAt", "startedAt", "stoppedAt")
    return {name: {"jobs": len(js), **{field[:-2]: span(js, field) for field in fields}}
            for name, js in groups.items()}


def _part_cpu(jobs: list) -> float:
    """The CPU seconds one part's container spends besides its nap: a finished Nap job's own command and
    environment run again with ``docker run`` (its nap set to 0 s), timed by getrusage inside the container."""
    import docker

    job = next(j for j in jobs if j["tags"].get("disdat.pipe_cls") == "wide.Nap" and j["status"] == "SUCCEEDED")
    node_job = json.loads(job["container"]["command"][1])
    node_job["node"]["params"]["seconds"] = "0.0"
    timer = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "r = resource.getrusage(resource.RUSAGE_CHILDREN); print(r.ru_utime + r.ru_stime)")
    out = docker.from_env().containers.run(
        node_job["image"], ["-c", timer, "/opt/disdat/bin/dsdt-entrypoint", "--job", json.dumps(node_job)],
        entrypoint="python3", environment={e["name"]: e["value"] for e in job["container"]["environment"]},
        network_mode="host", remove=True, stderr=False)
    return float(out.decode().split()[-1])


def _wait_bench(env, batch, proxy, width=24, seconds=20.0) -> dict:
    """Ours: ``wide.Naps --width 24 --seconds 20 --wait``. The peer: the same run done bare, 24 jobs of the same
    image (without our entrypoint) sleeping as long, submitted at once with boto3 through the same proxy and
    polled with DescribeJobs (all ids, one call a second) until all finish."""
    import boto3

    proxy.reset()
    start = time.monotonic()
    ours = _dsdt(env, "run", "--wait", "--force", "--use-aws-session-token", "3600", "-", f"naps{width}", "wide.Naps",
                 "--width", str(width), "--seconds", str(seconds))
    end = time.monotonic()
    calls, counts, violations = proxy.calls(), proxy.counts(), proxy.violations()
    # waiting: from the first round of the poller (every part submitted) to the end; a held fan-in's SubmitJob
    # then counts as a call made while waiting
    submitted = min((t for t, op in calls if op == "batch:DescribeJobs"), default=start)
    waiting = _batch_calls(calls, submitted, end)
    jobs = _all_jobs(batch)
    timeline = _timeline(jobs, time.time() - (end - start))
    part_cpu = _part_cpu(jobs)

    nap = ["python3", "-c", f"import time; time.sleep({seconds})"]
    definition = batch.register_job_definition(
        jobDefinitionName="bench-bare-nap", type="container",
        containerProperties={"image": _bare_image(env), "command": nap,
                             "resourceRequirements": [{"type": "VCPU", "value": "1"},
                                                      {"type": "MEMORY", "value": "256"}]})["jobDefinitionArn"]
    proxied = boto3.client("batch", endpoint_url=proxy.url, region_name="us-east-1", aws_access_key_id="k",
                           aws_secret_access_key="s")
    proxy.reset()
    bare_start = time.monotonic()
    ids = [proxied.submit_job(jobName=f"bare-nap-{i}", jobQueue=QUEUE, jobDefinition=definition)["jobId"]
           for i in range(width)]
    bare_submitted = time.monotonic()
    while True:
        jobs = proxied.describe_jobs(jobs=ids)["jobs"]
        if all(j["status"] in ("SUCCEEDED", "FAILED") for j in jobs):
            break
        time.sleep(1.0)
    bare = time.monotonic() - bare_start
    if any(j["status"] != "SUCCEEDED" for j in jobs):
        raise SystemExit(f"bench: a bare nap failed: {[j.get('statusReason') for j in jobs]}")
    bare_waiting = _batch_calls(proxy.calls(), bare_submitted, time.monotonic())

    def per_minute(calls_by_api: dict, took: float) -> float:
        return round(sum(calls_by_api.values()) / (took / 60), 1) if took > 0 else 0.0

    ours_waiting_s = end - submitted
    row = {"parts": width, "seconds": seconds, "ours_s": round(ours, 1), "bare_s": round(bare, 1),
           "ratio": round(ours / bare, 2), "target_ratio": 1.5,
           "ours_batch_calls": {k: v for k, v in counts.items() if k.startswith(("batch:", "logs:"))},
           "ours_waiting_s": round(ours_waiting_s, 1), "ours_waiting_calls": waiting,
           "ours_waiting_calls_per_minute": per_minute(waiting, ours_waiting_s),
           "ours_waiting_calls_per_minute_by_api": {k: round(v / (ours_waiting_s / 60), 1)
                                                    for k, v in waiting.items()},
           "bare_waiting_calls": bare_waiting,
           "bare_waiting_calls_per_minute": per_minute(bare_waiting, bare - (bare_submitted - bare_start)),
           "violations": violations + proxy.violations(), "ours_timeline": timeline,
           # what the parts' own start and end cost this machine: each part's container (imports, the S3 client,
           # its records and output) takes part_cpu_s of CPU, and all of them start at once on os.cpu_count()
           # cores; on Batch each job has its own vCPUs
           "part_cpu_s": round(part_cpu, 2), "cores": os.cpu_count(),
           "parts_cpu_on_these_cores_s": round(width * part_cpu / os.cpu_count(), 1)}
    print(f"--wait of {width} parts of {seconds:.0f} s: ours {ours:.1f} s, the same {width} jobs bare (boto3, "
          f"DescribeJobs once a second) {bare:.1f} s: {row['ratio']}x (target 1.5x); while waiting "
          f"({ours_waiting_s:.0f} s) ours made {row['ours_waiting_calls_per_minute']} Batch calls a minute "
          f"({row['ours_waiting_calls_per_minute_by_api']} a minute; {waiting}), bare "
          f"{row['bare_waiting_calls_per_minute']} ({bare_waiting}); violations {row['violations']}; each part's "
          f"container spends {row['part_cpu_s']} s of CPU: {width} of them {row['parts_cpu_on_these_cores_s']} s on "
          f"{row['cores']} cores; ours by pipe, "
          f"seconds after the run began [first, last]: {timeline}", flush=True)
    return {f"batch_wait_{width}": row}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="100,1000", help="fan widths (default 100,1000)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--wait-parts", default="8,24",
                   help="parts of the --wait runs (default 8,24: on a small machine 24 jobs share its few cores)")
    p.add_argument("--latency", type=float, default=0.02, help="seconds added to every remote request")
    p.add_argument("--only", default="local,luigid,requests,batch",
                   help="parts to run; `wait` alone runs only the --wait part of `batch`")
    args = p.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    only = set(args.only.split(","))
    results: dict = {}
    with container_bench("scale", HERE / "pipe_root") as b:
        if "local" in only:
            results.update(local(b, widths, args.workers))
        if "luigid" in only:
            results.update(luigid_ui(b, max(widths), args.workers))
        if "requests" in only:
            results.update(requests_per_node(b, min(widths), args.workers, args.latency))
        if only & {"batch", "wait"}:
            results.update(batch_bench(b, widths if "batch" in only else [], args.latency,
                                        [int(n) for n in args.wait_parts.split(",") if n]))
    write_results("scale", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
