"""What a run is, end to end, on the real Docker engine: every part of a node's identity makes the same
`dsdt run` run its container again (a new input version, a changed parameter, a rebuilt image, new output
tags), and nothing else does: the same run repeated, the same run through `luigi --module disdat_luigi RunPipe`,
or the same run from a second context sharing the remote, only pulls what already ran. `--pull-intermediates`
pulls every node's output, `--force` runs every node again, `[run] workers` runs independent nodes at once,
`dsdt lineage` tells how an output was made, `[run] labels` label the containers.

The images: `[dockerize] base_image` from luigi.cfg is the base an image is built on, a rebuilt base image
makes `dsdt dockerize` build again, and an image holding another disdat-luigi is refused with the command that
fixes it.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from conftest import (DSDT, IMAGE_PREFIX, PIPES, REPO, TEST_PIPES, _remote_keys, assert_user_error, docker_containers,
                      nodes_started, run_dsdt, second_context, snapshot)
from disdat_luigi.remotes import open_remote
from disdat_luigi.runs.store import RunStore

pytestmark = pytest.mark.timeout(240)
LUIGI = str(Path(sys.executable).parent / "luigi")


@pytest.fixture
def remote(home, cli, tmp_path, pipes_image, pipe_root):
    """The active context bound to a file:// remote, holding a committed bundle `texts` tagged v:1."""
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    _texts(cli, tmp_path / "texts", {"a.txt": "The cat sat on the mat.\nThe end.\n", "b.txt": "A cat and a dog.\n"},
           "v:1")
    return url


def _texts(cli, directory: Path, files: dict, tag: str) -> str:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    r = cli("add", "-t", tag, "texts", directory)
    assert r.code == 0, r.err
    uuid = r.out.split()[2]
    assert cli("commit", "-u", uuid).code == 0
    return uuid


def _run(*args, env=None):
    return run_dsdt("run", *args, cwd=REPO, timeout=200, env=env)


def _records(url) -> dict:
    with open_remote(url, "shared") as remote:
        runs = RunStore(remote)
        return {node: runs.record(node) for node in runs.node_ids()}


def _said(r, name, uuid, context="test"):
    """dsdt run's last stdout line names the output bundle it left in the context."""
    return r.out.splitlines()[-1] == f"{name} {uuid} is in context {context} (`dsdt cat {name}`)"


class History:
    """What the runs of one test did so far: every node recorded on the remote and every output version."""

    def __init__(self, home, url, name):
        self.home, self.url, self.name = home, url, name
        self.nodes = set(_records(url))
        self.uuids = [row.uuid for row in home.context().find([name])]

    def ran_again(self, r):
        """r ran exactly one container, for a new node, whose new output is now the latest version."""
        assert r.code == 0, r.err
        assert nodes_started(r.err) == 1, r.err
        records = _records(self.url)
        (node,) = set(records) - self.nodes
        latest = self.home.context().latest(self.name)
        assert records[node].status == "succeeded" and records[node].output_uuid == latest.uuid
        assert latest.uuid not in self.uuids and latest.manifest.lineage["run_id"] == node
        assert _said(r, self.name, latest.uuid)
        self.nodes.add(node)
        self.uuids.append(latest.uuid)
        return records[node], latest

    def ran_nothing(self, r, uuid, context="test"):
        """r ran no container, recorded nothing, made no version, and found ``uuid`` as its output."""
        assert r.code == 0, r.err
        assert nodes_started(r.err) == 0, r.err
        assert set(_records(self.url)) == self.nodes
        assert sorted(row.uuid for row in self.home.context(context).find([self.name])) == (
            sorted(self.uuids) if context == "test" else [uuid])
        assert _said(r, self.name, uuid, context)


# ---------------------------------------------------------------------------------------------------
# every part of the identity, and nothing else
# ---------------------------------------------------------------------------------------------------

def test_a_new_parameter_output_tag_or_input_version_runs_again_and_the_same_run_does_not(home, cli, remote,
                                                                                          tmp_path):
    base = ("texts", "counts", "wordcount.WordCount", "--min-len", "3")
    history = History(home, remote, "counts")
    record, first = history.ran_again(_run(*base))
    assert record.params == {"min_len": "3", "top": "10"} and first.data()["total_words"] == 10
    history.ran_nothing(_run(*base), first.uuid)
    history.ran_nothing(_run("texts", "counts", "wordcount.WordCount", "--min-len=3", "--top", "10"), first.uuid)

    record, changed = history.ran_again(_run("texts", "counts", "wordcount.WordCount", "--min-len", "4"))
    assert record.params == {"min_len": "4", "top": "10"} and changed.data()["total_words"] == 0

    record, tagged = history.ran_again(_run("-ot", "k:v", *base))
    assert tagged.tags == {"k": "v"} and record.params == {"min_len": "3", "top": "10"}
    assert tagged.data()["top"] == first.data()["top"]

    newer = _texts(cli, tmp_path / "newer", {"z.txt": "zebra zebra zebra\n"}, "v:2")
    record, renewed = history.ran_again(_run(*base))
    assert record.inputs == {"pipeline_input": newer} and renewed.data()["top"] == [["zebra", 3]]

    # the first run again: the input by its tag (input tags only choose the input), nothing runs
    history.ran_nothing(_run("-it", "v:1", *base), first.uuid)
    assert docker_containers() == []


