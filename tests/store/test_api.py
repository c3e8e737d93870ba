"""disdat_luigi.api against a real local store, file:// and S3 (SeaweedFS) remotes and the Docker engine: a
notebook-style script and the README's "From Python" code run as real processes, every call in process, and
every refused call leaves the store (and the remote) as it was."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TEST_PIPES, snapshot
from disdat_luigi import api, errors
from disdat_luigi.config import SettingsError
from disdat_luigi.remotes import open_store

SCRIPT = REPO / "tests" / "store" / "api_scripts" / "notebook.py"
README = REPO / "README.md"


def _process(args, tmp_path, **env):
    """A real Python process in the repository's root, with the test's environment (and scratch TMPDIR)."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=dict(os.environ, TMPDIR=str(tmp_path), **env))


def _keys(url):
    store = open_store(url)
    try:
        return sorted(store.list(""))
    finally:
        store.close()


def _run_record(url, node_id):
    from disdat_luigi.remotes import open_remote
    from disdat_luigi.runs.store import RunStore

    with open_remote(url, "shared") as remote:
        return RunStore(remote).record(node_id)


def _state(home, url=None):
    return snapshot(home.path), (_keys(url) if url else None)


def _pipe_class(dotted, root=REPO / "pipes"):
    """A pipe class of the example pipe_root (or another), as a notebook imports it."""
    from disdat_luigi.pipe.loader import load_pipe_class

    return load_pipe_class(dotted, root)


def _refused(call, error, fragment):
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value), (fragment, str(info.value))


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.txt").write_text("the cat sat on the mat with another cat and another hat\n")
    (d / "sales.csv").write_text("region,amount\neu,3\nus,4\neu,5\n")
    return [d / "a.txt", d / "sales.csv"]


