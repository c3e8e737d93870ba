"""A test pipe that returns its input bundle's data unchanged (what a crafted remote input would abuse)."""
from disdat_luigi import PipeTask


class PassThrough(PipeTask):
    def pipe_run(self, pipeline_input):
        return pipeline_input
