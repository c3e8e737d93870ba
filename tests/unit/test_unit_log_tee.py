"""The entrypoint keeps its own log (disdat_luigi.runs.entrypoint.LogTee): everything written to stdout and
stderr, by the pipe and by processes it starts, still goes where it went, and the last bytes of it are kept,
complete up to the moment the log is taken, and bounded whatever a pipe prints."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import os, subprocess, sys
from disdat_luigi.runs.entrypoint import LogTee
tee = LogTee(keep=KEEP)
print("from print", flush=True)
sys.stderr.write("from stderr\n")
subprocess.run(["sh", "-c", "echo from a child; echo child error >&2"])
os.write(1, b"x" * EXTRA)
print("last line", flush=True)
kept = tee.stop()
print("after stop")
sys.stderr.write(repr(kept) + "\n")
"""


def _run(keep: int, extra: int):
    code = SCRIPT.replace("KEEP", str(keep)).replace("EXTRA", str(extra))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    kept = eval(proc.stderr.decode().strip().splitlines()[-1])  # noqa: S307 (our own repr)
    return proc, kept


def test_everything_still_goes_out_and_is_kept_up_to_the_last_line():
    proc, kept = _run(keep=1 << 20, extra=10)
    for line in (b"from print", b"from a child", b"last line"):
        assert line in proc.stdout and line in kept
    for line in (b"from stderr", b"child error"):
        assert line in proc.stderr and line in kept
    assert b"after stop" in proc.stdout and b"after stop" not in kept
    # stdout and stderr are two pipes: their lines are kept in the order each reached its pump, so only within
    # one stream is the order certain (the child's stderr may land after the parent's last stdout line)
    ours = [line for line in kept.splitlines() if line.endswith((b"from print", b"from a child", b"last line"))]
    assert [line[-9:] for line in ours] == [b"rom print", b"m a child", b"last line"]


def test_a_chatty_pipe_keeps_only_the_last_bytes():
    proc, kept = _run(keep=4096, extra=5 << 20)
    assert len(proc.stdout) > 5 << 20                       # all of it went out
    assert len(kept) == 4096 + len(b"(the log's first bytes are not kept)\n")
    assert kept.startswith(b"(the log's first bytes are not kept)\n") and kept.endswith(b"last line\n")
