"""Node ids and bundle names (disdat_luigi.pipe.identity): pure functions of explicit inputs."""
from __future__ import annotations

import re

import pytest

from disdat_luigi.pipe import identity
from disdat_luigi.pipe.identity import canonical_json, node_id, root_bundle_name, upstream_bundle_name

UP_LEFT = "1" * 32
UP_RIGHT = "2" * 32
UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"


def base() -> dict:
    return dict(pipe_cls="report.TextReport", params={"min_len": "3", "top": "5"}, code="sha256:aaaa",
                input_uuid=UUID, upstream={"left": UP_LEFT, "right": UP_RIGHT}, nonce="",
                root_output=("report", {"stage": "dev"}))


def changed(**changes) -> dict:
    kwargs = base()
    kwargs.update(changes)
    return kwargs


# each input, changed alone, must change the id
VARIANTS = {
    "pipe class": changed(pipe_cls="report.OtherReport"),
    "first param value": changed(params={"min_len": "4", "top": "5"}),
    "second param value": changed(params={"min_len": "3", "top": "6"}),
    "param added": changed(params={"min_len": "3", "top": "5", "extra": ""}),
    "param removed": changed(params={"min_len": "3"}),
    "param renamed": changed(params={"min_len": "3", "tops": "5"}),
    "code": changed(code="sha256:bbbb"),
    "input uuid": changed(input_uuid="0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0fa"),
    "no input": changed(input_uuid=""),
    "left upstream id": changed(upstream={"left": "3" * 32, "right": UP_RIGHT}),
    "right upstream id": changed(upstream={"left": UP_LEFT, "right": "3" * 32}),
    "upstream dependency name": changed(upstream={"lhs": UP_LEFT, "right": UP_RIGHT}),
    "upstream ids swapped": changed(upstream={"left": UP_RIGHT, "right": UP_LEFT}),
    "upstream added": changed(upstream={"left": UP_LEFT, "right": UP_RIGHT, "more": "4" * 32}),
    "nonce": changed(nonce="f00d"),
    "root output name": changed(root_output=("report2", {"stage": "dev"})),
    "root output tag value": changed(root_output=("report", {"stage": "prod"})),
    "root output tag key": changed(root_output=("report", {"phase": "dev"})),
    "root output tag added": changed(root_output=("report", {"stage": "dev", "x": "y"})),
    "root output tags empty": changed(root_output=("report", {})),
    "not the root": changed(root_output=None),
}


@pytest.mark.parametrize("what", list(VARIANTS))
def test_node_id_changes_when_one_input_changes(what):
    assert node_id(**VARIANTS[what]) != node_id(**base())


def test_node_id_variants_are_all_distinct_from_each_other():
    ids = [node_id(**kwargs) for kwargs in VARIANTS.values()]
    assert len(set(ids)) == len(ids)


def test_node_id_root_with_empty_tags_differs_from_a_non_root():
    assert node_id(**changed(root_output=("report", {}))) != node_id(**changed(root_output=None))


def test_node_id_a_value_moved_from_params_to_upstream_changes_the_id():
    a = node_id(**changed(params={"x": UP_LEFT}, upstream={}))
    b = node_id(**changed(params={}, upstream={"x": UP_LEFT}))
    assert a != b


def test_node_id_ignores_dict_order_of_params_upstream_and_tags():
    reordered = changed(params={"top": "5", "min_len": "3"}, upstream={"right": UP_RIGHT, "left": UP_LEFT},
                        root_output=("report", {"b": "2", "a": "1"}))
    ordered = changed(root_output=("report", {"a": "1", "b": "2"}))
    assert node_id(**reordered) == node_id(**ordered)


def test_node_id_is_deterministic():
    assert node_id(**base()) == node_id(**base())


def test_node_id_is_32_lowercase_hex_digits():
    value = node_id(**base())
    assert re.fullmatch(r"[0-9a-f]{32}", value), value
    assert identity.ID_LENGTH == 32


def test_node_id_nonce_defaults_to_empty_and_root_output_to_none():
    kwargs = base()
    del kwargs["nonce"]
    del kwargs["root_output"]
    assert node_id(**kwargs) == node_id(**changed(nonce="", root_output=None))



# ---------------------------------------------------------------------------------------------------
# bundle names
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("output_name, set_name, expected", [
    ("report", "custom", "report"),         # a given name wins over set_bundle_name (Disdat's human_id)
    ("report", None, "report"),
    (None, "custom", "custom"),             # none given: the name pipe_requires set
    (None, None, "TextReport"),             # neither: the class name, case kept (Disdat's type(self).__name__)
])
def test_root_bundle_name_is_the_given_name_else_the_set_name_else_the_class_name(output_name, set_name, expected):
    assert root_bundle_name(output_name=output_name, set_name=set_name, class_name="TextReport") == expected


def test_upstream_bundle_name_set_name_wins_over_the_dependency_name():
    assert upstream_bundle_name(root_name="report", set_name="custom", dependency_name="words") == "custom"


def test_upstream_bundle_name_is_the_root_name_dash_dependency_name():
    assert upstream_bundle_name(root_name="report", set_name=None, dependency_name="words") == "report-words"


# ---------------------------------------------------------------------------------------------------
# canonical_json
# ---------------------------------------------------------------------------------------------------

def test_canonical_json_sorts_keys_at_every_level_without_spaces():
    value = {"b": 1, "a": {"z": [1, 2], "y": None}}
    assert canonical_json(value) == '{"a":{"y":null,"z":[1,2]},"b":1}'


def test_canonical_json_is_independent_of_insertion_order():
    assert canonical_json({"x": 1, "y": {"q": 2, "p": 3}}) == canonical_json({"y": {"p": 3, "q": 2}, "x": 1})


def test_canonical_json_keeps_list_order():
    assert canonical_json([2, 1]) == "[2,1]"
