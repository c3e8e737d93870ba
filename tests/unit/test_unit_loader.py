"""Pipe parameters (CLI and JSON forms, the canonical form) and code versions (disdat_luigi.pipe.loader)."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import uuid

import luigi
import pytest

from disdat_luigi.errors import DisdatError, NotFound
from disdat_luigi.pipe import loader
from disdat_luigi.pipe.loader import (canonical_params, code_version, content_hash, files_of, from_canonical,
                                      load_pipe_class, params_from_json, parse_pipe_args, pipe_modules)
from disdat_luigi.pipe.task import PipeTask

M = __name__
KNOWN = "--min-len, --top, --verbose, --label, --ratio, --cols"
DEFAULTS = {"cols": "[]", "label": "x", "min_len": "3", "ratio": "0.5", "top": "10", "verbose": "False"}


def fresh():
    luigi.task_register.Register.clear_instance_cache()


@pytest.fixture(autouse=True)
def fresh_instances():
    fresh()
    yield
    fresh()


class LdPipe(PipeTask):
    min_len = luigi.IntParameter(default=3)
    top = luigi.IntParameter(default=10)
    verbose = luigi.BoolParameter(default=False)
    label = luigi.Parameter(default="x")
    ratio = luigi.FloatParameter(default=0.5)
    cols = luigi.ListParameter(default=[])

    def pipe_run(self):
        return None


class LdBare(PipeTask):
    def pipe_run(self):
        return None


def canonical_of(values: dict) -> dict:
    fresh()  # Luigi's instance cache would hand back an equal-valued instance made earlier
    return canonical_params(LdPipe(**values))


# ---------------------------------------------------------------------------------------------------
# parse_pipe_args
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    ([], {}),
    (["--min-len", "3"], {"min_len": 3}),
    (["--min-len=3"], {"min_len": 3}),
    (["--min-len", "-3"], {"min_len": -3}),
    (["--min-len", "4", "--top", "2"], {"min_len": 4, "top": 2}),
    (["--verbose"], {"verbose": True}),
    (["--verbose", "--min-len", "4"], {"verbose": True, "min_len": 4}),
    (["--min-len", "4", "--verbose"], {"min_len": 4, "verbose": True}),
    (["--verbose", "false"], {"verbose": False}),
    (["--verbose=false"], {"verbose": False}),
    (["--label", "a=b"], {"label": "a=b"}),
    (["--label=a=b"], {"label": "a=b"}),
    (["--ratio", "0.25"], {"ratio": 0.25}),
])
def test_parse_pipe_args_luigi_cli_form(args, expected):
    values = parse_pipe_args(LdPipe, args)
    assert values == expected
    assert [type(v) for v in values.values()] == [type(v) for v in expected.values()]


def test_parse_pipe_args_unknown_flag_lists_the_known_ones():
    with pytest.raises(DisdatError) as err:
        parse_pipe_args(LdPipe, ["--nope", "1"])
    assert str(err.value) == f"LdPipe has no parameter --nope (its parameters: {KNOWN})"


def test_parse_pipe_args_unknown_flag_of_a_class_without_parameters():
    with pytest.raises(DisdatError) as err:
        parse_pipe_args(LdBare, ["--x=1"])
    assert str(err.value) == "LdBare has no parameter --x (its parameters: none)"


def test_parse_pipe_args_missing_value():
    with pytest.raises(DisdatError) as err:
        parse_pipe_args(LdPipe, ["--top", "1", "--min-len"])
    assert str(err.value) == "--min-len needs a value"


def test_parse_pipe_args_positional_argument_is_refused():
    with pytest.raises(DisdatError) as err:
        parse_pipe_args(LdPipe, ["3"])
    assert str(err.value) == "unexpected pipe argument '3': write pipe parameters as --name value"


def test_parse_pipe_args_bad_value_names_the_parameter():
    with pytest.raises(DisdatError) as err:
        parse_pipe_args(LdPipe, ["--min-len", "abc"])
    assert str(err.value).startswith("bad value 'abc' for --min-len of LdPipe: ")


# ---------------------------------------------------------------------------------------------------
# params_from_json
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("{}", {}),
    ('{"min_len": 3}', {"min_len": 3}),
    ('{"min_len": "3"}', {"min_len": 3}),
    ('{"verbose": true}', {"verbose": True}),
    ('{"verbose": "true"}', {"verbose": True}),
    ('{"label": "hello"}', {"label": "hello"}),
    ('{"ratio": "0.25"}', {"ratio": 0.25}),
])
def test_params_from_json_typed_and_string_values(text, expected):
    values = params_from_json(LdPipe, text)
    assert values == expected
    assert [type(v) for v in values.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("text", ["[1, 2]", "3", "null", '"x"'])
def test_params_from_json_not_an_object(text):
    with pytest.raises(DisdatError) as err:
        params_from_json(LdPipe, text)
    assert str(err.value) == "pipe params must be a JSON object, e.g. '{\"min_len\": 3}'"


def test_params_from_json_invalid_json():
    with pytest.raises(DisdatError) as err:
        params_from_json(LdPipe, "{min_len: 3}")
    assert str(err.value).startswith("pipe params must be a JSON object: ")


@pytest.mark.parametrize("depth", [101, 100_000])
def test_params_from_json_nested_too_deep_is_one_line(depth):
    text = json.dumps({"cols": []}).replace("[]", "[" * depth + "]" * depth)
    with pytest.raises(DisdatError) as info:
        params_from_json(LdPipe, text)
    assert str(info.value) == "pipe params nests lists and dicts more than 100 levels deep: flatten it or write it " \
                              "to a file"


def test_params_from_json_unknown_key_lists_the_known_ones():
    with pytest.raises(DisdatError) as err:
        params_from_json(LdPipe, '{"max_len": 3}')
    assert str(err.value) == f"LdPipe has no parameter --max-len (its parameters: {KNOWN})"


def test_params_from_json_bad_value_names_the_parameter():
    with pytest.raises(DisdatError) as err:
        params_from_json(LdPipe, '{"min_len": "abc"}')
    assert str(err.value).startswith("bad value 'abc' for --min-len of LdPipe: ")


# ---------------------------------------------------------------------------------------------------
# one canonical form
# ---------------------------------------------------------------------------------------------------

def test_canonical_params_has_every_parameter_with_defaults_as_sorted_luigi_strings():
    canonical = canonical_params(LdPipe())
    assert canonical == DEFAULTS
    assert list(canonical) == sorted(DEFAULTS)


@pytest.mark.parametrize("form", ["cli", "cli=", "json int", "json str"])
def test_canonical_params_same_for_cli_and_json_forms(form):
    values = {"cli": lambda: parse_pipe_args(LdPipe, ["--min-len", "3", "--top", "7"]),
              "cli=": lambda: parse_pipe_args(LdPipe, ["--min-len=3", "--top=7"]),
              "json int": lambda: params_from_json(LdPipe, '{"min_len": 3, "top": 7}'),
              "json str": lambda: params_from_json(LdPipe, '{"min_len": "3", "top": "7"}')}[form]()
    assert canonical_of(values) == dict(DEFAULTS, min_len="3", top="7")


def test_canonical_params_same_for_list_given_as_json_list_or_luigi_string():
    as_list = canonical_of(params_from_json(LdPipe, '{"cols": ["a", "b"]}'))
    as_text = canonical_of(params_from_json(LdPipe, '{"cols": "[\\"a\\", \\"b\\"]"}'))
    as_cli = canonical_of(parse_pipe_args(LdPipe, ["--cols", '["a", "b"]']))
    assert as_list == as_text == as_cli == dict(DEFAULTS, cols='["a", "b"]')


def test_canonical_params_same_for_a_float_given_as_json_integer_or_on_the_cli():
    # both say "ratio is one": the node id (which hashes the canonical form) must not depend on the spelling
    cli = canonical_of(parse_pipe_args(LdPipe, ["--ratio", "1"]))
    json_int = canonical_of(params_from_json(LdPipe, '{"ratio": 1}'))
    assert json_int == cli == dict(DEFAULTS, ratio="1.0")


@pytest.mark.parametrize("text", ['{"min_len": 3.7}', '{"min_len": true}', '{"min_len": 3.0}', '{"verbose": 1}'])
def test_params_from_json_typed_values_are_refused_or_readable_in_the_container(text):
    """A typed JSON value params_from_json accepts must give a canonical form from_canonical reads back to the
    same value (the container receives the canonical form); otherwise it must be refused up front."""
    try:
        values = params_from_json(LdPipe, text)
    except DisdatError as exc:
        name = next(iter(json.loads(text)))
        assert str(exc).startswith(f"bad value {json.loads(text)[name]!r} for --{name.replace('_', '-')} of LdPipe")
        return
    canonical = canonical_of(values)
    fresh()
    back = canonical_params(from_canonical(LdPipe, canonical))
    assert back == canonical
    assert "None" not in canonical.values()


def test_from_canonical_round_trips():
    original = LdPipe(min_len=5, verbose=True, label="a b", ratio=0.125, cols=["p", "q"])
    canonical = canonical_params(original)
    fresh()
    back = from_canonical(LdPipe, canonical)
    assert canonical_params(back) == canonical
    assert (back.min_len, back.verbose, back.label, back.ratio, tuple(back.cols)) == (5, True, "a b", 0.125,
                                                                                      ("p", "q"))


def test_from_canonical_bad_value_raises_disdat_error_naming_the_parameter():
    with pytest.raises(DisdatError) as err:
        from_canonical(LdPipe, dict(DEFAULTS, min_len="abc"))
    assert str(err.value) == "bad value 'abc' for --min-len of LdPipe: invalid literal for int() with base 10: 'abc'"


def test_from_canonical_refuses_an_unknown_parameter():
    with pytest.raises(DisdatError) as err:
        from_canonical(LdPipe, dict(DEFAULTS, nope="1"))
    assert str(err.value).startswith("LdPipe has no parameter --nope (its parameters: ")


# ---------------------------------------------------------------------------------------------------
# load_pipe_class: from the pipe_root, and from nowhere else
# ---------------------------------------------------------------------------------------------------

PIPE_MODULE = """import os
os.environ["LD_RAN_" + __name__.upper()] = __file__  # what a test sees of a module that ran
from disdat_luigi import PipeTask


