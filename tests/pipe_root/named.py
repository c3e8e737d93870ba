"""Test pipes for Disdat's naming rules: a root that names its own output with set_bundle_name, over an
upstream pipe that names nothing."""
from disdat_luigi import PipeTask


class Unnamed(PipeTask):
    def pipe_run(self):
        return 1


class NamesItself(PipeTask):
    def pipe_requires(self):
        self.set_bundle_name("the_name")
        self.add_dependency("part", Unnamed)

    def pipe_run(self, part):
        return part + 1
