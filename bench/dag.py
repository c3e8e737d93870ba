"""A graph of 16 containerized pipes (Source -> 14 Parts -> Sink) on the Local backend: 1 worker against 2
workers in the same run, and the cost of a node against a bare `docker run` of the same image, side by side.

    .venv/bin/python bench/dag.py [--reps N] [--remote file|s3]

Each timed `dsdt run --force` runs all 16 nodes (the nonce changes every node id). The peer is the same graph
of bare `docker run --rm`s of the same image, each running the same few lines of Python and nothing else: one
first, then the 14 middle ones one at a time or two at a time, then one last. Reported: the median time of
the whole graph with 1 and 2 workers and their ratio, the same for the bare graph (the ceiling this machine's
Docker engine sets on 2 cores), the ratio of the two speed-ups, and the per-node overhead: (graph time with
1 worker - bare graph one at a time) / 16, and how much of it a bare run that imports the pipe module (and so
luigi) also pays.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench_env import DSDT, container_bench, make_bucket, timed, write_results  # noqa: E402

NODES = 16
BARE = "print(sum(x * 3 for x in range(1000)))"
IMPORTING = "import fan; " + BARE    # the same, importing the pipe module (and so luigi) as any run of it must


def _measure(env: dict, work: Path, s3, base: str, args) -> tuple:
    url = make_bucket(s3, "bench") if args.remote == "s3" else (work / "remote").as_uri()
    for cmd in (["init"], ["context", "bench"], ["remote", "shared", url],
                ["dockerize", "--base-image", base, str(HERE / "pipe_root")]):
        timed([DSDT, *cmd], env)
    one = [DSDT, "run", "--force", "--workers", "1", "-", "fan", "fan.Sink"]
    two = [DSDT, "run", "--force", "--workers", "2", "-", "fan", "fan.Sink"]
    image = f"{env['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/disdat-fan:latest"
    bare = ["docker", "run", "--rm", "--network", "host", "--entrypoint", "python3", image, "-c", BARE]
    importing = [*bare[:-1], IMPORTING]
    timed(two, env)  # warm-up, untimed
    timed(bare, env)
    t1, t2, p1, p2, imp = [], [], [], [], []
    for _ in range(args.reps):
        t1.append(timed(one, env))
        t2.append(timed(two, env))
        p1.append(_bare_graph(bare, env, 1))
        p2.append(_bare_graph(bare, env, 2))
        imp.append(timed(importing, env))
    return t1, t2, p1, p2, imp


def _bare_graph(bare: list, env: dict, at_once: int) -> float:
    """The graph's shape in bare `docker run`s: one, the middle ones ``at_once`` at a time, one."""
    start = time.perf_counter()
    timed(bare, env)
    with ThreadPoolExecutor(at_once) as pool:
        list(pool.map(lambda _: timed(bare, env), range(NODES - 2)))
    timed(bare, env)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--remote", choices=("file", "s3"), default="file")
    args = ap.parse_args()
    with container_bench("dag", HERE / "pipe_root") as bench:
        t1, t2, p1, p2, imp = _measure(bench.env, bench.work, bench.s3, bench.base, args)
    a, b, c, d, i = (statistics.median(x) for x in (t1, t2, p1, p2, imp))
    print(f"\nremote: {args.remote}, {NODES} nodes, median of {args.reps}")
    print(f"graph, 1 worker:  {a:6.2f} s   bare docker runs, 1 at a time: {c:6.2f} s")
    print(f"graph, 2 workers: {b:6.2f} s   bare docker runs, 2 at a time: {d:6.2f} s")
    print(f"speed-up 2 / 1: ours {a / b:.2f}x, bare docker runs {c / d:.2f}x   ratio ours/bare: "
          f"{(a / b) / (c / d):.2f}")
    print(f"per node (1 worker): {a / NODES:.2f} s   bare docker run: {c / NODES:.2f} s   overhead per node: "
          f"{(a - c) / NODES:.2f} s   ratio: {a / c:.2f}")
    print(f"of which importing the pipe module (luigi with it): {i - c / NODES:.2f} s   "
          f"(a bare docker run importing it: {i:.2f} s)")
    write_results(f"dag_{args.remote}", {
        "one_worker": t1, "two_workers": t2, "docker_run_one_at_a_time": p1, "docker_run_two_at_a_time": p2,
        "docker_run_importing_the_pipe": imp})
    return 0


if __name__ == "__main__":
    sys.exit(main())
