"""A fan-out/fan-in graph of 16 small pipes for bench/dag.py: Source -> 14 x Part -> Sink."""
import luigi

from disdat_luigi import PipeTask

WIDTH = 14


class Source(PipeTask):
    def pipe_run(self):
        return list(range(1000))


class Part(PipeTask):
    i = luigi.IntParameter()

    def pipe_requires(self):
        self.add_dependency("source", Source)

    def pipe_run(self, source):
        return sum(x * self.i for x in source)


class Sink(PipeTask):
    def pipe_requires(self):
        for i in range(WIDTH):
            self.add_dependency(f"part{i}", Part, {"i": i})

    def pipe_run(self, **parts):
        return sum(v for k, v in parts.items() if k.startswith("part"))
