"""A test pipe whose upstream lives in a module that has no image (tests dockerize only this module)."""
from disdat_luigi import PipeTask
from passthrough import PassThrough


class NeedsOther(PipeTask):
    def pipe_requires(self):
        self.add_dependency("other", PassThrough)

    def pipe_run(self, other):
        return other
