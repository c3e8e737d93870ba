"""What the benchmarks share: a scratch environment for dsdt on the bench's own servers, and a timer."""
from __future__ import annotations

import compileall
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, NamedTuple

DSDT = str(Path(sys.executable).parent / "dsdt")
REPO = Path(__file__).resolve().parent.parent


def as_installed() -> None:
    """Our package's bytecode, compiled as pip compiles it at install time: from a checkout run with
    PYTHONDONTWRITEBYTECODE=1 (as this machine's shells are), every dsdt process would compile every module
    it imports again (~0.05-0.1 s a process), where the peers' own installs are compiled."""
    compileall.compile_dir(str(REPO / "disdat_luigi"), quiet=1)


def bench_env(work: Path, s3, pipe_root: Path) -> dict:
    """dsdt's environment for a benchmark: its own home and image names, the bench's S3 server, host network."""
    as_installed()
    return dict(os.environ, DISDAT_HOME=str(work / "home"), DISDAT_PIPE_ROOT=str(pipe_root),
                DISDAT_DOCKERIZE_REPOSITORY_PREFIX=f"disdat-bench-{os.getpid()}", DISDAT_RUN_NETWORK_MODE="host",
                AWS_ENDPOINT_URL=s3.endpoint, AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key,
                AWS_DEFAULT_REGION="us-east-1", AWS_CONFIG_FILE=str(work / "none"),
                AWS_SHARED_CREDENTIALS_FILE=str(work / "none"))


def untag_images(env: dict) -> None:
    """Remove the tags this bench gave its images (the images stay, for the next bench to re-tag)."""
    import docker

    prefix = env["DISDAT_DOCKERIZE_REPOSITORY_PREFIX"] + "/"
    client = docker.from_env()
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(prefix):
                client.images.remove(tag)


def make_bucket(s3, name: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.access_key,
                 aws_secret_access_key=s3.secret_key, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}/remote"


def write_results(name: str, results: dict) -> Path:
    """A bench's results as ``bench/results/<name>.json`` (ignored by git)."""
    import json

    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=1))
    return out / f"{name}.json"


def timed(cmd: list, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:4])} failed:\n{proc.stderr[-3000:]}")
    return elapsed


class Bench(NamedTuple):
    work: Path      # scratch directory, removed afterwards
    s3: object      # the bench's own SeaweedFS
    base: str       # the registry-free base image
    env: dict       # dsdt's environment (bench_env)


@contextlib.contextmanager
def container_bench(name: str, pipe_root: Path) -> Iterator[Bench]:
    """A Docker engine, a SeaweedFS and a scratch dsdt home for a bench of containerized runs; afterwards the
    bench's image tags, its servers and its scratch directory are gone."""
    import services  # scripts/services.py, on sys.path in the benches

    work = Path(tempfile.mkdtemp(prefix=f"disdat-{name}-"))
    try:
        with services.docker_engine(), services.seaweedfs(work / "seaweedfs") as s3:
            env = bench_env(work, s3, pipe_root)
            try:
                yield Bench(work, s3, services.ensure_base_image(), env)
            finally:
                untag_images(env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
