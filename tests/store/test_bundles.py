"""The bundle model and local store, through the library API the CLI and the Luigi tasks use."""
from __future__ import annotations

import json
import os

import pytest

from disdat_luigi.store.context import MANIFEST
from disdat_luigi.errors import DisdatError, IntegrityError, NotFound
from disdat_luigi.store.manifest import FORMAT, Manifest, check_relpath, parse_tag


def test_values_round_trip_with_their_python_types(home):
    ctx = home.context()
    for value in ({"a": 1, "b": [1.5, True, None, "x"]}, [1, 2, 3], 42, 2.5, "hello", True, None):
        b = ctx.add_value("v", value)
        assert ctx.bundle(b.uuid).data() == value
        assert type(ctx.bundle(b.uuid).data()) is type(value)


def test_presentation_records_the_shape(home):
    ctx = home.context()
    assert ctx.add_value("a", {"k": 1}).manifest.presentation == "dict"
    assert ctx.add_value("a", [1]).manifest.presentation == "list"
    assert ctx.add_value("a", 3).manifest.presentation == "scalar"


def test_file_values_are_copied_in_and_come_back_as_local_paths(home, tmp_path):
    src = tmp_path / "report.txt"
    src.write_text("numbers")
    b = home.context().add_value("files", {"report": str(src), "label": "relative/not/a/file"})
    data = b.data()
    assert data["label"] == "relative/not/a/file"
    assert data["report"] != str(src) and open(data["report"]).read() == "numbers"
    src.write_text("changed later")  # the bundle keeps its own copy
    assert open(data["report"]).read() == "numbers"
    entry = b.manifest.files["report.txt"]
    assert entry.size == 7 and len(entry.sha256) == 64


def test_dataframe_round_trip_keeps_dtypes(home):
    pd = pytest.importorskip("pandas")  # pandas is in the test extras, so this always runs in CI
    df = pd.DataFrame({"n": [1, 2], "x": [0.5, 1.5], "s": ["a", "b"]})
    b = home.context().add_value("frame", df)
    assert b.manifest.presentation == "dataframe"
    back = home.context().bundle(b.uuid).data()
    pd.testing.assert_frame_equal(back, df)


def test_unsupported_values_are_refused_without_a_trace(home):
    ctx = home.context()
    with pytest.raises(DisdatError, match="^a bundle cannot hold a object: return dicts, lists"):
        ctx.add_value("bad", object())
    with pytest.raises(DisdatError, match="^a bundle can hold dicts with str keys only, got key 1$"):
        ctx.add_value("bad", {1: "x"})
    assert ctx.find() == []
    assert list(ctx.tmp.iterdir()) == []  # the staging directory is gone too


def test_add_paths_keeps_relative_paths(home, tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    single = tmp_path / "c.csv"
    single.write_text("c")
    b = home.context().add_paths("mixed", [d, single])
    assert sorted(b.manifest.files) == ["c.csv", "in/a.txt", "in/sub/b.txt"]
    assert b.manifest.presentation == "files"
    assert [os.path.relpath(p, b.files_dir) for p in b.data()] == ["in/a.txt", "in/sub/b.txt", "c.csv"]


def test_add_paths_refuses_two_sources_with_one_name(home, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.txt").write_text("1")
    (tmp_path / "a.txt").write_text("2")
    with pytest.raises(DisdatError, match="both be stored as 'a.txt'"):
        home.context().add_paths("dup", [tmp_path / "a.txt", tmp_path / "a.txt"])
    with pytest.raises(DisdatError, match="both be stored as 'a.txt'"):  # two files of one name
        home.context().add_paths("dup", [tmp_path / "x" / "a.txt", tmp_path / "a.txt"])
    assert home.context().find() == [] and list(home.context().tmp.iterdir()) == []


def test_latest_versions_tags_and_search(home):
    ctx = home.context()
    v1 = ctx.add_value("n", 1, tags={"env": "dev"})
    v2 = ctx.add_value("n", 2, tags={"env": "prod"})
    ctx.add_value("other", 3)
    assert ctx.latest("n").uuid == v2.uuid
    assert ctx.latest("n", {"env": "dev"}).uuid == v1.uuid
    assert [r.uuid for r in ctx.find(["n"])] == [v2.uuid, v1.uuid]
    assert [r.name for r in ctx.find(latest_only=True)] == ["n", "other"]
    assert [r.uuid for r in ctx.find(tags={"env": "prod"})] == [v2.uuid]
    assert [r.name for r in ctx.find(["o*"])] == ["other"]
    with pytest.raises(NotFound):
        ctx.latest("n", {"env": "qa"})


def test_commit_adds_tags_and_freezes_them(home):
    ctx = home.context()
    b = ctx.commit(ctx.add_value("c", 1), {"release": "1"})
    assert b.committed and b.tags == {"release": "1"}
    on_disk = json.loads((b.dir / MANIFEST).read_text())
    assert on_disk["committed"] is True and on_disk["tags"] == {"release": "1"}
    assert ctx.commit(b).committed  # committing again is harmless
    with pytest.raises(DisdatError, match="already committed"):
        ctx.commit(b, {"release": "2"})


def test_remove_unlists_and_deletes(home):
    ctx = home.context()
    b = ctx.add_value("r", [1])
    ctx.remove([b.uuid])
    assert not ctx.has(b.uuid) and not b.dir.exists()


def test_manifest_rejects_paths_that_escape_the_bundle():
    for bad in ("../x", "/etc/passwd", "a/../../b", "a//b", "./a", "", "a\\b"):
        with pytest.raises(IntegrityError):
            check_relpath(bad)
    m = Manifest(name="ok")
    raw = json.loads(m.to_json())
    raw["files"] = {"../evil": {"sha256": "0" * 64, "size": 1}}
    with pytest.raises(IntegrityError, match="unsafe file path"):
        Manifest.from_json(json.dumps(raw).encode())


def test_manifest_format_is_versioned():
    raw = json.loads(Manifest(name="ok").to_json())
    assert raw["format"] == FORMAT
    raw["format"] = FORMAT + 1
    with pytest.raises(IntegrityError, match="format"):
        Manifest.from_json(json.dumps(raw).encode())


@pytest.mark.parametrize("bad", ["a:b:c", ":v", "novalue", "", " :x"])
def test_bad_tags(bad):
    with pytest.raises(DisdatError, match="bad tag"):
        parse_tag(bad)


def test_tag_with_empty_value_is_allowed():
    assert parse_tag("flag:") == ("flag", "")


def test_bad_names_are_refused(home):
    for bad in ("", "-x", "a/b", "a b", "../x", "a*"):
        with pytest.raises(DisdatError) as refused:
            home.context().add_value(bad, 1)
        assert str(refused.value) == (f"invalid bundle name {bad!r}: use letters, digits, '.', '_' and '-' (at most "
                                      f"200), starting with a letter or digit")
    assert home.context().find() == [] and list(home.context().tmp.iterdir()) == []
