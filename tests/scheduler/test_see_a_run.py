"""Seeing a run: nodes named by their pipe in a real luigid, a pipe's own progress and message from inside its
container mid-run, final status messages, `dsdt run`'s lines (one per node event, for 200 nodes too), the HTML
report rendered by a real Chromium, and a closed pipe ending every command quietly."""
from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from conftest import (DSDT, REPO, chromium_dom, luigid_nodes, nodes_started, run_dsdt,
                      wait_until)

EVENT = re.compile(r"^\d\d:\d\d:\d\d (?P<pipe>[\w.]+) (?P<node>[0-9a-f]{12}) (?P<what>.*)$")
PLAN = re.compile(r"^run [0-9a-f]{32}: [\w.]+ \(\d+ nodes?\) on Local, image sha256:[0-9a-f]{12}(, scheduler \S+)?$")
SUMMARY = re.compile(r"^run [0-9a-f]{12}: (\d+ [a-z ]+, )*\d+ [a-z ]+ in [\d.]+s$")


def _terminal(err: str) -> list:
    """stderr of a default `dsdt run`, as lines; each one is a plan, an event (or its indented detail), a summary,
    or the error line."""
    lines = err.splitlines()
    for line in lines:
        ours = PLAN.match(line) or EVENT.match(line) or SUMMARY.match(line)
        assert ours or line.startswith(("    ", "dsdt: error:")), f"not a line of ours: {line!r}"
    return lines


@pytest.mark.timeout(300)
def test_a_pipes_own_progress_and_message_reach_luigid_mid_run_and_the_final_message_says_what_happened(
        file_remote, home, luigid_url):
    out = f"steps{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([DSDT, "run", "--scheduler-url", luigid_url, "-", out, "talky.Steps", "--steps", "4",
                             "--seconds", "3"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = set()
    try:
        def said_something() -> bool:
            for task in luigid_nodes(luigid_url, out, "RUNNING"):
                assert task["name"] == "talky.Steps"   # the node's family is its pipe class
                seen.add((task.get("status_message"), task.get("progress_percentage")))
            return any(m == "step 3 of 4" and p == 50 for m, p in seen)

        assert wait_until(said_something, 60, every=0.3), seen   # the pipe's own words, while it runs
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    bundle = home.context().latest(out)
    (done,) = luigid_nodes(luigid_url, out, "DONE")
    assert done["status_message"] == f"succeeded: {out} {bundle.uuid}" and done["progress_percentage"] == 100
    lines = _terminal(err)
    assert "INFO" not in err and "Luigi Execution Summary" not in err   # Luigi's own log is -v's
    said = [EVENT.match(line)["what"] for line in lines if EVENT.match(line)]
    assert said[0].startswith("started: container disdat-") and said[-1].startswith("succeeded in ")
    assert any(re.fullmatch(r"says: step [1-4] of 4 \((0|25|50|75)%\)", what) for what in said), said
    assert SUMMARY.match(lines[-1]) and re.search(r": 1 succeeded in [\d.]+s$", lines[-1])

    failing = f"fails{uuid.uuid4().hex[:8]}"
    r = run_dsdt("run", "--scheduler-url", luigid_url, "-", failing, "talky.Steps", "--steps", "1", "--seconds", "0",
                 "--fail", cwd=REPO)
    assert r.code == 1
    (failed,) = luigid_nodes(luigid_url, failing, "FAILED")
    assert failed["status_message"].startswith(
        "failed: talky.Steps failed: ValueError: failed after 1 steps, on purpose (container disdat-")
    lines = _terminal(r.err)
    (ended,) = [line for line in lines if EVENT.match(line) and " failed in " in line]
    assert "talky.Steps failed: ValueError: failed after 1 steps, on purpose" in ended
    below = lines[lines.index(ended) + 1:]
    assert below[0] == "    --- last container log lines ---"   # the log's tail, under its node's line
    assert any("ValueError: failed after 1 steps" in line for line in below if line.startswith("    "))
    assert re.search(r": 1 failed in [\d.]+s$", [line for line in lines if SUMMARY.match(line)][0])
    assert lines[-1].startswith("dsdt: error: the run failed: talky.Steps failed: ValueError")


@pytest.mark.timeout(900)
def test_a_run_of_200_nodes_prints_one_line_per_node_event_and_luigid_groups_them_by_pipe(file_remote, home,
                                                                                         luigid_url):
    out = f"wide{uuid.uuid4().hex[:8]}"
    r = run_dsdt("run", "--workers", "4", "--scheduler-url", luigid_url, "-", out, "fan.Join", "--width", "198",
                 cwd=REPO, timeout=800)
    assert r.code == 0, r.err[-3000:]
    lines = _terminal(r.err)
    events = [EVENT.match(line) for line in lines if EVENT.match(line)]
    assert len(lines) == 1 + len(events) + 1 and len(events) == 400   # plan, started + succeeded a node, summary
    by_node: dict = {}
    for e in events:
        by_node.setdefault(e["node"], []).append(e["what"].split(":")[0].split(" in ")[0])
    assert len(by_node) == 200 and all(whats == ["started", "succeeded"] for whats in by_node.values())
    assert re.search(r": 200 succeeded in [\d.]+s$", lines[-1])
    names = [t["name"] for t in luigid_nodes(luigid_url, out, "DONE")]
    assert sorted(set(names)) == ["fan.Join", "fan.Part", "fan.Source"] and names.count("fan.Part") == 198

    again = run_dsdt("run", "--workers", "4", "--scheduler-url", luigid_url, "-", out, "fan.Join", "--width", "198",
                     cwd=REPO)
    assert again.code == 0 and nodes_started(again.err) == 0
    assert len(again.err.splitlines()) == 2 and re.search(r": 200 done already in [\d.]+s$", again.err)


