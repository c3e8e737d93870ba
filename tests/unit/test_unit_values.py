"""Python values <-> a bundle's data (disdat_luigi.store.values)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from disdat_luigi.errors import DisdatError
from disdat_luigi.store.values import (MAX_DEPTH, DataText, decode, encode, file_refs, nests_too_deep,
                                       presentation_of)


class Bundle:
    """What a staging bundle gives encode: adopt copies a file in, new_file hands out a fresh path."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.adopted = []

    def adopt(self, path: Path) -> str:
        self.adopted.append(Path(path))
        rel = Path(path).name
        if Path(path).parent != self.root:
            shutil.copyfile(path, self.root / rel)
        return rel

    def new_file(self, rel: str) -> Path:
        return self.root / rel

    def encode(self, value):
        return encode(value, self.adopt, self.new_file)


@pytest.fixture
def bundle(tmp_path):
    return Bundle(tmp_path / "bundle")


@pytest.fixture
def outside(tmp_path):
    """An existing file outside the bundle, named by an absolute path."""
    path = tmp_path / "elsewhere" / "secret.txt"
    path.parent.mkdir()
    path.write_text("secret")
    return path


def test_encode_decode_round_trip(bundle, outside):
    value = {"n": 1, "x": 2.5, "ok": True, "none": None, "s": "text", "l": [1, "two", [3]], "f": str(outside)}
    presentation, data = bundle.encode(value)
    assert presentation == "dict"
    assert data == {"n": 1, "x": 2.5, "ok": True, "none": None, "s": "text", "l": [1, "two", [3]],
                    "f": {"$file": "secret.txt"}}
    assert decode(data, bundle.root) == dict(value, f=str(bundle.root / "secret.txt"))
    assert (bundle.root / "secret.txt").read_text() == "secret"


@pytest.mark.parametrize("value, presentation, data", [
    (3, "scalar", 3),
    ("text", "scalar", "text"),
    (None, "scalar", None),
    ([1, 2], "list", [1, 2]),
    ((1, 2), "list", [1, 2]),
    ([], "list", []),
    ({}, "dict", {}),
    ({"a": [1]}, "dict", {"a": [1]}),
])
def test_encode_presentations_of_json_values(bundle, value, presentation, data):
    assert bundle.encode(value) == (presentation, data)
    assert bundle.adopted == []


def test_encode_paths_and_lists_of_paths_are_files(bundle, outside, tmp_path):
    other = tmp_path / "elsewhere" / "b.txt"
    other.write_text("b")
    assert bundle.encode(outside) == ("files", {"$file": "secret.txt"})
    assert bundle.encode([str(outside), other]) == ("files", [{"$file": "secret.txt"}, {"$file": "b.txt"}])


def test_encode_a_missing_path_object_is_an_error(bundle, tmp_path):
    with pytest.raises(DisdatError) as err:
        bundle.encode(tmp_path / "missing.txt")
    assert str(err.value) == (f"output file {tmp_path / 'missing.txt'} does not exist: write it before "
                              f"returning it")


@pytest.mark.parametrize("value", [{"$file": "x.txt"}, {"$frame": "f.json"}, {"a": {"$file": "x.txt"}},
                                   [{"$file": "/etc/passwd"}]])
def test_encode_refuses_a_dict_whose_only_key_is_a_reference(bundle, value):
    with pytest.raises(DisdatError) as err:
        bundle.encode(value)
    assert "is reserved for files in a bundle" in str(err.value)
    assert bundle.adopted == []


def test_encode_a_dict_with_file_key_and_another_key_is_a_dict(bundle):
    assert bundle.encode({"$file": "x", "other": 1}) == ("dict", {"$file": "x", "other": 1})


def test_encode_refuses_non_str_keys_and_other_types(bundle):
    with pytest.raises(DisdatError) as err:
        bundle.encode({1: "a"})
    assert str(err.value) == "a bundle can hold dicts with str keys only, got key 1"
    with pytest.raises(DisdatError) as err:
        bundle.encode({"s": {1, 2}})
    assert str(err.value).startswith("a bundle cannot hold a set: ")


def test_a_plain_str_naming_an_existing_absolute_file_becomes_a_file(bundle, outside):
    assert bundle.encode(str(outside)) == ("files", {"$file": "secret.txt"})
    assert bundle.adopted == [outside]


def test_a_data_text_naming_an_existing_absolute_file_stays_a_string(bundle, outside):
    presentation, data = bundle.encode(DataText(str(outside)))
    assert (presentation, data) == ("scalar", str(outside))
    assert type(data) is str
    assert bundle.adopted == []


