"""Manifest validation (disdat_luigi.store.manifest): anything read from disk or a remote goes through it."""
from __future__ import annotations

import json

import pytest

from disdat_luigi.errors import DisdatError, IntegrityError
from disdat_luigi.store.manifest import (FileEntry, Manifest, check_created, check_name, check_relpath, now_utc,
                                         parse_tag, parse_tags)

SHA_A = "a" * 64
SHA_B = "b" * 64
PACK = "c" * 64
UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
INPUT_UUID = "11111111-2222-4333-8444-555555555555"
CREATED = "2026-01-31T12:00:00.000000Z"


def valid_manifest() -> Manifest:
    return Manifest(
        name="texts", uuid=UUID, created=CREATED, tags={"source": "tour", "empty": ""}, committed=True,
        presentation="dict",
        data={"doc": {"$file": "dir/a.txt"}, "n": 3, "frame": {"$frame": "frame-0.json"}, "s": "plain"},
        files={"dir/a.txt": FileEntry(SHA_A, 5), "frame-0.json": FileEntry(SHA_B, 10, PACK, 0)},
        lineage={"pipe": "m.P", "params": {"n": "1"}, "inputs": {"pipeline_input": INPUT_UUID},
                 "run_id": "ab" * 8, "node_id": "cd" * 16, "processing_id": "ef" * 32})


def valid_dict() -> dict:
    return json.loads(valid_manifest().to_json())


def parse(d) -> Manifest:
    return Manifest.from_json(json.dumps(d).encode())


def test_a_valid_manifest_round_trips():
    m = valid_manifest()
    assert Manifest.from_json(m.to_json()) == m


def test_a_minimal_manifest_parses_with_defaults():
    m = Manifest.from_json(json.dumps({"format": 1, "name": "x", "uuid": UUID, "created": CREATED,
                                       "presentation": "scalar", "files": {}}).encode())
    assert (m.tags, m.committed, m.data, m.files, m.lineage) == ({}, False, None, {}, None)


def test_file_entries_keep_their_pack_location_only_when_packed():
    m = Manifest.from_json(valid_manifest().to_json())
    assert m.files["frame-0.json"] == FileEntry(SHA_B, 10, PACK, 0)
    assert m.files["dir/a.txt"] == FileEntry(SHA_A, 5, None, None)
    assert m.without_locations().files["frame-0.json"] == FileEntry(SHA_B, 10, None, None)


def set_data_ref(d, ref, key="$file"):
    d["data"]["doc"] = {key: ref}


def set_file(d, rel, entry=None):
    d["files"][rel] = entry or {"sha256": SHA_A, "size": 1}