def test_a_rebuilt_image_runs_again(home, cli, remote, tmp_path, docker_ready, monkeypatch):
    """The example pipe_root copied with one more file and dockerized under a repository prefix of its own is
    another image: the same run in it runs again; back on the session's image, it runs nothing."""
    base = ("texts", "counts", "wordcount.WordCount", "--min-len", "3")
    history = History(home, remote, "counts")
    first_record, first = history.ran_again(_run(*base))

    root = tmp_path / "pipes-copy"
    shutil.copytree(PIPES, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "extra.txt").write_text(uuidlib.uuid4().hex)
    env = {"DISDAT_DOCKERIZE_REPOSITORY_PREFIX": f"{IMAGE_PREFIX}/rebuilt", "DISDAT_PIPE_ROOT": str(root)}
    built = run_dsdt("dockerize", "--base-image", docker_ready, root, "wordcount", env=env)
    assert built.code == 0 and built.out.startswith(f"building the image of {root} on {docker_ready}\n"), built
    record, rebuilt = history.ran_again(_run(*base, env=env))
    assert record.image != first_record.image and record.image == rebuilt.manifest.lineage["image_id"]
    assert record.params == first_record.params and record.inputs == first_record.inputs
    history.ran_nothing(_run(*base), first.uuid)


def test_dsdt_run_and_luigi_runpipe_are_the_same_run(home, remote):
    history = History(home, remote, "counts")
    _, first = history.ran_again(_run("texts", "counts", "wordcount.WordCount", "--min-len", "3"))

    def runpipe(params):
        return subprocess.run([LUIGI, "--module", "disdat_luigi", "RunPipe", "--input-bundle", "texts",
                               "--output-bundle", "counts", "--pipe-cls", "wordcount.WordCount", "--pipe-params",
                               json.dumps(params), "--local-scheduler"], capture_output=True, text=True, cwd=REPO,
                              timeout=200)

    same = runpipe({"min_len": 3})
    assert same.returncode == 0, same.stderr
    assert nodes_started(same.stderr) == 0 and set(_records(remote)) == history.nodes
    assert [row.uuid for row in home.context().find(["counts"])] == [first.uuid]
    # the same RunPipe with another parameter does run (so the line above would show a container)
    other = runpipe({"min_len": 4})
    assert other.returncode == 0 and nodes_started(other.stderr) == 1, other.stderr
    assert len(_records(remote)) == 2 and home.context().latest("counts").data()["total_words"] == 0


def test_a_second_context_repeating_a_finished_run_only_pulls(home, cli, remote):
    args = ("texts", "counts", "wordcount.WordCount", "--min-len", "3")
    history = History(home, remote, "counts")
    _, first = history.ran_again(_run(*args))
    other = second_context(home, cli, remote)
    assert cli("pull", "texts").code == 0   # the same input version, from the remote
    history.ran_nothing(_run(*args), first.uuid, context="other")
    pulled = other.latest("counts")
    assert pulled.uuid == first.uuid and pulled.data()["top"] == first.data()["top"]
    assert docker_containers() == []


# ---------------------------------------------------------------------------------------------------
# a graph: intermediates, --force, [run] workers
# ---------------------------------------------------------------------------------------------------

