"""The parts of seeing a run that need no container: a pipe's status object (throttled, removed at the end), the
client's watcher (one listing a round, reads only what changed), listing stamps, the event lines and Luigi's
log filter, and the report's drawing (escaping, depth of a long chain, a DataFrame preview)."""
from __future__ import annotations

import io
import json
import logging
import re
import time


from disdat_luigi.chain.events import NodeEvents, luigi_log
from disdat_luigi.errors import DisdatError
from disdat_luigi.report.collect import NodeFacts, Preview, RunReport, _of_value
from disdat_luigi.report.html import _depths, render
from disdat_luigi.runs import status as status_module
from disdat_luigi.runs.record import RunRecord
from disdat_luigi.runs.status import PipeStatus, StatusWatcher
from disdat_luigi.store.manifest import Manifest

NODE = "a" * 32
OTHER = "b" * 32


def _counting(runs, method):
    calls = []
    original = getattr(runs.store, method)

    def counted(*args, **kw):
        calls.append(args[0])
        return original(*args, **kw)

    setattr(runs.store, method, counted)
    return calls


def test_a_pipes_status_is_written_at_most_once_a_second_and_removed_when_it_returns(runs, monkeypatch):
    monkeypatch.setattr(status_module, "WRITE_EVERY", 0.5)
    puts = _counting(runs, "put_bytes")
    status = PipeStatus(runs, NODE, attempt=2)

    class Task:
        set_status_message = set_progress_percentage = set_tracking_url = None

    task = Task()
    status.attach(task)
    for i in range(200):   # a pipe calling every 5 ms for a second
        task.set_status_message(f"row {i}")
        task.set_progress_percentage(i / 2)
        time.sleep(0.005)
    task.set_tracking_url("http://127.0.0.1:1/")
    time.sleep(0.8)
    word = json.loads(runs.store.get_bytes(runs.status_key(NODE)))
    assert (word["message"], word["percent"], word["attempt"]) == ("row 199", 99.5, 2)   # the latest word
    assert 2 <= len(puts) <= 4, len(puts)   # one write each half second
    task.set_progress_percentage("not a number")   # ignored, as luigid would
    task.set_progress_percentage(250)              # clamped
    time.sleep(0.8)
    assert json.loads(runs.store.get_bytes(runs.status_key(NODE)))["percent"] == 100.0
    status.close()
    assert list(runs.store.list(runs.status_prefix)) == []


def test_a_pipe_that_says_nothing_costs_no_request(runs):
    puts, deletes = _counting(runs, "put_bytes"), _counting(runs, "delete")
    PipeStatus(runs, NODE, attempt=1).close()
    assert puts == [] and deletes == []


def test_the_watcher_reads_only_followed_statuses_that_changed(runs):
    gets = _counting(runs, "get_bytes")
    heard = []
    watcher = StatusWatcher(lambda: runs)
    watcher._followed[NODE] = (lambda m, p: heard.append((m, p)), time.time() - 10)   # follow without its thread

    def say(node, **word):
        runs.store.put_bytes(runs.status_key(node), json.dumps({"at": time.time(), **word}).encode())

    say(NODE, message="loading", percent=10)
    say(OTHER, message="not followed")
    watcher.look()
    assert heard == [("loading", 10.0)] and gets == [runs.status_key(NODE)]
    watcher.look()                                  # nothing changed: nothing read
    assert len(gets) == 1 and len(heard) == 1
    time.sleep(0.01)
    say(NODE, message="training", percent=250)      # out of range: no percentage
    watcher.look()
    assert heard[-1] == ("training", None)
    time.sleep(0.01)
    runs.store.put_bytes(runs.status_key(NODE), json.dumps({"at": time.time() - 3600, "message": "old"}).encode())
    watcher.look()                                  # an earlier attempt's leftover
    time.sleep(0.01)
    runs.store.put_bytes(runs.status_key(NODE), b"[" * 10_000)   # oversized, not JSON: nothing said
    watcher.look()
    assert heard[-1] == ("training", None) and len(heard) == 2


