"""The pipe API and the example pipe_root, run in-process with dsdt apply (no container)."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import TEST_PIPES, assert_user_error, run_dsdt, snapshot


@pytest.fixture
def texts(home, tmp_path, cli):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("The cat sat on the mat.\nThe end.\n")
    (d / "b.txt").write_text("A cat and a dog.\n")
    (d / "ignored.md").write_text("not text for the pipes")
    assert cli("add", "texts", d).code == 0
    return d


def test_wordcount(home, pipe_root, cli, texts):
    r = cli("apply", "texts", "counts", "wordcount.WordCount", "--min-len", "3", "--top", "2")
    assert r.code == 0, r.err
    data = json.loads(cli("cat", "counts").out)
    assert data["total_words"] == 10 and data["distinct_words"] == 7
    assert data["top"] == [["the", 3], ["cat", 2]]
    with open(data["counts_csv"]) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["word", "count"] and ["mat", "1"] in rows


def test_wordcount_refuses_a_bad_parameter(home, pipe_root, cli, texts):
    r = cli("apply", "texts", "counts", "wordcount.WordCount", "--min-len", "0")
    assert r.code == 1
    assert r.err.splitlines()[-1] == ("dsdt: error: wordcount.WordCount failed: ValueError: min_len must be at least "
                                      "1, got 0")
    assert [row.name for row in home.context().find()] == ["texts"]  # no output bundle


def test_linestats_and_report_with_two_upstream_pipes(home, pipe_root, cli, texts):
    r = cli("apply", "texts", "report", "report.TextReport", "--min-len", "3")
    assert r.code == 0, r.err
    uuid = home.context().latest("report").uuid
    assert r.out.splitlines()[-1] == (f"report {uuid}: made 3 bundle(s) (`dsdt cat report`; `dsdt commit report` to "
                                      f"share it)")
    assert json.loads(cli("cat", "report").out) == {"files": 2, "lines": 3, "words": 10, "words_per_line": 3.33,
                                                    "top_words": ["the", "cat", "sat", "mat", "end"]}
    names = {row.name for row in home.context().find()}
    assert names == {"texts", "report", "report-words", "line_stats"}  # derived name, then set_bundle_name
    report = home.context().latest("report")
    assert set(report.manifest.lineage["inputs"]) == {"words", "lines", "pipeline_input"}


def test_groupby_returns_a_dataframe(home, pipe_root, cli, tmp_path):
    import pandas as pd

    d = tmp_path / "sales"
    d.mkdir()
    (d / "jan.csv").write_text("region,amount\neu,3\nus,4\n")
    (d / "feb.csv").write_text("region,amount\neu,5\n")
    cli("add", "sales", d)
    assert cli("apply", "sales", "totals", "sales.GroupBy").code == 0
    b = home.context().latest("totals")
    assert b.manifest.presentation == "dataframe"
    expected = pd.DataFrame({"region": ["eu", "us"], "sum": [8, 4], "count": [2, 1]})
    pd.testing.assert_frame_equal(b.data(), expected)
    r = cli("apply", "sales", "bad", "sales.GroupBy", "--key", "country")
    assert r.code == 1 and r.err.splitlines()[-1] == ("dsdt: error: sales.GroupBy failed: ValueError: no column "
                                                      "'country' in the input (columns: region, amount)")
    assert home.context().find(["bad"]) == []


def test_apply_is_a_noop_when_nothing_changed_and_force_runs_again(home, pipe_root, cli, texts):
    def said(result, state):
        uuid = home.context().latest("counts").uuid
        return result.out.splitlines()[-1] == (f"counts {uuid}: {state} (`dsdt cat counts`; `dsdt commit counts` "
                                               f"to share it)")

    first = cli("apply", "texts", "counts", "wordcount.WordCount")
    assert said(first, "made 1 bundle(s)"), first.out
    again = cli("apply", "texts", "counts", "wordcount.WordCount")
    assert said(again, "up to date"), again.out
    assert len(home.context().find(["counts"])) == 1
    forced = cli("apply", "--force", "texts", "counts", "wordcount.WordCount")
    assert said(forced, "made 1 bundle(s)"), forced.out
    assert len(home.context().find(["counts"])) == 2
    changed = cli("apply", "texts", "counts", "wordcount.WordCount", "--top", "3")
    assert said(changed, "made 1 bundle(s)"), changed.out
    assert len(home.context().find(["counts"])) == 3
    assert said(cli("apply", "texts", "counts", "wordcount.WordCount", "--top", "3"), "up to date")


def test_input_and_output_tags(home, pipe_root, cli, texts, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("zebra zebra\n")
    cli("add", "-t", "v:old", "texts", texts)
    cli("add", "-t", "v:new", "texts", other)
    assert cli("apply", "-it", "v:old", "-ot", "run:1", "texts", "counts", "wordcount.WordCount").code == 0
    b = home.context().latest("counts")
    assert b.tags == {"run": "1"} and b.data()["top"][0] == ["the", 3]


def test_values_cross_bundles_with_their_types(home, pipe_root, cli):
    pipe_root(TEST_PIPES)
    r = cli("apply", "-", "total", "chain.Total", "--extra", "2")
    assert r.code == 0, r.err
    assert json.loads(cli("cat", "total").out) == {"total": 22, "seed_type": "int",
                                                   "note": "written through a LocalTarget",
                                                   "same_file_twice": True}
    notes = home.context().latest("notes")
    assert sorted(notes.manifest.files) == ["notes/first.txt", "notes/second.txt"]
    assert notes.path("notes/second.txt").read_text() == "written through temporary_path\n"
    assert home.context().latest("total-seed").data() == 20  # derived name: output + dependency name


def test_apply_without_an_output_name_takes_the_name_the_pipe_sets(home, pipe_root, cli):
    pipe_root(TEST_PIPES)
    r = cli("apply", "-", "-", "named.NamesItself")
    uuid = home.context().latest("the_name").uuid
    assert r.code == 0 and r.out.splitlines()[-1].startswith(f"the_name {uuid}: made 2 bundle(s)"), r
    assert cli("apply", "-", "-", "named.Unnamed").code == 0
    assert sorted(row.name for row in home.context().find()) == ["Unnamed", "the_name", "the_name-part"]


def test_apply_bad_inputs_change_nothing(home, pipe_root, cli, texts):
    before = snapshot(home.path)
    cases = [
        (("apply", "texts", "out", "nosuch.Pipe"), "unknown pipe class nosuch.Pipe"),
        (("apply", "texts", "out", "wordcount.Nope"), "module wordcount has no Nope"),
        (("apply", "texts", "out", "NoModule"), "must be module.PipeClass"),
        (("apply", "texts", "out", "_inputs.input_files"), "not a pipe class"),
        (("apply", "texts", "out", "wordcount.WordCount", "--bogus", "1"), "no parameter --bogus"),
        (("apply", "texts", "out", "wordcount.WordCount", "--min-len", "x"), "bad value 'x' for --min-len"),
        (("apply", "texts", "out", "wordcount.WordCount", "--min-len"), "--min-len needs a value"),
        (("apply", "missing", "out", "wordcount.WordCount"), "no bundle named missing"),
        (("apply", "-it", "a:b:c", "texts", "out", "wordcount.WordCount"), "bad tag"),
        (("apply", "texts", "bad/name", "wordcount.WordCount"), "invalid bundle name"),
    ]
    for args, fragment in cases:
        assert_user_error(cli(*args), fragment)
    assert snapshot(home.path) == before


def test_a_missing_required_parameter_is_one_line(home, pipe_root, cli):
    pipe_root(TEST_PIPES)
    before = snapshot(home.path)
    assert_user_error(cli("apply", "-", "out", "fan.Part"), "cannot make fan.Part with {}:",
                      "requires the 'i' parameter to be set")
    assert snapshot(home.path) == before


def test_pipe_root_must_exist(home, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("DISDAT_PIPE_ROOT", str(tmp_path / "nowhere"))
    assert_user_error(cli("apply", "-", "out", "m.Pipe"), "is not a directory")


def test_a_value_no_bundle_can_hold_fails_with_one_line(home, pipe_root, cli):
    pipe_root(TEST_PIPES)
    r = cli("apply", "-", "out", "unstorable.ReturnsASocket")
    assert r.code == 1
    assert r.err.strip().splitlines()[-1] == ("dsdt: error: unstorable.ReturnsASocket failed: DisdatError: a bundle "
                                              "cannot hold a socket: return dicts, lists, numbers, strings, files "
                                              "(paths or targets) or a pandas DataFrame")
    assert home.context().find() == [] and list(home.context().tmp.iterdir()) == []


SHADOW = """print("the shadowing module ran")
from disdat_luigi import PipeTask


