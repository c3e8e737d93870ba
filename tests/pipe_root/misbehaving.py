"""Test pipes that misbehave the way real code does: kill themselves, spawn and abandon children, print a lot."""
import os
import signal
import subprocess
import sys

import luigi

from disdat_luigi import PipeTask


class KillsItself(PipeTask):
    """SIGKILL to its own process: as PID 1 without an init the kernel would ignore it, and the pipe would
    'return' None."""

    def pipe_run(self):
        os.kill(os.getpid(), signal.SIGKILL)
        return "never"


class WhoAmI(PipeTask):
    """Its own pid, and whether a child it abandoned was reaped (an init reaps orphans; PID 1 without one
    leaves zombies)."""

    def pipe_run(self):
        subprocess.Popen(["sh", "-c", "sleep 0.2 & exit 0"])
        import time

        time.sleep(1)
        zombies = subprocess.run(["sh", "-c", "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l"],
                                 capture_output=True, text=True).stdout.strip()
        return {"pid": os.getpid(), "zombies": int(zombies)}


class Chatty(PipeTask):
    """``megabytes`` of short lines on stdout (and a few on stderr)."""

    megabytes = luigi.FloatParameter(default=5.0)

    def pipe_run(self):
        line = "0123456789 chatty line\n"
        count = int(self.megabytes * 1_000_000 / len(line))
        out = sys.stdout
        for _ in range(count):
            out.write(line)
        out.flush()
        print("done printing", file=sys.stderr, flush=True)
        return count