@pytest.fixture
def far_timezone():
    """Off UTC: a time written as local time instead of UTC shows only there."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


# -- as real processes -------------------------------------------------------------------------------------
def test_notebook_script_as_a_process(tmp_path, remote_url):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    r = _process([SCRIPT], tmp_path, DISDAT_HOME=str(tmp_path / "home"), DISDAT_PIPE_ROOT=str(REPO / "pipes"),
                 API_TEST_DIR=str(scratch), API_TEST_REMOTE=remote_url)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # no call prints; what stdout holds besides the script's line is the pipes' own
    assert r.stdout.splitlines()[-1] == "notebook: ok"
    assert all(line.startswith("counted ") for line in r.stdout.splitlines()[:-1]), r.stdout


def test_from_python_docs_run_as_written(tmp_path):
    section = README.read_text().split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "from_python.py"
    script.write_text(code)
    r = _process([script], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "region  sum  count" in r.stdout and "refused: bad tag key 'a:b'" in r.stdout
    assert "['texts', 'threshold']" in r.stdout and not (tmp_path / "no-home-set").exists()


def test_only_verbose_calls_print(home, pipe_root, tmp_path):
    code = """if True:
        import sys
        from disdat_luigi import api
        api.Bundle("test", name="words", data=["/nonexistent"])
        for verbose in (False, True):
            print(f"--- verbose={verbose}", file=sys.stderr)
            try:
                api.apply("test", "wordcount.WordCount", "out", input_bundle="words", params={"min_len": 0},
                          verbose=verbose)
            except api.PipeFailed as exc:
                print("raised:", exc)
    """
    r = _process(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("raised: wordcount.WordCount failed: ValueError: min_len must be at least 1") == 2
    quiet, verbose = r.stderr.split("--- verbose=True")
    assert quiet.strip() == "--- verbose=False"
    assert "Traceback" in verbose and "min_len must be at least 1, got 0" in verbose  # Luigi's log, as dsdt shows


# -- contexts ----------------------------------------------------------------------------------------------
def test_contexts(tmp_path, monkeypatch):
    monkeypatch.setenv("DISDAT_HOME", str(tmp_path / "fresh"))
    assert api.current_context() is None
    api.context("first")  # creates the store too; the first context is the active one
    api.context("second")
    api.context("second")  # an existing one is fine
    assert api.ls_contexts() == ["first", "second"] and api.current_context() == "first"
    api.switch("second")
    assert api.current_context() == "second"
    before = snapshot(tmp_path / "fresh")
    _refused(lambda: api.delete_context("second"), api.DisdatError, "is the active context")
    _refused(lambda: api.switch("nothing"), api.NotFound, "no context named nothing")
    _refused(lambda: api.delete_context("nothing"), api.NotFound, "no context named nothing")
    _refused(lambda: api.context("no/slash"), api.DisdatError, "invalid context name")
    _refused(lambda: api.search("nothing"), api.NotFound, "no context named nothing")
    _refused(lambda: api.search(None), api.DisdatError, "invalid context name None")  # never the active one
    assert snapshot(tmp_path / "fresh") == before
    api.delete_context("first")
    assert api.ls_contexts() == ["second"]


# -- building and reading bundles --------------------------------------------------------------------------
def test_bundles_of_values_and_files(home, files):
    values = {"scalar": 42, "text": "hello", "listed": [1, "two", 3.5, None, True], "mapping": {"a": {"b": [1]}}}
    made = {name: api.Bundle("test", name=name, data=value, tags={"kind": "value"}) for name, value in values.items()}
    for name, value in values.items():
        got = api.get("test", name)
        assert got.data == value and type(got.data) is type(value) and got.uuid == made[name].uuid
        assert got.tags == {"kind": "value"} and got.closed and not got.committed and got.name == name
    assert type(api.get("test", "listed").data[1]) is str
    copied = api.Bundle("test", name="files", data=[str(p) for p in files])
    assert [Path(p).read_bytes() for p in copied.data] == [p.read_bytes() for p in files]
    assert all(p.startswith(str(home.path)) for p in copied.data) and files[0].exists()
    single = api.Bundle("test", name="single", data=files[1])
    assert Path(single.data).read_text() == files[1].read_text() and type(single.data) is str


def test_building_in_place_with_lineage(home, far_timezone):
    upstream = api.Bundle("test", name="up", data=1)
    start = time.time()
    with api.Bundle("test", name="draft") as b:
        assert b.uuid is None and b.closed is False
        b.name = "report"  # settable until closed
        path = b.get_file("out/report.txt")
        path.write_text("in place\n")
        inode = path.stat().st_ino
        b.add_data({"report": path, "n": 1}).add_tags({"stage": "dev"}).add_params({"alpha": 0.5, "mode": "fast"})
        b.add_timing(start, start + 2.5).add_dependencies(upstream).add_dependencies({"extra": upstream})
        b.add_code_ref("notebook.make_report")
    assert b.closed and b.name == "report" and len(b.uuid) == 36
    report = Path(b.data["report"])
    assert report.read_text() == "in place\n" and report.stat().st_ino == inode  # never copied
    assert b.tags == {"stage": "dev"} and b.params == {"alpha": "0.5", "mode": "fast"}
    assert b.timing == (pytest.approx(start, abs=1e-5), pytest.approx(start + 2.5, abs=1e-5))
    assert b.dependencies == {"_arg_0": upstream.uuid, "extra": upstream.uuid} and b.code_ref == "notebook.make_report"
    assert abs(b.creation_date - time.time()) < 60 and upstream.timing == (0.0, 0.0)
    got = api.get("test", "report")
    assert got.lineage == b.lineage and got.lineage["inputs"] == b.dependencies and got.params == b.params
    _refused(lambda: setattr(b, "name", "other"), api.DisdatError, "is closed")
    _refused(lambda: b.add_tags({"a": "b"}), api.DisdatError, "is closed")
    opened = api.Bundle("test", name="manual").open()
    opened.get_file("x.txt").write_text("x")
    closed = opened.add_data(str(opened.get_file("x.txt"))).close()
    assert closed is opened and closed.closed and Path(api.get("test", "manual").data).read_text() == "x"


def test_a_failure_while_building_leaves_nothing(home):
    api.Bundle("test", name="kept", data=1)
    before = snapshot(home.path)
    with pytest.raises(ValueError):
        with api.Bundle("test", name="half") as b:
            b.get_file("big.txt").write_text("half written")
            b.add_data(b.get_file("big.txt"))
            raise ValueError("the notebook cell failed")
    _refused(lambda: api.Bundle("test", name="bad", data={"x": object()}), api.DisdatError, "cannot hold a object")
    with pytest.raises(api.DisdatError, match="has no name"):
        with api.Bundle("test") as b:
            b.get_file("a.txt").write_text("a")
    abandoned = api.Bundle("test", name="dropped").open()
    abandoned.get_file("a.txt").write_text("a")
    abandoned.abandon()
    _refused(abandoned.close, api.DisdatError, "is abandoned")
    _refused(lambda: api.Bundle("test", name="x").get_file("a.txt"), api.DisdatError, "open it first")
    assert snapshot(home.path) == before and [b.name for b in api.search("test")] == ["kept"]


# -- finding and removing ----------------------------------------------------------------------------------
def test_search_get_rm(home):
    made = [api.Bundle("test", name=n, data=i, tags=t) for i, (n, t) in enumerate([
        ("alpha", {"v": "1"}), ("beta", {}), ("alpha", {"v": "2"}), ("alpha", {}), ("gamma", {"v": "2"})])]
    assert [b.uuid for b in api.search("test")] == [b.uuid for b in reversed(made)]  # newest first
    assert [b.data for b in api.search("test", "alpha")] == [3, 2, 0]
    assert [b.data for b in api.search("test", "*a", tags={"v": "2"})] == [4, 2]
    assert api.search("test", "nothing") == [] and api.search("test", tags={"v": "9"}) == []
    api.commit("test", "beta")
    assert [b.name for b in api.search("test", is_committed=True)] == ["beta"]
    assert api.get("test", "alpha").data == 3 and api.get("test", "alpha", tags={"v": "1"}).data == 0
    assert api.get("test", uuid=made[1].uuid).data == 1 and api.get("test", "nothing") is None
    assert api.get("test", uuid=made[1].uuid, tags={"v": "1"}) is None
    assert api.rm("test", "alpha") == [made[3].uuid] and api.get("test", "alpha").data == 2
    api.Bundle("test", name="alpha", data=5)
    assert api.rm("test", "alpha", rm_old_only=True) == [made[2].uuid, made[0].uuid]
    assert [b.data for b in api.search("test", "alpha")] == [5]
    assert api.rm("test", uuid=made[1].uuid) == [made[1].uuid]
    api.Bundle("test", name="gamma", data=6)
    assert len(api.rm("test", "gamma", rm_all=True)) == 2
    before = snapshot(home.path)
    _refused(lambda: api.rm("test", "nothing"), api.NotFound, "no bundle named nothing")
    _refused(lambda: api.rm("test"), api.DisdatError, "rm_all=True")
    _refused(lambda: api.rm("test", "alpha", tags={"a:b": "c"}), api.DisdatError, "bad tag key")
    assert snapshot(home.path) == before
    assert len(api.rm("test", rm_all=True)) == 1 and api.search("test") == []


# -- pipes in this process ---------------------------------------------------------------------------------
def test_apply(home, pipe_root, files):
    WordCount = _pipe_class("wordcount.WordCount")
    texts = api.Bundle("test", name="texts", data=[str(p) for p in files], tags={"v": "1"})
    first = api.apply("test", "wordcount.WordCount", "counts", params={"min_len": 3}, input_bundle="texts")
    second = api.apply("test", WordCount, "counts", params={"min_len": "4", "top": 1}, input_bundle=texts)
    assert first.params == {"min_len": "3", "top": "10"} and second.params == {"min_len": "4", "top": "1"}
    assert first.data["total_words"] == 11 and second.data["top"] == [["another", 2]]
    assert second.dependencies == {"pipeline_input": texts.uuid} and second.lineage["pipe"] == "wordcount.WordCount"
    start, stop = second.timing
    assert texts.creation_date <= start <= stop <= second.creation_date <= time.time()
    again = api.apply("test", WordCount, "counts", params={"min_len": 4, "top": 1}, input_bundle="texts")
    forced = api.apply("test", WordCount, "counts", params={"min_len": 4, "top": 1}, input_bundle="texts",
                       force=True, input_tags={"v": "1"}, output_tags={"stage": "dev"})
    assert again.uuid == second.uuid and forced.uuid != second.uuid and forced.tags == {"stage": "dev"}
    totals = api.apply("test", "sales.GroupBy", input_bundle="texts")
    assert totals.name == "GroupBy" and list(totals.data.columns) == ["region", "sum", "count"]
    assert totals.data.to_dict("list") == {"region": ["eu", "us"], "sum": [8, 4], "count": [2, 1]}
    assert [b.name for b in api.search("test", find_intermediates=True)] == []


def test_apply_with_upstream_pipes(home, pipe_root, files):
    api.Bundle("test", name="texts", data=[str(files[0])])
    report = api.apply("test", "report.TextReport", "report", params={"min_len": 3}, input_bundle="texts")
    assert set(report.dependencies) == {"words", "lines", "pipeline_input"} and report.data["words"] == 11
    made = {b.name for b in api.search("test", find_intermediates=True)}
    assert made == {"report-words", "line_stats"}
    assert {b.name for b in api.search("test", find_roots=True)} == {"report", "texts"}


def test_apply_names_the_output_as_disdat_does(home, pipe_root):
    """No output name: the one the root pipe sets in pipe_requires, else its class name; a given name wins."""
    pipe_root(TEST_PIPES)
    NamesItself = _pipe_class("named.NamesItself", TEST_PIPES)
    made = api.apply("test", NamesItself)
    assert made.name == "the_name" and api.get("test", "the_name").uuid == made.uuid
    assert api.get("test", "the_name-part").data == 1  # its upstream: <output>-<dependency name>
    assert api.apply("test", "named.NamesItself", "-").uuid == made.uuid  # up to date
    assert api.apply("test", NamesItself, "the_name").uuid == made.uuid  # the same output, named the same
    given = api.apply("test", NamesItself, "given")
    assert given.name == "given" and given.uuid != made.uuid and given.data == 2
    unnamed = api.apply("test", "named.Unnamed")
    assert unnamed.name == "Unnamed" and api.get("test", "Unnamed").uuid == unnamed.uuid
    assert sorted(b.name for b in api.search("test")) == ["Unnamed", "given", "the_name", "the_name-part"]


def test_run_names_the_output_as_apply_does_before_it_plans(home, pipe_root, monkeypatch):
    """What api.run hands to the planner (which needs a remote and images to go further)."""
    from disdat_luigi.chain import run as chain_run

    def planned(options):
        raise api.DisdatError(f"planned {options.output_bundle} for {options.pipe_cls}")

    pipe_root(TEST_PIPES)
    monkeypatch.setattr(chain_run, "run", planned)
    _refused(lambda: api.run("test", None, None, "named.NamesItself"), api.DisdatError,
             "planned the_name for named.NamesItself")
    _refused(lambda: api.run("test", None, "-", _pipe_class("named.Unnamed", TEST_PIPES)), api.DisdatError,
             "planned Unnamed for named.Unnamed")
    _refused(lambda: api.run("test", None, "given", "named.NamesItself"), api.DisdatError,
             "planned given for named.NamesItself")


def test_refused_and_failing_apply_change_nothing_and_print_nothing(home, pipe_root, files, capfd):
    api.Bundle("test", name="texts", data=[str(p) for p in files])
    before = snapshot(home.path)
    _refused(lambda: api.apply("test", "wordcount.WordCount", "out", input_bundle="texts", params={"min_len": 0}),
             api.PipeFailed, "min_len must be at least 1, got 0")
    _refused(lambda: api.apply("test", "wordcount.WordCount", "out", params={"nope": 1}), api.DisdatError,
             "has no parameter --nope")
    _refused(lambda: api.apply("test", "nosuch.Pipe", "out"), api.NotFound, "unknown pipe class nosuch.Pipe")
    _refused(lambda: api.apply("test", dict, "out"), api.DisdatError, "is not a pipe class")
    _refused(lambda: api.apply("test", "wordcount.WordCount", "out", input_bundle="missing"), api.NotFound,
             "no bundle named missing")
    _refused(lambda: api.apply("test", "wordcount.WordCount", "out", input_tags={"v": "1"}), api.DisdatError,
             "input_tags need an input_bundle")
    _refused(lambda: api.apply("test", "wordcount.WordCount", "bad/name", input_bundle="texts"), api.DisdatError,
             "invalid bundle name")
    assert snapshot(home.path) == before
    assert capfd.readouterr() == ("", "")


# -- sharing through a remote --------------------------------------------------------------------------------
def test_push_and_pull_between_contexts(home, bound, files, capsys):
    import pandas as pd

    texts = api.Bundle("test", name="texts", data=[str(p) for p in files], tags={"v": "1"})
    frame = api.Bundle("test", name="frame", data=pd.DataFrame({"x": [1, 2]}, index=[5, 6]))
    draft = api.Bundle("test", name="draft", data=1)
    before = _state(home, bound)
    _refused(draft.push, api.DisdatError, "is not committed")
    _refused(lambda: api.push("test", "nothing"), api.NotFound, "no bundle named nothing")
    _refused(lambda: api.pull("test", "texts"), api.NotFound, "no bundle named texts on the remote")
    _refused(lambda: api.pull("test", uuid="../../etc"), api.IntegrityError, "is not a uuid")
    _refused(lambda: api.remote("test", "shared", "ftp://nowhere"), api.DisdatError, "is not supported")
    _refused(lambda: api.remote("test", "bad/name", bound), api.DisdatError, "invalid remote context name")
    _refused(lambda: api.push("nothing", "texts"), api.NotFound, "no context named nothing")
    assert _state(home, bound) == before
    assert texts.commit().push() is texts and texts.committed and api.get("test", "texts").committed
    assert api.commit("test", "frame").committed and api.push("test", "frame").uuid == frame.uuid

    api.context("other")
    api.remote("other", "shared", bound)
    _refused(lambda: api.push("other", "texts"), api.NotFound, "no bundle named texts in context other")
    pulled = api.pull("other", "texts")  # never was in this context
    assert pulled.uuid == texts.uuid and pulled.committed and pulled.tags == {"v": "1"}
    assert [Path(p).read_bytes() for p in pulled.data] == [p.read_bytes() for p in files]
    assert all("/contexts/other/" in p for p in pulled.data)
    pd.testing.assert_frame_equal(api.pull("other", uuid=frame.uuid).data, frame.data)
    api.rm("other", "texts")
    assert api.get("other", "texts") is None and Path(pulled.pull(localize=True).data[0]).exists()
    api.rm("other", rm_all=True)
    assert sorted(b.name for b in api.pull("other")) == ["frame", "texts"]
    api.Bundle("test", name="late", data=7).commit()
    assert sorted(b.name for b in api.push("test")) == ["frame", "late", "texts"]
    assert api.pull("other", "late").data == 7
    assert capsys.readouterr() == ("", "")


# -- errors and Disdat's names -------------------------------------------------------------------------------
def test_errors_are_the_library_types():
    assert (api.DisdatError, api.NotFound, api.IntegrityError, api.RemoteError, api.StoreDamaged, api.DiskFull,
            api.PipeFailed, api.ContainerFailed, api.SettingsError) == (
        errors.DisdatError, errors.NotFound, errors.IntegrityError, errors.RemoteError, errors.StoreDamaged,
        errors.DiskFull, errors.PipeFailed, errors.ContainerFailed, SettingsError)
    assert set(api.__all__) <= set(dir(api))


def test_refused_calls_change_nothing(home, monkeypatch):
    api.Bundle("test", name="kept", data=1, tags={"v": "1"})
    before = snapshot(home.path)
    cases = [
        (lambda: api.get("test", "kept", tags={"a:b": "c"}), api.DisdatError, "bad tag key 'a:b'"),
        (lambda: api.search("test", tags={"k": 1}), api.DisdatError, "bad value for tag k"),
        (lambda: api.search("test", tags=["k:v"]), api.DisdatError, "tags must be a dict"),
        (lambda: api.get("nothing", "kept"), api.NotFound, "no context named nothing"),
        (lambda: api.get("test"), api.DisdatError, "give a bundle name or uuid"),
        (lambda: api.commit("test", "nothing"), api.NotFound, "no bundle named nothing"),
        (lambda: api.Bundle("nothing", name="x", data=1), api.NotFound, "no context named nothing"),
        (lambda: api.Bundle("test", name="x", data=1, tags={"a:b": "c"}), api.DisdatError, "bad tag key"),
        (lambda: api.Bundle("test", name="no spaces", data=1), api.DisdatError, "invalid bundle name"),
        (lambda: api.Bundle("test", name="x").add_timing("soon", 1), api.DisdatError, "seconds since the epoch"),
        (lambda: api.Bundle("test", name="x").add_dependencies(api.Bundle("test")), api.DisdatError,
         "is not a closed bundle"),
        (lambda: api.Bundle("test", name="x", data=1).commit().push(), api.DisdatError, "has no remote"),
        (lambda: api.search("test", name="k*", human_name="k*"), api.DisdatError, "not both"),
        (lambda: api.run("test", None, "out", "wordcount.WordCount", params={}, pipeline_args={}), api.DisdatError,
         "not both"),
        (lambda: api.run("test", None, "out", "wordcount.WordCount", workers=0), api.DisdatError, "workers"),
        (lambda: api.run("test", None, "out", "wordcount.WordCount", params=[("a", 1)]), api.DisdatError,
         "params must be a dict"),
        (lambda: api.run("test", None, "out", "wordcount.WordCount"), api.DisdatError, "has no remote"),
    ]
    for call, error, fragment in cases:
        _refused(call, error, fragment)
    building = api.Bundle("test", name="x").open()
    _refused(lambda: building.get_file("../escape"), api.IntegrityError, "unsafe file path")
    building.abandon()
    monkeypatch.setenv("DISDAT_PACK_THRESHOLD", "lots")
    _refused(lambda: api.search("test"), api.SettingsError, "DISDAT_PACK_THRESHOLD")
    monkeypatch.delenv("DISDAT_PACK_THRESHOLD")
    # the bundles built above, refused or abandoned half-way, left nothing (a committed "x" aside)
    assert [b.name for b in api.search("test")] == ["x", "kept"]
    api.rm("test", "x")
    assert snapshot(home.path) == before


def _nested(depth, make=lambda inner: [inner], leaf=1):
    value = leaf
    for _ in range(depth):
        value = make(value)
    return value


DEEP = "nests lists and dicts more than 100 levels deep: flatten it or write it to a file"
FLAG = "takes True or False, not "


@pytest.mark.parametrize("call, fragment", [
    (lambda: api.run("test", None, "out", "named.Unnamed", workers="2"), "workers takes a whole number from 1 to 64, "
                                                                          "not '2'"),
    (lambda: api.run("test", None, "out", "named.Unnamed", workers=True), "workers takes a whole number"),
    (lambda: api.run("test", None, "out", "named.Unnamed", workers=2.0), "workers takes a whole number"),
    (lambda: api.run("test", None, "out", "named.Unnamed", aws_session_token_duration="3600"),
     "aws_session_token_duration takes a whole number of seconds, not '3600'"),
    (lambda: api.run("test", None, "out", "named.Unnamed", force="yes"), "force " + FLAG + "'yes'"),
    (lambda: api.run("test", None, "out", "named.Unnamed", force_all=1), "force_all " + FLAG + "1"),
    (lambda: api.run("test", None, "out", "named.Unnamed", push_input="no"), "push_input " + FLAG),
    (lambda: api.run("test", None, "out", "named.Unnamed", pull_intermediates=None), "pull_intermediates " + FLAG),
    (lambda: api.run("test", None, "out", "named.Unnamed", verbose="yes"), "verbose " + FLAG),
    (lambda: api.run("test", None, "out", "named.Unnamed", params=["a", 1]), "params must be a dict"),
    (lambda: api.run("test", None, "out", "named.Unnamed", params={"a": _nested(101)}), "params " + DEEP),
    (lambda: api.run("test", None, "out", "named.Unnamed", params={"a": {(1, 2): 3}}), "params cannot be JSON"),
    (lambda: api.run("test", None, "out", "named.Unnamed", input_tags="a:b"), "tags must be a dict"),
    (lambda: api.run("test", None, "out", "named.Unnamed", output_tags={"a": 1}), "bad value for tag a"),
    (lambda: api.run("test", None, "out", 5), "5 is not a pipe class"),
    (lambda: api.run("test", None, "out", dict), "is not a pipe class"),
    (lambda: api.run("test", 5, "out", "named.Unnamed"), "invalid input bundle name 5"),
    (lambda: api.run("test", None, ["out"], "named.Unnamed"), "invalid bundle name ['out']"),
    (lambda: api.run("test", None, "out", "named.Unnamed", backend=0), "backend takes a str, not 0"),
    (lambda: api.run("test", None, "out", "named.Unnamed", scheduler_url=8082),
     "scheduler_url takes a str, not 8082"),
    (lambda: api.run(None, None, "out", "named.Unnamed"), "invalid context name None"),
    (lambda: api.apply("test", "named.Unnamed", force="yes"), "force " + FLAG + "'yes'"),
    (lambda: api.apply("test", "named.Unnamed", force_all="no"), "force_all " + FLAG + "'no'"),
    (lambda: api.apply("test", "named.Unnamed", verbose=1), "verbose " + FLAG + "1"),
    (lambda: api.apply("test", "named.Unnamed", params=[("a", 1)]), "params must be a dict"),
    (lambda: api.apply("test", "named.Unnamed", params={"a": _nested(5_000, lambda inner: {"k": inner})}),
     "params " + DEEP),
    (lambda: api.apply("test", "named.Unnamed", input_tags="a:b"), "tags must be a dict"),
    (lambda: api.apply("test", "named.Unnamed", input_bundle=5), "input_bundle takes a bundle name or an api.Bundle, "
                                                                 "not 5"),
    (lambda: api.apply("test", "named.Unnamed", 5), "invalid bundle name 5"),
    (lambda: api.apply("test", 5), "5 is not a pipe class"),
    (lambda: api.Bundle("test", name="deep", data=_nested(100_000)), "a bundle's data " + DEEP),
    (lambda: api.Bundle("test", name="deep", data=_nested(5_000, lambda inner: {"k": inner})),
     "a bundle's data " + DEEP),
    (lambda: api.Bundle("test", name="deep", data=_nested(101)), "a bundle's data " + DEEP),
    (lambda: api.Bundle("test", name="deep", params={"p": _nested(100_000)}), "param p " + DEEP),
    (lambda: api.Bundle("test", name="deep").add_params({"p": {(1, 2): 3}}), "param p cannot be JSON"),
    (lambda: api.rm("test", "kept", rm_all="no"), "rm_all " + FLAG + "'no'"),
    (lambda: api.rm("test", "kept", rm_old_only=1), "rm_old_only " + FLAG + "1"),
    (lambda: api.search("test", is_committed="yes"), "is_committed " + FLAG + "'yes'"),
    (lambda: api.search("test", find_roots=1), "find_roots " + FLAG + "1"),
    (lambda: api.pull("test", "kept", localize="no"), "localize " + FLAG + "'no'"),
])
def test_wrong_arguments_are_one_error_before_anything_is_done(home, pipe_root, monkeypatch, capfd, call, fragment):
    from disdat_luigi.chain import run as chain_run

    def planned(options):
        raise AssertionError(f"planned a run with {options}")

    pipe_root(TEST_PIPES)
    monkeypatch.setattr(chain_run, "run", planned)
    api.Bundle("test", name="kept", data=1)
    api.Bundle("test", name="kept", data=2)
    before = snapshot(home.path)
    with pytest.raises(api.DisdatError) as info:
        call()
    assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)[:300]
    assert snapshot(home.path) == before and capfd.readouterr() == ("", "")


def test_a_bundle_holds_values_nested_100_levels_deep(home):
    made = api.Bundle("test", name="deep", data=_nested(100, leaf="bottom"), params={"p": _nested(100)})
    assert api.get("test", "deep").data == _nested(100, leaf="bottom") and made.params == {"p": str(_nested(100))}


def test_disdat_argument_names(home, pipe_root, files):
    upstream = api.Bundle(local_context="test", name="texts", data=[str(files[0])])
    b = api.Bundle("test", name="made", data={"n": 1}, tags={"t": "1"}, params={"p": "x"},
                   dependencies={"source": upstream}, code_method="pkg.mod.fn", start_time=10.0, stop_time=20.0)
    assert (b.params, b.dependencies, b.code_ref, b.timing) == ({"p": "x"}, {"source": upstream.uuid}, "pkg.mod.fn",
                                                               (10.0, 20.0))
    assert [x.name for x in api.search("test", human_name="ma*", tags={"t": "1"})] == ["made"]
    assert api.get("test", bundle_name="made").uuid == b.uuid
    out = api.apply(local_context="test", transform=_pipe_class("wordcount.WordCount"), output_bundle="counts",
                    params={"min_len": 3}, force_all=True, input_bundle="texts")
    assert out.params["min_len"] == "3" and out.name == "counts"
    assert api.rm("test", bundle_name="made", rm_all=True) == [b.uuid]
    assert api.commit("test", bundle_name="counts").committed


# -- dsdt cat and dsdt lineage ---------------------------------------------------------------------------------
def test_cat_shows_a_dataframe_as_a_table(home, cli):
    import pandas as pd

    api.Bundle("test", name="frame", data=pd.DataFrame({"region": ["eu", "us"], "sum": [8, 4]}))
    api.Bundle("test", name="values", data={"n": 1})
    r = cli("cat", "frame")
    assert r.code == 0 and r.out.splitlines() == ["  region  sum", "0     eu    8", "1     us    4"]
    path = json.loads(cli("cat", "--json", "frame").out)
    assert path.endswith(".json") and pd.read_json(path, orient="table")["sum"].tolist() == [8, 4]
    assert json.loads(cli("cat", "values").out) == {"n": 1} == json.loads(cli("cat", "--json", "values").out)


def test_lineage_takes_a_name_or_a_uuid(home, cli):
    first = api.Bundle("test", name="made", data=1, params={"p": "1"})
    latest = api.Bundle("test", name="made", data=2, params={"p": "2"})
    by_name = json.loads(cli("lineage", "made").out)
    assert by_name["uuid"] == latest.uuid and by_name["lineage"]["params"] == {"p": "2"}
    assert json.loads(cli("lineage", first.uuid).out)["uuid"] == first.uuid  # the positional UUID still works
    assert json.loads(cli("lineage", "-u", first.uuid).out)["uuid"] == first.uuid
    named_like_a_uuid = api.Bundle("test", name="00000000-0000-4000-8000-000000000000", data=3)
    assert json.loads(cli("lineage", named_like_a_uuid.name).out)["uuid"] == named_like_a_uuid.uuid
    r = cli("lineage", "nothing")
    assert r.code == 1 and "no bundle with uuid or name nothing in context test" in r.err


# -- in containers -----------------------------------------------------------------------------------------------
def test_run_in_a_container(home, bound, pipes_image, pipe_root, files, capsys):
    api.Bundle("test", name="draft", data=[str(files[0])])
    before = _state(home, bound)
    _refused(lambda: api.run("test", "draft", "counts", "wordcount.WordCount"), api.DisdatError,
             "is not committed")
    _refused(lambda: api.run("test", "missing", "counts", "wordcount.WordCount"), api.NotFound,
             "no bundle named missing")
    _refused(lambda: api.run("test", "draft", "counts", "wordcount.WordCount", params={"nope": 1}), api.DisdatError,
             "has no parameter --nope")
    assert _state(home, bound) == before
    texts = api.Bundle("test", name="texts", data=[str(p) for p in files]).commit()
    out = api.run("test", "texts", "counts", "wordcount.WordCount", params={"min_len": 4, "top": 1},
                  output_tags={"stage": "test"})
    assert out.params == {"min_len": "4", "top": "1"} and out.data["top"] == [["another", 2]]
    assert out.committed and out.tags == {"stage": "test"} and out.dependencies == {"pipeline_input": texts.uuid}
    assert out.lineage["image_id"].startswith("sha256:") and api.get("test", "counts").uuid == out.uuid
    record = _run_record(bound, out.lineage["run_id"])
    assert record.status == "succeeded" and record.output_uuid == out.uuid and record.backend == "Local"
    again = api.run("test", "texts", "counts", "wordcount.WordCount", pipeline_args={"min_len": "4", "top": "1"},
                    output_tags={"stage": "test"})
    assert again.uuid == out.uuid and _run_record(bound, out.lineage["run_id"]) == record  # nothing ran again
    assert capsys.readouterr() == ("", "")
