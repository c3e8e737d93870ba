"""Word counts over the text files of a bundle."""
from __future__ import annotations

import collections
import csv
import re

import luigi

from disdat_luigi import PipeTask
from _inputs import input_files

WORD = re.compile(r"[a-z']+")


class WordCount(PipeTask):
    """Counts the words of every .txt file in the input bundle; writes all counts to counts.csv."""

    min_len = luigi.IntParameter(default=1, description="ignore words shorter than this")
    top = luigi.IntParameter(default=10, description="how many of the most common words to return")

    def pipe_run(self, pipeline_input):
        if self.min_len < 1:
            raise ValueError(f"min_len must be at least 1, got {self.min_len}")
        counts = collections.Counter()
        for path in sorted(input_files(pipeline_input, ".txt")):
            with open(path, encoding="utf-8") as f:
                counts.update(w for w in WORD.findall(f.read().lower()) if len(w) >= self.min_len)
        table = self.create_output_file("counts.csv")
        with table.open("w") as f:
            writer = csv.writer(f)
            writer.writerow(["word", "count"])
            writer.writerows(counts.most_common())
        print(f"counted {sum(counts.values())} words, {len(counts)} distinct")
        return {
            "total_words": sum(counts.values()),
            "distinct_words": len(counts),
            "top": [[word, n] for word, n in counts.most_common(self.top)],
            "counts_csv": table,
        }
