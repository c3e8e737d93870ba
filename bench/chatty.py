"""A pipe that prints a lot, run by `dsdt run` against a bare `docker run --rm` printing the same, side by side.

    .venv/bin/python bench/chatty.py [--megabytes 5,50] [--reps 3]

The work: ``misbehaving.Chatty`` (tests/pipe_root) prints N MB of short lines. Ours: `dsdt run --force` of it
on the Local backend and a file:// remote (the client follows the container's log, keeps its tail, stores
it); the peer: `docker run --rm` of the same image running the same lines of Python, its output read by the
docker CLI. Reported per size: both medians, the ratio, the cost over the same run printing nothing (the
issue's target: at most 2 s for 5 MB), and the client's peak memory (its own and its
children's maximum RSS, from getrusage in a wrapper process). The issue this guards: a client that read the
whole log into memory and logged every line took 63 s and 425 MB for 5 MB.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))

from bench_env import DSDT, container_bench, timed, write_results  # noqa: E402

PRINT = ("import sys; line = '0123456789 chatty line\\n'; w = sys.stdout.write\n"
         "for _ in range(int({mb} * 1_000_000 / len(line))): w(line)")
PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def _peak_mb(cmd: list, env: dict) -> float:
    """The largest RSS of ``cmd`` (MB), measured by a wrapper that runs it."""
    out = subprocess.run([sys.executable, "-c", PEAK, *cmd], env=env, capture_output=True, text=True, cwd=REPO,
                         check=True).stdout
    return int(out.strip()) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megabytes", default="0,5,50", help="sizes; 0 is the same pipe printing nothing")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    sizes = [float(x) for x in args.megabytes.split(",")]
    results = {}
    with container_bench("chatty", REPO / "tests" / "pipe_root") as b:
        env = b.env
        for cmd in (["init"], ["context", "bench"], ["remote", "shared", (b.work / "remote").as_uri()],
                    ["dockerize", "--base-image", b.base, str(REPO / "tests" / "pipe_root"), "misbehaving"]):
            timed([DSDT, *cmd], env)
        image = f"{env['DISDAT_DOCKERIZE_REPOSITORY_PREFIX']}/disdat-misbehaving:latest"
        for mb in sizes:
            ours_cmd = [DSDT, "run", "--force", "-", "chat", "misbehaving.Chatty", "--megabytes", str(mb)]
            bare_cmd = ["docker", "run", "--rm", "--entrypoint", "python3", image, "-c", PRINT.format(mb=mb)]
            ours, bare = [], []
            for _ in range(args.reps):
                ours.append(timed(ours_cmd, env))
                bare.append(timed(bare_cmd, env))
            o, p = statistics.median(ours), statistics.median(bare)
            peak = _peak_mb(ours_cmd, env)
            results[f"{mb:g}MB"] = {"ours_s": round(o, 2), "docker_run_s": round(p, 2), "ratio": round(o / p, 2),
                                    "client_peak_rss_mb": round(peak)}
            silent = results.get("0MB", {}).get("ours_s")
            more = f", {o - silent:+.2f} s over printing nothing" if silent is not None and mb else ""
            print(f"{mb:g} MB of lines: dsdt run {o:.2f} s, docker run --rm {p:.2f} s (ratio {o / p:.2f}){more}; "
                  f"dsdt's peak memory {peak:.0f} MB", flush=True)
    write_results("chatty", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
