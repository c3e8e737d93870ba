"""``dsdt report``'s page: one self-contained HTML file (inline CSS and SVG, no script, no network) that opens
from disk.

Three parts, from the facts of :mod:`.collect`: the graph (a column per depth, each node labelled by its pipe
and coloured by its status, an arrow per dependency), a timeline of the nodes this run ran (every attempt a
bar), and a table with each node's duration, attempts, image, output bundle and a preview of its data. Every
text from the remote is escaped: a crafted record shows as text, never as markup.
"""
from __future__ import annotations

import html
import time
from datetime import datetime
from typing import Dict, List, Optional

from ..runs.record import RunRecord
from .collect import NodeFacts, Preview, RunReport

COLOURS = {"succeeded": "#2e9e4f", "failed": "#d03b3b", "running": "#2f6fd0", "interrupted": "#e08a1e",
           "timed_out": "#b8572a", "reused": "#8a949e"}
NODE_W, NODE_H, COLUMN, ROW = 200, 38, 250, 48
BAR_H, TIMELINE_W, LABEL_W = 14, 760, 240

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2329}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.meta{color:#5b6670} .counts span{display:inline-block;margin-right:14px}
.dot{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
.scroll{overflow:auto;max-height:720px;border:1px solid #dde2e6;border-radius:6px}
table{border-collapse:collapse;width:100%} th,td{border-bottom:1px solid #e6eaed;padding:6px 8px;text-align:left;
vertical-align:top} th{background:#f5f7f8;position:sticky;top:0}
td.num{text-align:right;white-space:nowrap} code{font-size:12px}
pre{margin:0;max-height:220px;overflow:auto;background:#f7f8f9;padding:6px;font-size:12px}
table.preview{width:auto;font-size:12px} table.preview td,table.preview th{padding:2px 6px}
.status{font-weight:600}
"""


def render(report: RunReport) -> str:
    nodes = report.nodes
    counts: Dict[str, int] = {}
    for facts in nodes.values():
        counts[_state(facts)] = counts.get(_state(facts), 0) + 1
    title = f"Run {report.run_id[:12]}: {report.name}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<div class="meta">output <code>{_e(report.name)} {_e(report.uuid)}</code> &middot; run '
        f"<code>{_e(report.run_id)}</code> &middot; remote {_e(report.remote)} &middot; made "
        f"{_e(time.strftime('%Y-%m-%d %H:%M:%S'))} by dsdt report</div>",
        '<p class="counts">' + "".join(
            f'<span><i class="dot" style="background:{_colour(state)}"></i>{n} {_e(state.replace("_", " "))}</span>'
            for state, n in sorted(counts.items())) + f"<span>{len(nodes)} nodes</span></p>",
        "<h2>Graph</h2>", f'<div class="scroll" id="graph">{_graph(report)}</div>',
        "<h2>Timeline</h2>", f'<div class="scroll" id="timeline">{_timeline(report)}</div>',
        "<h2>Nodes</h2>", f'<div class="scroll" id="nodes">{_table(report)}</div>',
        "</body></html>"]
    return "\n".join(parts)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _state(facts: NodeFacts) -> str:
    return "reused" if facts.reused and facts.record.status == "succeeded" else facts.record.status


def _colour(state: str) -> str:
    return COLOURS.get(state, "#8a949e")


def _depths(report: RunReport) -> Dict[str, int]:
    """Each node's column: the longest path to it from a node with no upstream (Kahn's order, so that a long
    chain needs no recursion; a cycle, which only a crafted remote holds, is drawn in the first column)."""
    downs: Dict[str, List[str]] = {node: [] for node in report.nodes}
    waiting = dict.fromkeys(report.nodes, 0)
    for up, _dep, down in report.edges:
        if up in downs and down in downs:
            downs[up].append(down)
            waiting[down] += 1
    depth = dict.fromkeys(report.nodes, 0)
    ready = [node for node, n in waiting.items() if n == 0]
    while ready:
        node = ready.pop()
        for down in downs[node]:
            depth[down] = max(depth[down], depth[node] + 1)
            waiting[down] -= 1
            if waiting[down] == 0:
                ready.append(down)
    return depth


def _graph(report: RunReport) -> str:
    depth = _depths(report)
    columns: Dict[int, List[str]] = {}
    for node in sorted(report.nodes, key=lambda n: (report.nodes[n].record.pipe_cls, n)):
        columns.setdefault(depth[node], []).append(node)
    where = {node: (d * COLUMN + 20, i * ROW + 20) for d, nodes in columns.items() for i, node in enumerate(nodes)}
    width = (max(columns, default=0) + 1) * COLUMN
    height = max((len(nodes) for nodes in columns.values()), default=1) * ROW + 20
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="12">',
           '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#9aa4ad"/></marker></defs>']
    for up, dep, down in report.edges:
        if up not in where or down not in where:
            continue
        (x1, y1), (x2, y2) = where[up], where[down]
        x1, y1, y2 = x1 + NODE_W, y1 + NODE_H // 2, y2 + NODE_H // 2
        bend = (x2 - x1) / 2
        out.append(f'<path d="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}" fill="none" '
                   f'stroke="#b7c0c7" marker-end="url(#arrow)"><title>{_e(dep)}</title></path>')
    for node, (x, y) in where.items():
        facts = report.nodes[node]
        record, state = facts.record, _state(facts)
        short = record.pipe_cls.rpartition(".")[2]
        out.append(
            f'<g class="node" data-node="{_e(node)}" data-pipe="{_e(record.pipe_cls)}" data-status="{_e(state)}">'
            f"<title>{_e(record.pipe_cls)} {_e(node[:12])}: {_e(state)}</title>"
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{_colour(state)}"/>'
            f'<text x="{x + 8}" y="{y + 15}" fill="#fff" font-weight="600">{_e(_clip(short, 26))}</text>'
            f'<text x="{x + 8}" y="{y + 30}" fill="#fff">{_e(node[:12])} &middot; {_e(_duration(record))}</text>'
            "</g>")
    out.append("</svg>")
    return "".join(out)


def _when(text: Optional[str]) -> Optional[float]:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _timeline(report: RunReport) -> str:
    ran = [(node, facts) for node, facts in report.nodes.items() if not facts.reused]
    spans = [(a, _when(a.started), _when(a.stopped)) for _, facts in ran for a in facts.attempts
             if a.run_id == report.run_id]
    starts = [s for _, s, _ in spans if s is not None]
    if not starts:
        return '<p class="meta">every node was made by an earlier run: nothing ran in this one</p>'
    first = min(starts)
    last = max([e for _, _, e in spans if e is not None] + starts + [first + 1])
    scale = TIMELINE_W / (last - first)
    rows = sorted(ran, key=lambda item: _when(item[1].attempts[0].started) or first)
    height = len(rows) * (BAR_H + 6) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + TIMELINE_W + 20}" height="{height}" '
           f'font-size="11">']
    for i, (node, facts) in enumerate(rows):
        y = 6 + i * (BAR_H + 6)
        out.append(f'<text x="0" y="{y + BAR_H - 3}">{_e(_clip(facts.record.pipe_cls, 28))} {_e(node[:8])}</text>')
        for attempt in facts.attempts:
            start, stop = _when(attempt.started), _when(attempt.stopped)
            if start is None or attempt.run_id != report.run_id:
                continue
            x = LABEL_W + (start - first) * scale
            w = max(2.0, ((stop or last) - start) * scale)
            out.append(f'<rect class="bar" data-node="{_e(node)}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
                       f'height="{BAR_H}" rx="3" fill="{_colour(attempt.status)}" '
                       f'opacity="{1 if attempt is facts.attempts[-1] else 0.55}"><title>{_e(facts.record.pipe_cls)} '
                       f"attempt {attempt.attempt}: {_e(attempt.status)}, {_e(_duration(attempt))}</title></rect>")
    axis_y = height - 12
    out.append(f'<text x="{LABEL_W}" y="{axis_y}" fill="#5b6670">0 s</text>'
               f'<text x="{LABEL_W + TIMELINE_W}" y="{axis_y}" text-anchor="end" fill="#5b6670">'
               f"{last - first:.1f} s</text></svg>")
    return "".join(out)


def _table(report: RunReport) -> str:
    head = ("Pipe", "Node", "Status", "Duration", "Attempts", "Backend / job", "Image", "Output", "Preview")
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for node, facts in report.nodes.items():
        r, state = facts.record, _state(facts)
        attempts = "<br>".join(f"{a.attempt}: {_e(a.status)}" + (f" ({_e(a.cause.replace('_', ' '))})" if a.cause
                                                                    and a.status != "succeeded" else "")
                               for a in facts.attempts)
        status = f'<span class="status" style="color:{_colour(state)}">{_e(state.replace("_", " "))}</span>'
        if facts.reused:
            status += f'<br><span class="meta">made by run {_e(r.run_id[:12])}</span>'
        if r.error:
            status += f'<br><span class="meta">{_e(_clip(r.error, 300))}</span>'
        output = f"<code>{_e(r.bundle_name)}</code><br><code>{_e(r.output_uuid or '-')}</code>"
        out.append(f'<tr data-node="{_e(node)}"><td>{_e(r.pipe_cls)}</td><td><code>{_e(node[:12])}</code></td>'
                   f'<td>{status}</td><td class="num">{_e(_duration(r))}</td><td>{attempts}</td>'
                   f"<td>{_e(r.backend)}<br><code>{_e(r.job_id or '-')}</code></td>"
                   f"<td><code>{_e(_clip(r.image, 20))}</code></td><td>{output}</td>"
                   f"<td>{_preview(facts.preview)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _preview(p: Preview) -> str:
    out = []
    if p.columns:
        out.append('<table class="preview"><tr>' + "".join(f"<th>{_e(c)}</th>" for c in p.columns) + "</tr>"
                   + "".join("<tr>" + "".join(f"<td>{_e(_clip(v, 80))}</td>" for v in row) + "</tr>"
                             for row in p.rows) + "</table>")
    elif p.text:
        out.append(f"<pre>{_e(p.text)}</pre>")
    if p.files:
        out.append("<div>" + "<br>".join(f"<code>{_e(name)}</code> ({size:,} bytes)" for name, size in p.files)
                   + "</div>")
    if p.note:
        out.append(f'<div class="meta">{_e(p.note)}</div>')
    return "".join(out)


def _duration(r: RunRecord) -> str:
    start, stop = _when(r.started), _when(r.stopped)
    if start is None or stop is None:
        return "-"
    return f"{stop - start:.1f}s"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"
