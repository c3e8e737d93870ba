"""Expanding a pipe class and its upstream pipes into a graph of nodes (disdat_luigi.pipe.graph)."""
from __future__ import annotations

import luigi
import pytest

from disdat_luigi.errors import DisdatError
from disdat_luigi.pipe import identity
from disdat_luigi.pipe.graph import expand, fresh_root, reads_input
from disdat_luigi.pipe.task import PipeTask

M = __name__


@pytest.fixture(autouse=True)
def fresh_instances():
    luigi.task_register.Register.clear_instance_cache()
    yield
    luigi.task_register.Register.clear_instance_cache()


class GrJoin(PipeTask):
    n = luigi.IntParameter(default=1)

    def pipe_run(self):
        return self.n


class GrLeft(PipeTask):
    def pipe_requires(self):
        self.add_dependency("shared_l", GrJoin, {"n": 1})

    def pipe_run(self, shared_l):
        return shared_l


class GrRight(PipeTask):
    def pipe_requires(self):
        self.add_dependency("shared_r", GrJoin, {"n": 1})

    def pipe_run(self, shared_r):
        return shared_r


class GrRightOther(PipeTask):
    def pipe_requires(self):
        self.add_dependency("shared_r", GrJoin, {"n": 2})

    def pipe_run(self, shared_r):
        return shared_r


class GrDiamond(PipeTask):
    def pipe_requires(self):
        self.add_dependency("left", GrLeft)
        self.add_dependency("right", GrRight)

    def pipe_run(self, left, right):
        return left + right


class GrForked(PipeTask):
    def pipe_requires(self):
        self.add_dependency("left", GrLeft)
        self.add_dependency("right", GrRightOther)

    def pipe_run(self, left, right):
        return left + right


class GrTwoNames(PipeTask):
    def pipe_requires(self):
        self.add_dependency("first", GrJoin, {"n": 7})
        self.add_dependency("second", GrJoin, {"n": 7})

    def pipe_run(self, first, second):
        return first


class GrNamed(PipeTask):
    def pipe_requires(self):
        self.set_bundle_name("custom-name")

    def pipe_run(self):
        return 1


class GrUsesNamed(PipeTask):
    def pipe_requires(self):
        self.add_dependency("dep", GrNamed)
        self.set_bundle_name("ignored-for-the-root")

    def pipe_run(self, dep):
        return dep


class GrReadsInput(PipeTask):
    def pipe_run(self, pipeline_input):
        return pipeline_input


class GrReadsKwargs(PipeTask):
    def pipe_run(self, **kwargs):
        return kwargs


class GrReadsNothing(PipeTask):
    x = luigi.IntParameter(default=0)

    def pipe_run(self, x):
        return x


class GrMixed(PipeTask):
    def pipe_requires(self):
        self.add_dependency("a", GrReadsInput)
        self.add_dependency("b", GrReadsNothing)

    def pipe_run(self, a, b):
        return a


class GrCycA(PipeTask):
    n = luigi.IntParameter()

    def pipe_requires(self):
        self.add_dependency("b", GrCycB, {"n": self.n})

    def pipe_run(self, b):
        return b


class GrCycB(PipeTask):
    n = luigi.IntParameter()

    def pipe_requires(self):
        self.add_dependency("a", GrCycA, {"n": self.n})

    def pipe_run(self, a):
        return a


class GrAboveCycle(PipeTask):
    def pipe_requires(self):
        self.add_dependency("a", GrCycA, {"n": 5})

    def pipe_run(self, a):
        return a


# a tree with two independent branches: GrTreeRoot <- (GrBranchL <- GrLeafL), (GrBranchR <- GrLeafR)
class GrLeafL(PipeTask):
    def pipe_run(self):
        return 1


class GrLeafR(PipeTask):
    def pipe_run(self):
        return 2


class GrBranchL(PipeTask):
    def pipe_requires(self):
        self.add_dependency("leaf", GrLeafL)

    def pipe_run(self, leaf):
        return leaf


class GrBranchR(PipeTask):
    def pipe_requires(self):
        self.add_dependency("leaf", GrLeafR)

    def pipe_run(self, leaf):
        return leaf


class GrTreeRoot(PipeTask):
    def pipe_requires(self):
        self.add_dependency("left", GrBranchL)
        self.add_dependency("right", GrBranchR)

    def pipe_run(self, left, right):
        return left + right


class GrNamesItself(PipeTask):
    suffix = luigi.Parameter(default="a")

    def pipe_requires(self):
        self.add_dependency("dep", GrJoin)
        self.set_bundle_name(f"its-name-{self.suffix}")

    def pipe_run(self, dep):
        return dep