def test_strings_read_from_a_bundle_stay_strings_when_a_pipe_returns_them(bundle, outside, tmp_path):
    """An input bundle spelling out an absolute path must not make the output bundle copy that file."""
    received = decode({"path": str(outside), "paths": [str(outside)], "n": 1}, tmp_path / "input", mark_text=True)
    assert bundle.encode(received) == ("dict", {"path": str(outside), "paths": [str(outside)], "n": 1})
    assert bundle.adopted == []


def test_file_refs_read_from_a_bundle_stay_files_when_a_pipe_returns_them(bundle, tmp_path):
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / "in.txt").write_text("in")
    received = decode({"$file": "in.txt"}, inputs, mark_text=True)
    assert received == str(inputs / "in.txt") and type(received) is str
    assert bundle.encode(received) == ("files", {"$file": "in.txt"})
    assert bundle.adopted == [inputs / "in.txt"]


def test_plain_strings_that_are_not_existing_absolute_files_stay_strings(bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relative.txt").write_text("r")
    (tmp_path / "adir").mkdir()
    for text in ["relative.txt", str(tmp_path / "missing.txt"), str(tmp_path / "adir"), "~/x"]:
        assert bundle.encode(text) == ("scalar", text)
    assert bundle.adopted == []


def test_decode_with_mark_text_marks_every_string(tmp_path):
    value = decode({"a": "x", "l": ["y", 1, None], "d": {"z": "w"}}, tmp_path, mark_text=True)
    assert type(value["a"]) is DataText and type(value["l"][0]) is DataText and type(value["d"]["z"]) is DataText
    assert value == {"a": "x", "l": ["y", 1, None], "d": {"z": "w"}}
    assert value["l"][1] == 1 and type(value["l"][1]) is int


def test_decode_without_mark_text_returns_plain_str(tmp_path):
    value = decode({"a": "x", "l": ["y"], "s": "z"}, tmp_path)
    assert [type(v) for v in (value["a"], value["l"][0], value["s"])] == [str, str, str]
    assert type(decode("top", tmp_path)) is str


def test_decode_file_refs_are_absolute_paths_under_the_files_root(tmp_path):
    assert decode([{"$file": "a/b.txt"}, {"$file": "c"}], tmp_path) == [str(tmp_path / "a/b.txt"),
                                                                        str(tmp_path / "c")]
    assert decode({"$frame": "f.json"}, tmp_path, load_frames=False) == str(tmp_path / "f.json")
    assert os.path.isabs(decode({"$file": "c"}, tmp_path))


def test_file_refs_and_presentation_of():
    data = {"a": {"$file": "x"}, "b": [{"$frame": "y"}, {"$file": "z", "k": 1}], "c": "w"}
    assert file_refs(data) == ["x", "y"]
    assert presentation_of({"$frame": "y"}) == "dataframe"
    assert presentation_of({"$file": "x"}) == "files"
    assert presentation_of([{"$file": "x"}, {"$file": "y"}]) == "files"
    assert presentation_of([{"$file": "x"}, 1]) == "list"
    assert presentation_of([]) == "list"
    assert presentation_of({"$file": "x", "k": 1}) == "dict"
    assert presentation_of("s") == "scalar"


# ---------------------------------------------------------------------------------------------------
# nesting depth
# ---------------------------------------------------------------------------------------------------

def nested(depth, leaf=1, make=lambda inner: [inner]):
    value = leaf
    for _ in range(depth):
        value = make(value)
    return value


TOO_DEEP = "a bundle's data nests lists and dicts more than 100 levels deep: flatten it or write it to a file"


def test_data_nested_max_depth_levels_round_trips_with_a_file_at_the_bottom(bundle, outside):
    presentation, data = bundle.encode(nested(MAX_DEPTH, str(outside)))
    assert presentation == "list" and not nests_too_deep(data)  # the file reference is a leaf
    assert decode(data, bundle.root) == nested(MAX_DEPTH, str(bundle.root / "secret.txt"))
    assert file_refs(data) == ["secret.txt"]


@pytest.mark.parametrize("value", [
    nested(MAX_DEPTH + 1),
    nested(100_000),                                            # deeper than Python's recursion limit
    nested(5_000, make=lambda inner: {"k": inner}),
    nested(MAX_DEPTH, make=lambda inner: ({"k": inner},)),      # tuples and dicts count alike
], ids=["101 lists", "100,000 lists", "5,000 dicts", "tuples of dicts"])
def test_data_nested_deeper_is_refused_in_one_line(bundle, value):
    with pytest.raises(DisdatError) as info:
        bundle.encode(value)
    assert str(info.value) == TOO_DEEP
    assert nests_too_deep(value)


def test_a_list_that_holds_itself_is_refused_not_walked_forever(bundle):
    loop = [1]
    loop.append(loop)
    with pytest.raises(DisdatError, match="more than 100 levels deep"):
        bundle.encode(loop)
    assert nests_too_deep(loop)
