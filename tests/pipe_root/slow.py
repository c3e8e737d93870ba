"""Test pipes that take their time (interrupts, timeouts)."""
import time

import luigi

from disdat_luigi import PipeTask


class Sleep(PipeTask):
    seconds = luigi.FloatParameter(default=60.0)

    def pipe_run(self):
        print(f"sleeping {self.seconds} s", flush=True)
        time.sleep(self.seconds)
        return self.seconds