@pytest.mark.timeout(400)
def test_the_report_shows_the_graph_timeline_attempts_and_data_in_chromium(file_remote, home, tmp_path):
    flag = tmp_path / "remote" / "fail"   # inside the file:// remote, which the containers see at the same path
    flag.parent.mkdir(exist_ok=True)
    flag.touch()
    args = ("-", "fanned", "fan.Join", "--width", "3", "--fail-if", str(flag))
    first = run_dsdt("run", "--workers", "2", *args, cwd=REPO)
    assert first.code == 1, first.err   # every part fails while the flag exists
    flag.unlink()
    second = run_dsdt("run", "--workers", "2", *args, cwd=REPO)
    assert second.code == 0, second.err
    bundle = home.context().latest("fanned")
    page = tmp_path / "report.html"
    r = run_dsdt("report", "fanned", "-o", str(page))
    assert r.code == 0 and r.err == "", r
    assert r.out == f"report of run {bundle.manifest.lineage['run_id'][:12]} (5 nodes) that made fanned " \
                    f"{bundle.uuid}: {page}\n"
    text = page.read_text()
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "") and "<script" not in text
    dom = chromium_dom(page.as_uri(), tmp_path / "chromium", budget_ms=2000)
    drawn = re.findall(r'<g class="node" data-node="([0-9a-f]+)" data-pipe="([\w.]+)" data-status="(\w+)">', dom)
    assert sorted(p for _, p, _ in drawn) == ["fan.Join", "fan.Part", "fan.Part", "fan.Part", "fan.Source"]
    assert {s for _, _, s in drawn} == {"succeeded"}
    run = bundle.manifest.lineage["run_id"]
    attempts = run_dsdt("runs", "--run", run[:12], "-n", "0").out.strip().splitlines()[1:]
    assert len(attempts) > 5 and dom.count('class="bar"') == len(attempts)   # a bar an attempt, failed ones too
    rows = re.findall(r'<tr data-node="([0-9a-f]+)">(.*?)</tr>', dom, re.S)
    assert len(rows) == 5
    retried = [row for _, row in rows if "1: failed (user error)<br>2: succeeded" in row]
    assert retried and all("<td>fan.Part</td>" in row for row in retried)
    (join,) = [row for _, row in rows if "<td>fan.Join</td>" in row]
    assert f"<code>{bundle.uuid}</code>" in join and "<pre>" + json.dumps(bundle.data()) + "</pre>" in join


def test_a_report_escapes_what_a_crafted_remote_holds(file_remote, home, tmp_path):
    from disdat_luigi.remotes import open_remote
    from disdat_luigi.runs.store import RunStore

    assert run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO).code == 0
    node = home.context().latest("nap").manifest.lineage["run_id"]
    with open_remote(file_remote, "shared") as remote:
        runs = RunStore(remote)
        record = runs.record(node)
        runs.write(type(record)(**{**record.__dict__, "error": '<img id="evil" src=x onerror="alert(1)">'}))
    page = tmp_path / "report.html"
    assert run_dsdt("report", "nap", "-o", str(page)).code == 0
    dom = chromium_dom(page.as_uri(), tmp_path / "chromium", budget_ms=1000)
    assert "<img" not in dom and '&lt;img id="evil"' in dom   # shown as text, never an element


def test_report_of_a_bundle_no_run_made_is_one_line(file_remote, home, cli, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert cli("add", "plain", tmp_path / "f.txt").code == 0
    r = run_dsdt("report", "plain", "-o", str(tmp_path / "r.html"))
    assert r.code == 1 and r.err.startswith("dsdt: error: plain ") and r.err.count("\n") == 1
    assert "was not made by `dsdt run`" in r.err and not (tmp_path / "r.html").exists()
    assert run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO).code == 0
    (tmp_path / "file").write_text("")
    unwritable = run_dsdt("report", "nap", "-o", str(tmp_path / "file" / "r.html"))
    assert unwritable.code == 1 and unwritable.err.startswith(f"dsdt: error: cannot write the report to {tmp_path}")
    assert unwritable.err.count("\n") == 1
    missing = run_dsdt("report", "nosuch", "-o", str(tmp_path / "r.html"))
    assert missing.code == 1 and missing.err == "dsdt: error: no bundle with uuid or name nosuch in context " \
                                                 f"{home.context().name} (see `dsdt ls -v`)\n"


def test_a_closed_pipe_ends_every_command_quietly(file_remote, home, cli, tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert cli("add", "plain", tmp_path / "f.txt").code == 0
    assert run_dsdt("run", "-", "nap", "slow.Sleep", "--seconds", "0", cwd=REPO).code == 0
    for args in (("lineage", "plain"), ("ls", "-v"), ("runs",), ("report", "nap", "-o", "-"), ("cat", "plain")):
        read, write = os.pipe()
        os.close(read)   # `| head` that has already gone: the first write meets a closed pipe
        proc = subprocess.run([DSDT, *args], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
        os.close(write)
        assert (proc.returncode, proc.stderr) == (0, ""), (args, proc.stderr)
