"""``dsdt report NAME``: one HTML page about the run that made a bundle (collect.py gathers, html.py draws)."""
from __future__ import annotations

from typing import Tuple

from ..store.context import Context


def report_page(ctx: Context, name: str) -> Tuple[str, str]:
    """The page about ``name``'s run, and the line that says which run it is about."""
    from .collect import collect
    from .html import render

    report = collect(ctx, name)
    return render(report), (f"report of run {report.run_id[:12]} ({len(report.nodes)} nodes) that made "
                            f"{report.name} {report.uuid}")