class X(PipeTask):
    def pipe_run(self):
        return 1
"""


@pytest.fixture
def shadowing_root(tmp_path):
    """A pipe_root whose modules take the names of standard library modules: ``this`` (not imported by
    dsdt) and ``json`` (imported by dsdt before any pipe is loaded). Both print when they run."""
    root = tmp_path / "shadowing_root"
    root.mkdir()
    for name in ("this", "json"):
        (root / f"{name}.py").write_text(SHADOW)
    return root


@pytest.mark.parametrize("shadowing, pipe_cls, fragment", [
    (False, "this.X", "unknown pipe class this.X: no module this under the pipe_root"),  # would print the Zen
    (False, "os.system", "unknown pipe class os.system: no module os under the pipe_root"),
    (False, "json.JSONDecoder", "unknown pipe class json.JSONDecoder: no module json under the pipe_root"),
    (False, "nosuch.Pipe", "unknown pipe class nosuch.Pipe: no module nosuch under the pipe_root"),
    (True, "this.X", "module this under the pipe_root {root} has the name of the module at "),
    (True, "json.X", "module json under the pipe_root {root} has the name of the module already imported from "),
])
def test_pipe_modules_come_from_the_pipe_root_only(home, pipe_root, shadowing_root, shadowing, pipe_cls, fragment):
    """A real process each: a module imported once is not imported again, so only a fresh process shows
    whether a module ran (printed) before the pipe class was refused."""
    root = pipe_root(shadowing_root if shadowing else TEST_PIPES)
    before = snapshot(home.path)
    r = run_dsdt("apply", "-", "out", pipe_cls)
    assert_user_error(r, fragment.format(root=root))
    assert r.out == ""  # neither the Zen of Python nor the shadowing module's line
    assert snapshot(home.path) == before


def test_a_value_nested_too_deep_fails_with_one_line(home, pipe_root, cli):
    pipe_root(TEST_PIPES)
    r = cli("apply", "-", "out", "unstorable.ReturnsDeepNesting")
    assert r.code == 1
    assert r.err.strip().splitlines()[-1] == ("dsdt: error: unstorable.ReturnsDeepNesting failed: DisdatError: a "
                                              "bundle's data nests lists and dicts more than 100 levels deep: "
                                              "flatten it or write it to a file")
    assert home.context().find() == [] and list(home.context().tmp.iterdir()) == []
