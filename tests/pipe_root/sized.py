"""Test pipes with their own resources, retries and timeouts (the decorators of issue 16)."""
import os
import time

import luigi

from disdat_luigi import PipeTask, resources, retry, timeout


@resources(memory=64)
class Hungry(PipeTask):
    """Asks for 64 MiB and takes ``megabytes``: the kernel kills it, unless its memory is raised."""

    megabytes = luigi.IntParameter(default=200)

    def pipe_run(self):
        hoard = bytearray(self.megabytes << 20)
        for i in range(0, len(hoard), 4096):   # touch every page: the memory is really used
            hoard[i] = 1
        return len(hoard)


@retry(times=1)
class Flaky(PipeTask):
    """Fails on its first attempt, succeeds on the next: returns the attempt it succeeded on."""

    def pipe_run(self):
        attempt = int(os.environ["DISDAT_ATTEMPT"])
        print(f"this is attempt {attempt}", flush=True)
        if attempt == 1:
            raise RuntimeError("the first attempt fails on purpose")
        return attempt


@timeout(seconds=2)
class Slowpoke(PipeTask):
    def pipe_run(self):
        time.sleep(30)
        return "never"


class Patient(PipeTask):
    def pipe_run(self):
        time.sleep(4)
        return "patient"


class Both(PipeTask):
    """A slow pipe with a short timeout beside a pipe without one."""

    def pipe_requires(self):
        self.add_dependency("slow", Slowpoke)
        self.add_dependency("patient", Patient)

    def pipe_run(self, slow, patient):
        return [slow, patient]


@resources(vcpus=2, memory=512, gpus=1)
@retry(times=2)
@timeout(seconds=900)
class Trainer(PipeTask):
    """A GPU step (for AWS Batch: Local engines here have no GPU)."""

    def pipe_run(self):
        return "trained"


class Plain(PipeTask):
    def pipe_run(self):
        return "plain"


class Pipeline(PipeTask):
    """A GPU step beside a plain one."""

    def pipe_requires(self):
        self.add_dependency("trained", Trainer)
        self.add_dependency("plain", Plain)

    def pipe_run(self, trained, plain):
        return [trained, plain]