class _GrPrivate(PipeTask):
    def pipe_run(self):
        return 1


class GrBadDependencyName(PipeTask):
    def pipe_requires(self):
        self.add_dependency("a/b", GrJoin)

    def pipe_run(self, **kwargs):
        return 1


def classes(graph):
    return [n.pipe_cls for n in graph.nodes.values()]


# ---------------------------------------------------------------------------------------------------
# expand
# ---------------------------------------------------------------------------------------------------

def test_expand_diamond_has_one_node_for_the_shared_upstream():
    graph = expand(GrDiamond(), "out")
    assert classes(graph) == [f"{M}.GrJoin", f"{M}.GrLeft", f"{M}.GrRight", f"{M}.GrDiamond"]


def test_expand_orders_upstream_first_and_the_root_last():
    graph = expand(GrDiamond(), "out")
    keys = list(graph.nodes)
    assert keys[-1] == graph.root == GrDiamond().task_id
    assert graph.root_node.is_root is True
    assert [n.is_root for n in graph.nodes.values()] == [False, False, False, True]
    for position, node in enumerate(graph.nodes.values()):
        assert all(keys.index(up) < position for up in node.upstream.values())


def test_expand_diamond_upstream_maps_point_at_the_shared_node():
    graph = expand(GrDiamond(), "out")
    join = GrJoin(n=1).task_id
    assert graph.nodes[GrLeft().task_id].upstream == {"shared_l": join}
    assert graph.nodes[GrRight().task_id].upstream == {"shared_r": join}
    assert graph.root_node.upstream == {"left": GrLeft().task_id, "right": GrRight().task_id}
    assert graph.nodes[join].upstream == {}


def test_expand_shared_upstream_with_different_params_gives_two_nodes():
    graph = expand(GrForked(), "out")
    assert classes(graph) == [f"{M}.GrJoin", f"{M}.GrLeft", f"{M}.GrJoin", f"{M}.GrRightOther", f"{M}.GrForked"]
    joins = [n for n in graph.nodes.values() if n.pipe_cls == f"{M}.GrJoin"]
    assert [j.params for j in joins] == [{"n": "1"}, {"n": "2"}]
    assert [j.bundle_name for j in joins] == ["out-shared_l", "out-shared_r"]


def test_expand_names_a_shared_upstream_by_the_first_dependency_name_in_declaration_order():
    graph = expand(GrDiamond(), "out")
    names = {n.pipe_cls: n.bundle_name for n in graph.nodes.values()}
    assert names == {f"{M}.GrJoin": "out-shared_l", f"{M}.GrLeft": "out-left", f"{M}.GrRight": "out-right",
                     f"{M}.GrDiamond": "out"}


def test_expand_one_instance_under_two_names_is_one_node_named_by_the_first():
    graph = expand(GrTwoNames(), "out")
    join = GrJoin(n=7).task_id
    assert list(graph.nodes) == [join, GrTwoNames().task_id]
    assert graph.nodes[join].bundle_name == "out-first"
    assert graph.root_node.upstream == {"first": join, "second": join}


def test_expand_set_bundle_name_names_an_upstream_and_a_given_name_the_root():
    graph = expand(GrUsesNamed(), "out")
    assert [n.bundle_name for n in graph.nodes.values()] == ["custom-name", "out"]


@pytest.mark.parametrize("cls, output_name, expected", [
    (GrNamesItself, None, ["its-name-a-dep", "its-name-a"]),       # none given: the root's set_bundle_name
    (GrNamesItself, "given", ["given-dep", "given"]),               # a given name wins over it
    (GrUsesNamed, None, ["custom-name", "ignored-for-the-root"]),   # the root's own, when none is given
    (GrLeft, None, ["GrLeft-shared_l", "GrLeft"]),                  # neither: the class name, case kept
])
def test_expand_names_the_root_as_disdat_does(cls, output_name, expected):
    graph = expand(fresh_root(cls, {}), output_name)
    assert [n.bundle_name for n in graph.nodes.values()] == expected


def test_expand_set_bundle_name_may_depend_on_the_parameters_of_a_fresh_root():
    assert expand(fresh_root(GrNamesItself, {}), None).root_node.bundle_name == "its-name-a"
    assert expand(fresh_root(GrNamesItself, {"suffix": "b"}), None).root_node.bundle_name == "its-name-b"


