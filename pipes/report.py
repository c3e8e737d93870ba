"""A pipe with two upstream pipes: a short report on a bundle of text files."""
from __future__ import annotations

import luigi

from disdat_luigi import PipeTask
from linestats import LineStats
from wordcount import WordCount


class TextReport(PipeTask):
    """Combines WordCount and LineStats of the same input bundle."""

    min_len = luigi.IntParameter(default=3, description="passed to WordCount")

    def pipe_requires(self):
        self.add_dependency("words", WordCount, params={"min_len": self.min_len, "top": 5})
        self.add_dependency("lines", LineStats)

    def pipe_run(self, words, lines):
        per_line = round(words["total_words"] / lines["lines"], 2) if lines["lines"] else 0.0
        return {
            "files": lines["files"],
            "lines": lines["lines"],
            "words": words["total_words"],
            "words_per_line": per_line,
            "top_words": [word for word, _ in words["top"]],
        }