def set_in(path, value):
    def mutate(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


# (mutation of a valid manifest's dict, the start of the error message: it names the field)
BAD = {
    "data ref absolute": (lambda d: set_data_ref(d, "/etc/passwd"),
                          "field data refers to '/etc/passwd', which is not one of the bundle's files"),
    "data ref dotdot": (lambda d: set_data_ref(d, "../dir/a.txt"),
                        "field data refers to '../dir/a.txt', which is not one of the bundle's files"),
    "data ref not a file": (lambda d: set_data_ref(d, "dir/b.txt"),
                            "field data refers to 'dir/b.txt', which is not one of the bundle's files"),
    "data ref not a str": (lambda d: set_data_ref(d, 3), "field data refers to 3, which is not"),
    "frame ref not a file": (lambda d: set_data_ref(d, "frame-1.json", "$frame"),
                             "field data refers to 'frame-1.json', which is not one of the bundle's files"),
    "file both file and dir": (lambda d: set_file(d, "dir"), "field files: 'dir' is both a file and a directory"),
    "file both file and deep dir": (lambda d: set_file(d, "x/y/z") or set_file(d, "x"),
                                    "field files: 'x' is both a file and a directory"),
    "file path absolute": (lambda d: set_file(d, "/etc/passwd"), "field files: unsafe file path '/etc/passwd'"),
    "file path dotdot": (lambda d: set_file(d, "dir/../../x"), "field files: unsafe file path 'dir/../../x'"),
    "file entry not an object": (lambda d: set_file(d, "e.txt", [SHA_A, 1]),
                                 "field files['e.txt'] is not an object"),
    "bad sha256": (set_in(["files", "dir/a.txt", "sha256"], "xyz"),
                   "field files['dir/a.txt'].sha256 is not a sha256"),
    "uppercase sha256": (set_in(["files", "dir/a.txt", "sha256"], "A" * 64),
                         "field files['dir/a.txt'].sha256 is not a sha256"),
    "sha256 with a newline": (set_in(["files", "dir/a.txt", "sha256"], SHA_A + "\n"),
                              "field files['dir/a.txt'].sha256 is not a sha256"),
    "negative size": (set_in(["files", "dir/a.txt", "size"], -1), "field files['dir/a.txt'].size is not a size"),
    "bool size": (set_in(["files", "dir/a.txt", "size"], True), "field files['dir/a.txt'].size is not a size"),
    "float size": (set_in(["files", "dir/a.txt", "size"], 5.0), "field files['dir/a.txt'].size is not a size"),
    "pack without offset": (lambda d: d["files"]["frame-0.json"].pop("offset"),
                            "field files['frame-0.json'].pack/offset is not a pack location"),
    "pack not a sha": (set_in(["files", "frame-0.json", "pack"], "../x"),
                       "field files['frame-0.json'].pack/offset is not a pack location"),
    "created a path": (set_in(["created"], "../../x"), "field created: '../../x' is not a UTC timestamp"),
    "created a date": (set_in(["created"], "2026-01-01"), "field created: '2026-01-01' is not a UTC timestamp"),
    "created with a newline": (set_in(["created"], CREATED + "\n"), "field created: "),
    "created with an escape": (set_in(["created"], "\x1b[2J" + CREATED), "field created: "),
    "created month 13": (set_in(["created"], "2026-13-01T00:00:00.000000Z"), "field created: "),
    "created not a str": (set_in(["created"], 20260101), "field created: 20260101 is not a UTC timestamp"),
    "created in other digits": (set_in(["created"], "\uff12\uff10\uff12\uff16-01-31T12:00:00.000000Z"),
                                "field created: "),
    "uuid uppercase": (set_in(["uuid"], UUID.upper()), f"field uuid: '{UUID.upper()}' is not a uuid"),
    "uuid not a uuid": (set_in(["uuid"], "../../etc"), "field uuid: '../../etc' is not a uuid"),
    "uuid with a newline": (set_in(["uuid"], UUID + "\n"), "field uuid: "),
    "name with slash": (set_in(["name"], "a/b"), "field name: invalid bundle name 'a/b'"),
    "name 201 chars": (set_in(["name"], "n" * 201), "field name: invalid bundle name"),
    "name with a newline": (set_in(["name"], "texts\n"), "field name: invalid bundle name"),
    "name starting with dot": (set_in(["name"], ".texts"), "field name: invalid bundle name"),
    "tag value control chars": (set_in(["tags", "source"], "tour\x1b[31m"), "field tags: bad value for tag source"),
    "tag value newline": (set_in(["tags", "source"], "a\nb"), "field tags: bad value for tag source"),
    "tag key with colon": (set_in(["tags", "a:b"], "c"), "field tags: bad tag key 'a:b'"),
    "tag key empty": (set_in(["tags", ""], "c"), "field tags: bad tag key ''"),
    "tag value not a str": (set_in(["tags", "source"], 3), "field tags: bad value for tag source"),
    "tags not an object": (set_in(["tags"], ["a:b"]), "field tags is not an object"),
    "committed not a bool": (set_in(["committed"], "yes"), "field committed is not true or false"),
    "presentation not matching data": (set_in(["presentation"], "list"),
                                       "field presentation list does not match the data"),
    "presentation unknown": (set_in(["presentation"], "table"), "field presentation 'table' is unknown"),
    "files not an object": (set_in(["files"], []), "field files is not an object"),
    "lineage not an object": (set_in(["lineage"], "x"), "field lineage is not an object"),
    "lineage inputs not a uuid": (set_in(["lineage", "inputs", "pipeline_input"], "nope"),
                                  "field lineage.inputs['pipeline_input']: 'nope' is not a uuid"),
    "lineage inputs not an object": (set_in(["lineage", "inputs"], [INPUT_UUID]),
                                     "field lineage.inputs is not an object"),
    "lineage run_id not hex": (set_in(["lineage", "run_id"], "xyz-not-hex-at-all"),
                               "field lineage.run_id: 'xyz-not-hex-at-all' is not a hex id"),
    "lineage node_id too short": (set_in(["lineage", "node_id"], "abc"),
                                  "field lineage.node_id: 'abc' is not a hex id"),
    "wrong format": (set_in(["format"], 2), "manifest format 2 is not supported"),
    "missing format": (lambda d: d.pop("format"), "manifest format None is not supported"),
    "missing uuid": (lambda d: d.pop("uuid"), "field uuid is missing"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_from_json_refuses_a_bad_field_naming_it(case):
    mutate, message = BAD[case]
    d = valid_dict()
    mutate(d)
    with pytest.raises(IntegrityError) as err:
        parse(d)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)


def test_from_json_refuses_a_file_path_that_is_not_unicode_text():
    d = valid_dict()
    set_file(d, "dir/\udc80")  # a lone surrogate: JSON can spell it, no file system can store it as UTF-8
    with pytest.raises(IntegrityError) as err:
        parse(d)
    assert str(err.value).startswith("field files: unsafe file path"), str(err.value)


@pytest.mark.parametrize("raw, message", [
    (b"{", "manifest is not valid JSON: "),
    (b"\xff\xfe\x00", "manifest is not valid JSON: "),
    (b"[]", "manifest is not a JSON object"),
    (b'"texts"', "manifest is not a JSON object"),
    (b"null", "manifest is not a JSON object"),
])
def test_from_json_refuses_what_is_not_a_json_object(raw, message):
    with pytest.raises(IntegrityError) as err:
        Manifest.from_json(raw)
    assert str(err.value).startswith(message)


def test_from_json_accepts_a_name_of_200_chars():
    d = valid_dict()
    d["name"] = "n" * 200
    assert parse(d).name == "n" * 200


def test_from_json_accepts_files_presentation_for_a_list_of_refs():
    d = valid_dict()
    d["data"] = [{"$file": "dir/a.txt"}, {"$file": "frame-0.json"}]
    d["presentation"] = "files"
    assert parse(d).presentation == "files"


# ---------------------------------------------------------------------------------------------------
# check_relpath, check_created, check_name, parse_tag
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["a", "a.txt", "dir/a.txt", "d1/d2/d3/f", "..a", "a..", ".hidden", "x" * 255,
                                  "/".join(["d"] * 512)[:1023] + "e"])
def test_check_relpath_accepts_relative_paths_inside_the_bundle(path):
    assert check_relpath(path) == path


@pytest.mark.parametrize("path", ["", "/a", "/", "..", "../a", "a/..", "a/../b", ".", "./a", "a/.", "a//b", "a/",
                                  "a\\b", "..\\a", "a\nb", "a\x1bb", "a\x00b", "x" * 256, "d/" + "x" * 256,
                                  "/".join(["d"] * 513), None, 3])
def test_check_relpath_refuses_paths_that_escape_or_are_not_plain(path):
    with pytest.raises(IntegrityError) as err:
        check_relpath(path)
    assert str(err.value).startswith("unsafe file path ")


def test_check_created_accepts_what_now_utc_writes():
    stamp = now_utc()
    assert check_created(stamp) == stamp
    assert check_created(CREATED) == CREATED


@pytest.mark.parametrize("text", ["../../x", "2026-01-01", "2026-01-31 12:00:00.000000Z", "2026-01-31T12:00:00Z",
                                  "2026-01-31T12:00:00.000000", "2026-01-31T12:00:00.000000+00:00",
                                  CREATED + "\n", "\n" + CREATED, CREATED + "\x1b[0m", "2026-02-30T12:00:00.000000Z",
                                  "2026-01-31T25:00:00.000000Z", "", None, 1769860800])
def test_check_created_refuses_anything_but_the_strict_form(text):
    with pytest.raises(IntegrityError) as err:
        check_created(text, "created")
    assert str(err.value).startswith("created ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["texts", "a", "A.b_c-d", "9lives", "n" * 200])
def test_check_name_accepts_plain_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".x", "_x", "a/b", "a b", "a:b", "n" * 201, "texts\n", "t\u00e9xt", None])
def test_check_name_refuses_other_names(name):
    with pytest.raises(DisdatError) as err:
        check_name(name)
    assert str(err.value).startswith("invalid bundle name ")


