"""A diamond of test pipes: Root -> Left, Right -> Join (Root is shared: one node, run once).

Left and Right sleep, so that a parallel run shows them overlapping; Right fails while the file named by
``fail_if`` exists (a path the container sees, e.g. inside a file:// remote), so that a test can fix the
failure without changing any node's identity and check that a rerun runs only what failed.
"""
import os
import time

import luigi

from disdat_luigi import PipeTask


class Root(PipeTask):
    def pipe_run(self):
        return {"root": 1}


class Left(PipeTask):
    seconds = luigi.FloatParameter(default=2.0)

    def pipe_requires(self):
        self.add_dependency("root", Root)

    def pipe_run(self, root):
        time.sleep(self.seconds)
        return {"left": root["root"] + 1}


class Right(PipeTask):
    seconds = luigi.FloatParameter(default=2.0)
    fail_if = luigi.Parameter(default="")

    def pipe_requires(self):
        self.add_dependency("root", Root)

    def pipe_run(self, root):
        time.sleep(self.seconds)
        if self.fail_if and os.path.exists(self.fail_if):
            raise RuntimeError("the right branch failed on purpose (its flag file exists)")
        return {"right": root["root"] + 2}


class Join(PipeTask):
    seconds = luigi.FloatParameter(default=2.0)
    fail_if = luigi.Parameter(default="")

    def pipe_requires(self):
        self.add_dependency("left", Left, {"seconds": self.seconds})
        self.add_dependency("right", Right, {"seconds": self.seconds, "fail_if": self.fail_if})

    def pipe_run(self, left, right):
        return {"sum": left["left"] + right["right"]}


class Cycle(PipeTask):
    """Requires itself with the next parameter value, back to the first: a cycle of two."""

    step = luigi.IntParameter(default=0)

    def pipe_requires(self):
        self.add_dependency("next", Cycle, {"step": (self.step + 1) % 2})

    def pipe_run(self, next):
        return self.step
