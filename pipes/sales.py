"""A CSV group-by with pandas: sums a value column per key over every CSV file of a bundle."""
from __future__ import annotations

import luigi
import pandas as pd

from disdat_luigi import PipeTask
from _inputs import input_files


class GroupBy(PipeTask):
    """Returns a DataFrame: one row per distinct ``key``, with the sum and count of ``value``."""

    key = luigi.Parameter(default="region", description="column to group by")
    value = luigi.Parameter(default="amount", description="numeric column to sum")

    def pipe_run(self, pipeline_input):
        paths = sorted(input_files(pipeline_input, ".csv"))
        if not paths:
            raise ValueError("the input bundle has no .csv files")
        frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
        for column in (self.key, self.value):
            if column not in frame.columns:
                raise ValueError(f"no column {column!r} in the input (columns: {', '.join(frame.columns)})")
        grouped = frame.groupby(self.key)[self.value].agg(["sum", "count"]).reset_index()
        return grouped.sort_values(self.key, ignore_index=True)