def test_pull_intermediates_force_and_workers_on_a_graph(home, cli, remote, monkeypatch):
    """report.TextReport with WordCount and LineStats upstream: with [run] workers = 2 the two upstream nodes
    run at the same time; only the requested output is pulled, unless --pull-intermediates (which then runs
    nothing and pulls the other two); --force runs the three nodes again."""
    monkeypatch.setenv("DISDAT_RUN_WORKERS", "2")
    args = ("texts", "report", "report.TextReport")
    r = _run(*args)
    assert r.code == 0, r.err
    assert nodes_started(r.err) == 3
    records = _records(remote)
    by_pipe = {rec.pipe_cls: rec for rec in records.values()}
    assert set(by_pipe) == {"report.TextReport", "wordcount.WordCount", "linestats.LineStats"}
    words, lines = by_pipe["wordcount.WordCount"], by_pipe["linestats.LineStats"]
    assert max(words.started, lines.started) < min(words.stopped, lines.stopped), (words, lines)  # at once
    ctx = home.context()
    assert sorted(row.name for row in ctx.find()) == ["report", "texts"]
    root = by_pipe["report.TextReport"]
    lineage = json.loads(cli("lineage", "report").out)   # how it was made: pipe, parameters, inputs, image, run
    assert lineage["uuid"] == root.output_uuid and lineage["lineage"]["pipe"] == "report.TextReport"
    assert lineage["lineage"]["params"] == {"min_len": "3"} and lineage["lineage"]["run_id"] == root.node_id
    assert lineage["lineage"]["image_id"] == root.image
    assert {k: v for k, v in lineage["lineage"]["inputs"].items() if k != "pipeline_input"} == {
        "words": words.output_uuid, "lines": lines.output_uuid}

    again = _run("--pull-intermediates", *args)
    assert again.code == 0 and nodes_started(again.err) == 0, again.err
    assert set(_records(remote)) == set(records)
    assert sorted(row.name for row in ctx.find()) == ["line_stats", "report", "report-words", "texts"]
    assert {n: ctx.latest(n).uuid for n in ("report", "report-words", "line_stats")} == {
        rec.bundle_name: rec.output_uuid for rec in records.values()}
    assert ctx.latest("report").data()["top_words"] == ["the", "cat", "sat", "mat", "end"]

    forced = _run("--force", *args)
    assert forced.code == 0 and nodes_started(forced.err) == 3, forced.err
    renewed = _records(remote)
    assert len(renewed) == 6 and {rec.pipe_cls for n, rec in renewed.items() if n not in records} == set(by_pipe)
    assert len(ctx.find(["report"])) == 2 and len(ctx.find(["line_stats"])) == 1  # intermediates: not pulled


# ---------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def scratch_images():
    """Ids of images a test makes for itself, removed (newest first) when it ends: they must not outlive it,
    where a later dockerize could find them."""
    import docker

    made: list = []
    yield made
    client = docker.from_env()
    for image_id in reversed(made):
        try:
            client.images.remove(image_id, force=True)
        except docker.errors.APIError:   # still the parent of another image, or already gone
            pass


def _derived_image(source: str, tag: str, *steps: str, **labels) -> str:
    """An image that is ``source`` with these Dockerfile steps and labels on top, tagged ``tag``; returns its
    id."""
    import docker

    lines = [f"FROM {source}", *steps] + [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
    image, _ = docker.from_env().images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True,
                                              pull=False, network_mode="none")
    return image.id


def _slow_root(tmp_path) -> Path:
    """A pipe_root of its own (slow.py and a unique file): its first dockerize really builds."""
    root = tmp_path / "pipe_root"
    root.mkdir()
    shutil.copy2(TEST_PIPES / "slow.py", root / "slow.py")
    (root / "unique.txt").write_text(uuidlib.uuid4().hex)
    return root


def test_the_base_image_comes_from_luigi_cfg_and_a_rebuilt_base_forces_a_rebuild(docker_ready, tmp_path,
                                                                                   monkeypatch, scratch_images):
    import docker

    client = docker.from_env()
    base = f"{IMAGE_PREFIX}/throwaway-base:latest"
    client.images.get(docker_ready).tag(f"{IMAGE_PREFIX}/throwaway-base", "latest")   # another name, same image
    token = uuidlib.uuid4().hex
    root = _slow_root(tmp_path)
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text(f"[dockerize]\nbase_image = {base}\n")
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(cfg))
    monkeypatch.setenv("DISDAT_DOCKERIZE_REPOSITORY_PREFIX", f"{IMAGE_PREFIX}/basecfg")
    name = f"{IMAGE_PREFIX}/basecfg/disdat-slow:latest"

    first = run_dsdt("dockerize", root)
    assert first.code == 0 and first.out.startswith(f"building the image of {root} on {base}\n"), first
    image = client.images.get(name)
    scratch_images.append(image.id)
    assert image.labels["disdat.base_image"] == base and "disdat.test.base" not in image.labels

    same = run_dsdt("dockerize", root)
    assert same.code == 0 and same.out.splitlines() == [f"up to date: {image.short_id} (nothing changed since the "
                                                        f"last build)", f"tagged {name} ({image.short_id})"], same

    scratch_images.append(_derived_image(docker_ready, base, **{"disdat.test.base": token}))  # the base name, now
    # another image
    rebuilt = run_dsdt("dockerize", root)
    assert rebuilt.code == 0 and rebuilt.out.startswith(f"building the image of {root} on {base}\n"), rebuilt
    image2 = client.images.get(name)
    scratch_images.append(image2.id)
    assert image2.id != image.id and image2.labels["disdat.test.base"] == token   # built on the new base
    assert image2.labels["disdat.base_image"] == base
    assert image2.labels["disdat.code_version"] == image.labels["disdat.code_version"]


