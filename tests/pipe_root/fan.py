"""A fan of test pipes, as wide as a test asks: Source -> ``width`` x Part -> Join.

Each Part sleeps ``seconds`` (so that a test can see parts run at the same time), or fails at once while the
file named by ``fail_if`` exists (a path the container sees); Join adds their results up, so the output says every
part ran once with its own parameter."""
import os
import time

import luigi

from disdat_luigi import PipeTask


class Source(PipeTask):
    def pipe_run(self):
        return 1


class Part(PipeTask):
    i = luigi.IntParameter()
    seconds = luigi.FloatParameter(default=0.0)
    fail_if = luigi.Parameter(default="")

    def pipe_requires(self):
        self.add_dependency("source", Source)

    def pipe_run(self, source):
        if self.fail_if and os.path.exists(self.fail_if):   # at once: it fails before the others end
            raise RuntimeError(f"part {self.i} failed on purpose (its flag file exists)")
        time.sleep(self.seconds)
        return source + self.i


class Join(PipeTask):
    width = luigi.IntParameter(default=60)
    seconds = luigi.FloatParameter(default=0.0)
    fail_if = luigi.Parameter(default="")

    def pipe_requires(self):
        for i in range(self.width):
            params = {"i": i, "seconds": self.seconds}
            if self.fail_if and i == 0:
                params["fail_if"] = self.fail_if
            self.add_dependency(f"part{i}", Part, params)

    def pipe_run(self, **parts):
        return sum(v for k, v in parts.items() if k.startswith("part"))  # **kwargs also gets pipeline_input