def test_node_ids_hash_the_root_name_however_it_was_chosen():
    def root_id(output_name, suffix="a"):
        graph = expand(fresh_root(GrNamesItself, {"suffix": suffix}), output_name)
        return graph.node_ids(lambda node: "code", "", "", {})[graph.root]

    assert root_id(None) == root_id("its-name-a")  # named by the pipe or by the caller: one output
    assert len({root_id(None), root_id("other"), root_id(None, "b")}) == 3


@pytest.mark.parametrize("cls, output_name, message", [
    (_GrPrivate, None, f"invalid bundle name for {M}._GrPrivate '_GrPrivate': use letters, digits"),
    (GrBadDependencyName, "out", f"invalid bundle name for {M}.GrJoin 'out-a/b': use letters, digits"),
])
def test_expand_refuses_a_name_no_bundle_can_have_before_anything_runs(cls, output_name, message):
    with pytest.raises(DisdatError) as err:
        expand(fresh_root(cls, {}), output_name)
    assert str(err.value).startswith(message), str(err.value)


def test_expand_params_are_canonical_luigi_strings():
    graph = expand(GrReadsNothing(x=4), "out")
    assert graph.root_node.params == {"x": "4"}
    assert graph.root_node.key == GrReadsNothing(x=4).task_id


@pytest.mark.parametrize("cls, expected", [(GrReadsInput, True), (GrReadsKwargs, True), (GrReadsNothing, False),
                                           (GrLeft, False)])
def test_reads_input_only_with_pipeline_input_or_kwargs(cls, expected):
    assert reads_input(cls) is expected


def test_expand_records_reads_input_per_node():
    graph = expand(GrMixed(), "out")
    assert {n.pipe_cls: n.reads_input for n in graph.nodes.values()} == {
        f"{M}.GrReadsInput": True, f"{M}.GrReadsNothing": False, f"{M}.GrMixed": False}


def test_expand_a_cycle_raises_naming_the_cycle():
    with pytest.raises(DisdatError) as err:
        expand(GrCycA(n=1), "out")
    assert str(err.value) == f"the pipes depend on each other in a cycle: {M}.GrCycA -> {M}.GrCycB -> {M}.GrCycA"


def test_expand_a_cycle_below_the_root_names_only_the_cycle():
    with pytest.raises(DisdatError) as err:
        expand(GrAboveCycle(), "out")
    assert str(err.value) == f"the pipes depend on each other in a cycle: {M}.GrCycA -> {M}.GrCycB -> {M}.GrCycA"


# ---------------------------------------------------------------------------------------------------
# Graph.node_ids
# ---------------------------------------------------------------------------------------------------

def tree_ids(codes=None, input_uuid="", nonce="", tags=None):
    codes = codes or {}
    graph = expand(GrTreeRoot(), "out")
    ids = graph.node_ids(lambda node: codes.get(node.pipe_cls, "code-0"), input_uuid, nonce, tags or {})
    return {graph.nodes[key].pipe_cls.rpartition(".")[2]: value for key, value in ids.items()}


def test_node_ids_a_leaf_code_change_changes_it_and_downstream_only():
    before = tree_ids()
    after = tree_ids(codes={f"{M}.GrLeafL": "code-1"})
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"GrLeafL", "GrBranchL", "GrTreeRoot"}


def test_node_ids_output_tags_change_only_the_root():
    before = tree_ids(tags={"stage": "dev"})
    after = tree_ids(tags={"stage": "prod"})
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"GrTreeRoot"}


@pytest.mark.parametrize("change", [{"input_uuid": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"}, {"nonce": "again"}])
def test_node_ids_input_uuid_and_nonce_change_every_node(change):
    before = tree_ids()
    after = tree_ids(**change)
    assert all(before[name] != after[name] for name in before)
    assert len(before) == 5


def test_node_ids_are_the_identity_hashes_with_upstream_ids():
    graph = expand(GrTreeRoot(), "out")
    ids = graph.node_ids(lambda node: "img", "", "n", {"k": "v"})
    leaf = GrLeafL().task_id
    branch = GrBranchL().task_id
    assert ids[leaf] == identity.node_id(pipe_cls=f"{M}.GrLeafL", params={}, code="img", input_uuid="",
                                         upstream={}, nonce="n", root_output=None)
    assert ids[branch] == identity.node_id(pipe_cls=f"{M}.GrBranchL", params={}, code="img", input_uuid="",
                                           upstream={"leaf": ids[leaf]}, nonce="n", root_output=None)
    assert ids[graph.root] == identity.node_id(
        pipe_cls=f"{M}.GrTreeRoot", params={}, code="img", input_uuid="",
        upstream={"left": ids[branch], "right": ids[GrBranchR().task_id]}, nonce="n",
        root_output=("out", {"k": "v"}))