def test_listing_stamps_change_with_the_object(runs):
    key = runs.status_key(NODE)
    runs.store.put_bytes(key, b"one")
    (first,) = runs.store.listing(runs.status_prefix)
    time.sleep(0.01)
    runs.store.put_bytes(key, b"two!")
    (second,) = runs.store.listing(runs.status_prefix)
    assert first[0] == second[0] == key and first[1] != second[1]
    assert list(runs.store.list(runs.status_prefix)) == [key]


def test_event_lines_and_the_summary():
    events, out = NodeEvents(), io.StringIO()
    events.said(NODE, "m.P", "before", None)     # no run turned them on: nothing printed
    with events.enabled(out):
        events.started(NODE, "m.P", "container c1 on Local")
        events.said(NODE, "m.P", "step 1", 10.0)
        events.said(NODE, "m.P", "step 2", 20.0)  # within SAID_EVERY of the last: not printed
        events.ended(NODE, "m.P", "failed", 1.25, "m.P failed: boom", "--- last container log lines ---\nTrace\x1b[2J")
        events.ended(OTHER, "m.Q", "succeeded", 0.5, "out 1234")
        summary = events.summary(5)
    lines = out.getvalue().splitlines()
    assert [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in lines] == [
        f"m.P {NODE[:12]} started: container c1 on Local", f"m.P {NODE[:12]} says: step 1 (10%)",
        f"m.P {NODE[:12]} failed in 1.2s: m.P failed: boom", "    --- last container log lines ---",
        "    Trace\\x1b[2J", f"m.Q {OTHER[:12]} succeeded in 0.5s: out 1234"]
    assert re.fullmatch(r"1 failed, 1 succeeded, 3 done already in [\d.]+s", summary)


def test_luigis_log_keeps_only_what_no_event_line_tells():
    log = logging.getLogger("luigi-interface")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    handler = Keep()
    log.addHandler(handler)
    old = log.level
    log.setLevel(logging.DEBUG)
    try:
        with luigi_log(verbose=False):
            log.info("running   m.P(...)")
            log.warning("Will not run m.P: error in complete()")
            for error in (DisdatError("node failed"), RuntimeError("a bug")):
                try:
                    raise error
                except Exception:
                    log.exception("failed %s", type(error).__name__)
        with luigi_log(verbose=True):
            log.info("everything with -v")
    finally:
        log.removeHandler(handler)
        log.setLevel(old)
    assert seen == ["Will not run m.P: error in complete()", "failed RuntimeError", "everything with -v"]


def _record(node, pipe, status="succeeded", upstream=None, run=NODE, **kw):
    return RunRecord(node_id=node, run_id=run, status=status, pipe_cls=pipe, params={}, bundle_name="b",
                     backend="Local", image="sha256:" + "0" * 64, started="2026-01-01T00:00:00.000000Z",
                     stopped="2026-01-01T00:00:02.000000Z", upstream=upstream or {}, **kw)


def _report(records, edges):
    nodes = {r.node_id: NodeFacts(r, [r], r.run_id != NODE, Preview(text="1")) for r in records}
    return RunReport("b", "0" * 8, NODE, "file:///r (context c)", nodes, edges)


def test_the_report_escapes_every_text_from_the_remote():
    evil = '<script>alert(1)</script>'
    page = render(_report([_record(NODE, "m.P" + evil, error=evil)], []))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_report_draws_a_long_chain_and_a_crafted_cycle():
    chain = [f"{i:032x}" for i in range(3000)]
    edges = [(chain[i], "up", chain[i + 1]) for i in range(len(chain) - 1)]
    depth = _depths(_report([_record(n, "m.P") for n in chain], edges))
    assert depth[chain[0]] == 0 and depth[chain[-1]] == 2999     # no recursion limit met
    cycle = _depths(_report([_record(NODE, "m.P"), _record(OTHER, "m.Q")], [(NODE, "x", OTHER), (OTHER, "y", NODE)]))
    assert cycle == {NODE: 0, OTHER: 0}


def test_a_dataframe_is_previewed_as_its_first_rows():
    import pandas
    frame = pandas.DataFrame({"key": [f"k{i}" for i in range(25)], "value": range(25)})
    preview = _of_value(frame, Manifest(name="t"))
    assert preview.columns == ["key", "value"] and preview.rows[0] == ["k0", "0"] and len(preview.rows) == 10
    assert preview.note == "25 rows, 2 columns; the first 10"