@pytest.mark.parametrize("text, expected", [("a:b", ("a", "b")), ("a:", ("a", "")), ("stage:dev", ("stage", "dev")),
                                            ("k:v w", ("k", "v w"))])
def test_parse_tag_key_value(text, expected):
    assert parse_tag(text) == expected


@pytest.mark.parametrize("text, message", [
    ("a:b:c", "bad tag 'a:b:c': write tags as key:value with exactly one ':'"),
    ("ab", "bad tag 'ab': write tags as key:value with exactly one ':'"),
    (":b", "bad tag ':b': the key before ':' is empty"),
    ("  :b", "bad tag '  :b': the key before ':' is empty"),
    ("a:\x1b[2J", "bad value for tag a: "),
])
def test_parse_tag_refuses(text, message):
    with pytest.raises(DisdatError) as err:
        parse_tag(text)
    assert str(err.value).startswith(message)


def test_parse_tags_makes_a_dict_and_none_is_empty():
    assert parse_tags(["a:1", "b:", "a:2"]) == {"a": "2", "b": ""}
    assert parse_tags(None) == {}


# ---------------------------------------------------------------------------------------------------
# nesting: what is read is walked recursively later
# ---------------------------------------------------------------------------------------------------

def nested(depth, leaf=1):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def test_from_json_refuses_json_nested_deeper_than_python_can_parse():
    raw = valid_manifest().to_json().replace(b'"data":', b'"data":' + b"[" * 100_000 + b"1" + b"]" * 100_000 +
                                             b',"was":', 1)
    with pytest.raises(IntegrityError) as info:
        Manifest.from_json(raw)
    assert str(info.value) == ("manifest nests JSON deeper than it can be read (a bundle's data nests at most 100 "
                               "levels)")


@pytest.mark.parametrize("field, value", [
    ("data", nested(101)),
    ("data", nested(900)),              # parses, but later walks (and copies) recurse
    ("lineage", {"params": {"p": nested(200)}}),
])
def test_from_json_refuses_fields_nested_more_than_100_levels(field, value):
    d = dict(valid_dict(), presentation="list", files={}, **{field: value})
    if field == "lineage":
        d.update(presentation="scalar", data=1)
    with pytest.raises(IntegrityError) as info:
        parse(d)
    assert str(info.value) == f"field {field} nests lists and objects more than 100 levels deep"


def test_from_json_accepts_data_nested_100_levels_around_a_file():
    d = dict(valid_dict(), presentation="list", data=nested(100, {"$file": "dir/a.txt"}))
    assert parse(d).data == nested(100, {"$file": "dir/a.txt"})