class Pipe(PipeTask):
    def pipe_run(self):
        return 1
"""


@pytest.fixture
def module_name(monkeypatch):
    """A module name nothing else has (and that leaves sys.modules as it found it)."""
    name = f"ld_{uuid.uuid4().hex[:12]}"
    monkeypatch.delenv("LD_RAN_" + name.upper(), raising=False)
    yield name
    sys.modules.pop(name, None)


def pipe_root_with(path, module_name):
    path.mkdir()
    (path / f"{module_name}.py").write_text(PIPE_MODULE)
    return path


def ran(module_name):
    return os.environ.get("LD_RAN_" + module_name.upper())


def test_a_pipe_module_of_the_pipe_root_is_loaded_and_loaded_again(tmp_path, module_name):
    root = pipe_root_with(tmp_path / "root", module_name)
    cls = load_pipe_class(f"{module_name}.Pipe", root)
    assert cls.pipe_path() == f"{module_name}.Pipe" and ran(module_name) == str(root / f"{module_name}.py")
    assert load_pipe_class(f"{module_name}.Pipe", root) is cls


def test_a_module_of_the_same_name_elsewhere_on_sys_path_is_refused_and_neither_runs(tmp_path, module_name,
                                                                                      monkeypatch):
    root = pipe_root_with(tmp_path / "root", module_name)
    elsewhere = pipe_root_with(tmp_path / "elsewhere", module_name)
    monkeypatch.syspath_prepend(str(elsewhere))  # before the pipe_root: a plain import would take this one
    with pytest.raises(DisdatError) as info:
        load_pipe_class(f"{module_name}.Pipe", root)
    assert str(info.value) == (f"module {module_name} under the pipe_root {root} has the name of the module at "
                               f"{elsewhere / f'{module_name}.py'}: rename it (one name is one module in a process)")
    assert ran(module_name) is None and module_name not in sys.modules


def test_a_module_of_another_pipe_root_already_imported_is_not_taken_for_this_one(tmp_path, module_name):
    first = pipe_root_with(tmp_path / "first", module_name)
    second = pipe_root_with(tmp_path / "second", module_name)
    load_pipe_class(f"{module_name}.Pipe", first)
    with pytest.raises(DisdatError, match=f"has the name of the module already imported from {first}"):
        load_pipe_class(f"{module_name}.Pipe", second)
    assert ran(module_name) == str(first / f"{module_name}.py")  # the second one never ran


@pytest.mark.parametrize("dotted, error, message", [
    ("sys.Pipe", DisdatError, "module sys under the pipe_root {root} has the name of a module built into Python: "
                              "rename it (one name is one module in a process)"),
    ("pkg.Pipe", NotFound, "unknown pipe class pkg.Pipe: {root}/pkg is not a package: add an __init__.py to it"),
    ("a-b.Pipe", DisdatError, "pipe class 'a-b.Pipe' must be module.PipeClass (module path under the pipe_root)"),
])
def test_names_that_cannot_be_a_pipe_module_of_the_pipe_root(tmp_path, dotted, error, message):
    root = tmp_path / "root"
    (root / "pkg").mkdir(parents=True)
    (root / "sys.py").write_text(PIPE_MODULE)
    (root / "a-b.py").write_text(PIPE_MODULE)
    with pytest.raises(error) as info:
        load_pipe_class(dotted, root)
    assert str(info.value) == message.format(root=root)


def test_pipe_modules_refuses_what_load_pipe_class_refuses(tmp_path, module_name):
    root = pipe_root_with(tmp_path / "root", module_name)
    assert pipe_modules(root) == [module_name]
    (root / "json.py").write_text(PIPE_MODULE)
    with pytest.raises(DisdatError, match="module json under the pipe_root .* has the name of the module already "
                                          "imported from "):
        pipe_modules(root)


# ---------------------------------------------------------------------------------------------------
# files_of / content_hash / code_version
# ---------------------------------------------------------------------------------------------------

TREE = {
    "a.py": b"print('a')\n",
    "requirements.txt": b"",
    "pkg/__init__.py": b"",
    "pkg/mod.py": b"x = 1\n",
    "pkg/sub/deep.py": b"y = 2\n",
}
EXCLUDED = {
    ".hidden": b"h",
    ".git/config": b"[core]",
    "pkg/.secret": b"s",
    "pkg/.cache/file.py": b"c",
    "__pycache__/a.cpython-311.pyc": b"\0",
    "pkg/__pycache__/mod.cpython-311.pyc": b"\0",
    "pkg/mod.pyc": b"\0",
    "pkg/mod.pyo": b"\0",
    "build/lib/a.py": b"b",
    "pkg/build/x.py": b"b",
    "dist/pkg-1.0.whl": b"d",
    "pkg.egg-info/PKG-INFO": b"e",
}


def make_tree(root, files, reverse=False):
    for rel in sorted(files, reverse=reverse):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "root", {**TREE, **EXCLUDED})


def test_files_of_skips_hidden_pycache_build_dist_egg_info_and_bytecode(tree):
    rels = [p.relative_to(tree).as_posix() for p in files_of(tree)]
    assert rels == ["a.py", "requirements.txt", "pkg/__init__.py", "pkg/mod.py", "pkg/sub/deep.py"]


def test_files_of_does_not_depend_on_the_order_the_filesystem_lists(tree, monkeypatch):
    expected = files_of(tree)
    version = code_version(tree)
    real_walk = os.walk

    def reversed_walk(top, *args, **kwargs):
        for root, dirs, names in real_walk(top, *args, **kwargs):
            dirs.reverse()
            names.reverse()
            yield root, dirs, names

    monkeypatch.setattr(loader.os, "walk", reversed_walk)
    assert files_of(tree) == expected
    assert code_version(tree) == version


def test_code_version_same_tree_written_in_another_order_is_the_same(tmp_path):
    one = make_tree(tmp_path / "one", TREE)
    two = make_tree(tmp_path / "two", TREE, reverse=True)
    assert code_version(one) == code_version(two)


def test_content_hash_is_sha256_over_relative_paths_and_content_hashes(tmp_path):
    root = make_tree(tmp_path / "r", {"a.txt": b"A", "d/b.txt": b"BB"})
    h = hashlib.sha256()
    for rel, data in (("a.txt", b"A"), ("d/b.txt", b"BB")):
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(data).digest())
    assert content_hash([root / "a.txt", root / "d" / "b.txt"], root) == h.hexdigest()
    assert code_version(root) == h.hexdigest()


def test_code_version_changes_when_one_byte_changes(tree):
    before = code_version(tree)
    (tree / "pkg" / "sub" / "deep.py").write_bytes(b"y = 3\n")
    assert code_version(tree) != before


def test_code_version_changes_when_a_file_is_renamed(tree):
    before = code_version(tree)
    (tree / "pkg" / "mod.py").rename(tree / "pkg" / "mod2.py")
    assert code_version(tree) != before


def test_code_version_changes_when_a_file_moves_to_another_directory(tree):
    before = code_version(tree)
    (tree / "pkg" / "mod.py").rename(tree / "pkg" / "sub" / "mod.py")
    assert code_version(tree) != before


def test_code_version_changes_when_two_files_swap_contents(tmp_path):
    one = make_tree(tmp_path / "one", {"a.py": b"1", "b.py": b"2"})
    two = make_tree(tmp_path / "two", {"a.py": b"2", "b.py": b"1"})
    assert code_version(one) != code_version(two)


def test_code_version_changes_when_an_empty_file_is_added(tree):
    before = code_version(tree)
    (tree / "pkg" / "new.py").write_bytes(b"")
    assert code_version(tree) != before


@pytest.mark.parametrize("rel", sorted(EXCLUDED))
def test_code_version_ignores_a_change_to_an_excluded_file(tree, rel):
    before = code_version(tree)
    (tree / rel).write_bytes(b"changed")
    assert code_version(tree) == before


def test_code_version_ignores_a_new_excluded_directory(tree):
    before = code_version(tree)
    make_tree(tree, {"x.egg-info/SOURCES.txt": b"s", "pkg/dist/y.tar.gz": b"t", ".venv/bin/python": b"p"})
    assert code_version(tree) == before
