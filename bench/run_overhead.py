"""What a containerized `dsdt run` costs over a bare `docker run --rm` doing the same work, side by side.

    .venv/bin/python bench/run_overhead.py [--reps N] [--remote file|s3]

The work: word counts over a small bundle of text files (pipes/wordcount.py). Ours: `dsdt run --force
texts counts wordcount.WordCount` (push input, container, push output and run record, pull output, Luigi
chain). Peer: `docker run --rm` of the same image counting the same files mounted read-only, printing the
result, nothing else. Interleaved, median of --reps, reported as the difference and the ratio. Then the
up-to-date rerun (`dsdt run` without --force: the chain is already complete, nothing runs).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench_env import DSDT, container_bench, make_bucket, timed, write_results  # noqa: E402

BARE = ("import collections, glob, re; c = collections.Counter(w for p in sorted(glob.glob('/data/*.txt')) "
        "for w in re.findall(r\"[a-z']+\", open(p).read().lower())); print(sum(c.values()), c.most_common(10))")


def _measure(env: dict, work: Path, s3, base: str, args) -> tuple:
    data = work / "texts"
    data.mkdir()
    for i in range(5):
        (data / f"t{i}.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    url = make_bucket(s3, "bench") if args.remote == "s3" else (work / "remote").as_uri()
    for cmd in (["init"], ["context", "bench"], ["remote", "shared", url], ["add", "texts", str(data)],
                ["commit", "texts"], ["dockerize", "--base-image", base, str(REPO / "pipes"), "wordcount"]):
        timed([DSDT, *cmd], env)
    run = [DSDT, "run", "texts", "counts", "wordcount.WordCount"]
    image = f"{env['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/disdat-wordcount:latest"
    bare = ["docker", "run", "--rm", "--network", "host", "-v", f"{data}:/data:ro", "--entrypoint", "python3",
            image, "-c", BARE]
    timed(run, env)  # warm-up, untimed: the first run also pushes the input
    timed(bare, env)
    ours, peer, noop = [], [], []
    for _ in range(args.reps):
        ours.append(timed([*run[:2], "--force", *run[2:]], env))
        peer.append(timed(bare, env))
        noop.append(timed(run, env))
    return ours, peer, noop


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--remote", choices=("file", "s3"), default="file")
    args = ap.parse_args()
    with container_bench("overhead", REPO / "pipes") as bench:
        ours, peer, noop = _measure(bench.env, bench.work, bench.s3, bench.base, args)
    o, p, n = (statistics.median(x) for x in (ours, peer, noop))
    print(f"\nremote: {args.remote}, median of {args.reps}")
    print(f"dsdt run (push, container, pull; Luigi chain): {o:6.2f} s")
    print(f"docker run --rm (same image, same work):      {p:6.2f} s")
    print(f"overhead: {o - p:.2f} s   ratio ours/docker run: {o / p:.2f}")
    print(f"up-to-date rerun (nothing runs):              {n:6.2f} s")
    write_results(f"run_overhead_{args.remote}", {"ours": ours, "docker_run": peer, "noop_rerun": noop})
    return 0


if __name__ == "__main__":
    sys.exit(main())
