"""Line statistics over the text files of a bundle."""
from __future__ import annotations

from disdat_luigi import PipeTask
from _inputs import input_files


class LineStats(PipeTask):
    """Number of files, lines and the longest line of the .txt files in the input bundle."""

    def pipe_requires(self):
        self.set_bundle_name("line_stats")

    def pipe_run(self, pipeline_input):
        files = lines = longest = 0
        for path in input_files(pipeline_input, ".txt"):
            files += 1
            with open(path, encoding="utf-8") as f:
                for line in f:
                    lines += 1
                    longest = max(longest, len(line.rstrip("\n")))
        return {"files": files, "lines": lines, "longest_line": longest}
