"""Wide graphs for bench/scale.py.

* ``Sink(width)``: Gate -> ``width`` x Part -> Sink. The Gate waits ``hold`` seconds, so that a graph handed to
  AWS Batch stays queued behind it while its submission is timed (its parts do not start hundreds of
  containers on the bench machine meanwhile).
* ``Naps(width, seconds)``: ``width`` independent Naps of ``seconds`` each, gathered: what a waiting run's
  wall time is compared with (the longest part plus Batch's own start latency).
"""
import time

import luigi

from disdat_luigi import PipeTask


class Gate(PipeTask):
    hold = luigi.FloatParameter(default=0.0)

    def pipe_run(self):
        time.sleep(self.hold)
        return 1


class Part(PipeTask):
    i = luigi.IntParameter()
    hold = luigi.FloatParameter(default=0.0)

    def pipe_requires(self):
        self.add_dependency("gate", Gate, {"hold": self.hold})

    def pipe_run(self, gate):
        return gate + self.i


class Sink(PipeTask):
    width = luigi.IntParameter(default=100)
    hold = luigi.FloatParameter(default=0.0)

    def pipe_requires(self):
        for i in range(self.width):
            self.add_dependency(f"part{i}", Part, {"i": i, "hold": self.hold})

    def pipe_run(self, **parts):
        return sum(v for k, v in parts.items() if k.startswith("part"))  # **kwargs also gets pipeline_input


class Nap(PipeTask):
    i = luigi.IntParameter()
    seconds = luigi.FloatParameter(default=10.0)

    def pipe_run(self):
        time.sleep(self.seconds)
        return self.i


class Naps(PipeTask):
    width = luigi.IntParameter(default=24)
    seconds = luigi.FloatParameter(default=10.0)

    def pipe_requires(self):
        for i in range(self.width):
            self.add_dependency(f"nap{i}", Nap, {"i": i, "seconds": self.seconds})

    def pipe_run(self, **naps):
        return sum(v for k, v in naps.items() if k.startswith("nap"))
