"""``dsdt report NAME``: one HTML page about the run that made a bundle (collect.py gathers, html.py draws)."""
from __future__ import annotations

from pathlib import Path

from ..store.context import Context


def write_report(ctx: Context, name: str, to: Path) -> str:
    """Write the report of ``name``'s run to ``to``; the line to print."""
    from ..fsutil import atomic_write
    from .collect import collect
    from .html import render

    report = collect(ctx, name)
    atomic_write(to, render(report).encode())
    return (f"report of run {report.run_id[:12]} ({len(report.nodes)} nodes) that made {report.name} "
            f"{report.uuid}: {to}")
