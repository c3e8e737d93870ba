"""A graph of 16 containerized pipes (Source -> 14 Parts -> Sink) on the Local backend: 1 worker against 2
workers in the same run, and the cost of a node against a bare `docker run` of the same image, side by side.

    .venv/bin/python bench/dag.py [--reps N] [--remote file|s3]

Each timed `dsdt run --force` runs all 16 nodes (the nonce changes every node id). The peer for a node is
`docker run --rm` of the same image running the same few lines of Python, nothing else. Reported: the median
time of the whole graph with 1 and 2 workers and their ratio, and the per-node overhead: (graph time with
1 worker) / 16 - (bare docker run), with the ratio of the two.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))
import services  # noqa: E402

from bench_env import DSDT, bench_env, make_bucket, timed, untag_images  # noqa: E402

NODES = 16
BARE = "print(sum(x * 3 for x in range(1000)))"


def _measure(env: dict, work: Path, s3, base: str, args) -> tuple:
    url = make_bucket(s3, "bench") if args.remote == "s3" else (work / "remote").as_uri()
    for cmd in (["init"], ["context", "bench"], ["remote", "shared", url],
                ["dockerize", "--base-image", base, str(HERE / "pipe_root")]):
        timed([DSDT, *cmd], env)
    one = [DSDT, "run", "--force", "--workers", "1", "-", "fan", "fan.Sink"]
    two = [DSDT, "run", "--force", "--workers", "2", "-", "fan", "fan.Sink"]
    image = f"{env['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/disdat-fan:latest"
    bare = ["docker", "run", "--rm", "--network", "host", "--entrypoint", "python3", image, "-c", BARE]
    timed(two, env)  # warm-up, untimed
    timed(bare, env)
    t1, t2, peer = [], [], []
    for _ in range(args.reps):
        t1.append(timed(one, env))
        t2.append(timed(two, env))
        peer.append(timed(bare, env))
    return t1, t2, peer


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--remote", choices=("file", "s3"), default="file")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="disdat-dag-"))
    try:
        with services.docker_engine(), services.seaweedfs(work / "seaweedfs") as s3:
            base = services.ensure_base_image()
            env = bench_env(work, s3, HERE / "pipe_root")
            try:
                t1, t2, peer = _measure(env, work, s3, base, args)
            finally:
                untag_images(env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a, b, p = (statistics.median(x) for x in (t1, t2, peer))
    per_node = a / NODES
    print(f"\nremote: {args.remote}, {NODES} nodes, median of {args.reps}")
    print(f"graph, 1 worker:  {a:6.2f} s")
    print(f"graph, 2 workers: {b:6.2f} s   speed-up 2 workers / 1 worker: {a / b:.2f}x")
    print(f"per node (1 worker): {per_node:.2f} s   bare docker run: {p:.2f} s   overhead per node: "
          f"{per_node - p:.2f} s   ratio: {per_node / p:.2f}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"dag_{args.remote}.json").write_text(json.dumps({"one_worker": t1, "two_workers": t2, "docker_run": peer},
                                                            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
