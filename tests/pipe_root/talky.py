"""Pipes that say how far they are, with Luigi's own task API, from inside their containers."""
import time

import luigi

from disdat_luigi import PipeTask


class Steps(PipeTask):
    """``steps`` steps of ``seconds`` each; before each one its message and percentage, then a last word."""
    steps = luigi.IntParameter(default=3)
    seconds = luigi.FloatParameter(default=1.0)
    fail = luigi.BoolParameter(default=False)

    def pipe_run(self):
        for i in range(self.steps):
            self.set_status_message(f"step {i + 1} of {self.steps}")
            self.set_progress_percentage(100 * i / self.steps)
            time.sleep(self.seconds)
        self.set_tracking_url("http://127.0.0.1:1/nowhere")   # harmless where nobody tracks it
        if self.fail:
            raise ValueError(f"failed after {self.steps} steps, on purpose")
        return self.steps