def test_an_image_derived_from_a_build_is_never_taken_for_that_build(docker_ready, tmp_path, monkeypatch,
                                                                     scratch_images):
    """An image built FROM a dockerized one inherits its hash label. With another disdat.package_version, or one
    more step on top, it is not that build: `dsdt dockerize` builds again rather than re-tag it (re-tagging the
    first one made every later run refuse the image as another disdat-luigi version)."""
    import docker

    client = docker.from_env()
    root = _slow_root(tmp_path)
    monkeypatch.setenv("DISDAT_DOCKERIZE_REPOSITORY_PREFIX", f"{IMAGE_PREFIX}/derived")
    monkeypatch.setenv("DISDAT_DOCKERIZE_BASE_IMAGE", docker_ready)
    name = f"{IMAGE_PREFIX}/derived/disdat-slow:latest"
    first = run_dsdt("dockerize", root)
    assert first.code == 0 and first.out.startswith(f"building the image of {root} on "), first
    original = client.images.get(name)
    scratch_images.append(original.id)
    derived = [_derived_image(name, f"{IMAGE_PREFIX}/derived/other-version:latest",
                              **{"disdat.package_version": "0" * 64}),
               _derived_image(name, f"{IMAGE_PREFIX}/derived/one-more-step:latest", "ENV EXTRA=1")]
    scratch_images.extend(derived)
    client.images.remove(name)   # now only the derived images are listed with the build's hash label
    assert {i.id for i in client.images.list(filters={"label": "disdat.image_hash=" +
                                                      original.labels["disdat.image_hash"]})} == set(derived)

    again = run_dsdt("dockerize", root)
    assert again.code == 0 and again.out.startswith(f"building the image of {root} on "), again
    rebuilt = client.images.get(name)
    assert rebuilt.id not in derived and rebuilt.labels == original.labels
    assert run_dsdt("dockerize", root).out.startswith(f"up to date: {rebuilt.short_id} ")


def test_an_image_of_another_disdat_luigi_version_is_refused_with_the_fix(home, cli, tmp_path, test_pipes_image,
                                                                          pipe_root, monkeypatch, scratch_images):
    """The session's slow image with only its disdat.package_version label changed is refused before anything
    is pushed or started; the same image with another, harmless label changed runs."""
    pipe_root(TEST_PIPES)
    url = (tmp_path / "remote").as_uri()
    assert cli("remote", "shared", url).code == 0
    source = f"{IMAGE_PREFIX}/disdat-slow:latest"
    scratch_images.append(_derived_image(source, f"{IMAGE_PREFIX}/otherversion/disdat-slow:latest",
                                         **{"disdat.package_version": "0" * 64}))
    scratch_images.append(_derived_image(source, f"{IMAGE_PREFIX}/control/disdat-slow:latest",
                                         **{"disdat.test.control": "1"}))
    before = snapshot(home.path)

    r = _run("-", "nap", "slow.Sleep", "--seconds", "0",
             env={"DISDAT_DOCKERIZE_REPOSITORY_PREFIX": f"{IMAGE_PREFIX}/otherversion"})
    assert_user_error(r)
    assert r.err == (f"dsdt: error: image {IMAGE_PREFIX}/otherversion/disdat-slow:latest holds another version of "
                     f"disdat-luigi than this one: run `dsdt dockerize {TEST_PIPES} slow`\n")
    assert snapshot(home.path) == before and _remote_keys(url) == [] and docker_containers() == []

    r = _run("-", "nap", "slow.Sleep", "--seconds", "0",
             env={"DISDAT_DOCKERIZE_REPOSITORY_PREFIX": f"{IMAGE_PREFIX}/control"})
    assert r.code == 0 and nodes_started(r.err) == 1, r.err


def test_run_labels_are_labels_of_the_container(home, cli, tmp_path, test_pipes_image, pipe_root, monkeypatch):
    """[run] labels (here DISDAT_RUN_LABELS, which already holds this test's own label) label the container."""
    pipe_root(TEST_PIPES)
    assert cli("remote", "shared", (tmp_path / "remote").as_uri()).code == 0
    monkeypatch.setenv("DISDAT_RUN_LABELS", os.environ["DISDAT_RUN_LABELS"] + ",team=data,project=x")
    proc = subprocess.Popen([DSDT, "run", "-", "nap", "slow.Sleep", "--seconds", "60"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not [c for c in docker_containers() if c.status == "running"]:
            assert time.monotonic() < deadline and proc.poll() is None, "the container never started"
            time.sleep(0.1)
        (container,) = docker_containers()
        assert {k: container.labels.get(k) for k in ("team", "project", "disdat.pipe_cls")} == {
            "team": "data", "project": "x", "disdat.pipe_cls": "slow.Sleep"}
        assert docker_containers(team="data", project="x") == [container]
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and docker_containers() == []
