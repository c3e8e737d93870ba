"""A hostile remote: every manifest, marker and object read from it is untrusted input, validated before use.

Each crafted manifest is its own case, tried against `dsdt pull` (by uuid, by name, --all); a few against
`dsdt run` (the host's planning, and the container's own pull of its input). A refused manifest is one line
naming the bundle and the field, nothing is kept, and nothing in the local store or on the remote changes.
Strings from a remote bundle stay strings when a pipe passes them on (`dsdt apply` and `dsdt run`), even
when they name an existing file, so a crafted input cannot smuggle a host file into a new bundle.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import REPO, TEST_PIPES, assert_user_error, docker_containers, new_bucket, run_dsdt, snapshot
from conftest import write_files as _files  # noqa: E402
from disdat_luigi.remotes import open_remote, open_store

CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")   # anything but newline that a terminal would act on




def _tree(root: Path):
    """Every file's bytes (and index rows) plus every path, directories included."""
    paths = sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*")
                   if not p.name.endswith(("-wal", "-shm")))
    return snapshot(root), paths


def _remote_files(url: str):
    """Every key on the remote with its bytes; on file:// also the hidden temporary files a writer leaves (not
    the lock files of leases and records, which stay by design)."""
    store = open_store(url)
    try:
        keys = {k: store.get_bytes(k) for k in store.list("")}
    finally:
        store.close()
    hidden = []
    if url.startswith("file://"):
        root = Path(urlparse(url).path)
        hidden = sorted(str(p) for p in root.rglob(".*") if not p.name.endswith(".lock")) if root.exists() else []
    return keys, hidden


def _no_control(text: str) -> None:
    assert not CONTROL.search(text), repr(text)


def _publish(cli, home, tmp_path, url, name="victim"):
    """A committed bundle of two files pushed to ``url`` from context test; returns its uuid."""
    assert cli("remote", "shared", url).code == 0
    src = _files(tmp_path / "d", {"x.txt": b"x-bytes", "y.txt": b"y-bytes"})
    r = cli("add", name, src)
    assert r.code == 0, r.err
    uuid = r.out.split()[2]
    assert cli("commit", "-u", uuid).code == 0
    assert cli("push", name).code == 0, "push failed"
    return uuid


def _other(cli, url):
    """A second, empty context bound to the same remote (the victim of the crafted remote)."""
    assert cli("context", "other").code == 0 and cli("switch", "other").code == 0
    assert cli("remote", "shared", url).code == 0


def _rewrite(url, uuid, change):
    """Replace the remote manifest of ``uuid`` by ``change(doc)`` (a dict, or raw bytes)."""
    with open_remote(url, "shared") as remote:
        key = remote.manifest_key(uuid)
        doc = json.loads(remote.store.get_bytes(key))
        new = change(doc)
        remote.store.put_bytes(key, new if isinstance(new, bytes) else json.dumps(new).encode())


def _set(**fields):
    def change(doc):
        doc.update(fields)
        return doc
    return change


def _rename_file(new_rel):
    def change(doc):
        doc["files"][new_rel] = doc["files"].pop("d/x.txt")
        doc["data"] = [{"$file": new_rel}, {"$file": "d/y.txt"}]
        return doc
    return change


def _file_entry(**fields):
    def change(doc):
        doc["files"]["d/x.txt"].update(fields)
        return doc
    return change


def _both_file_and_dir(doc):
    doc["files"]["d/x.txt/y"] = dict(doc["files"]["d/y.txt"])
    return doc


def _uuid_of_another_bundle(doc):
    doc["uuid"] = "0badc0de-0000-4000-8000-000000000000"
    return doc


def _drop(field):
    def change(doc):
        del doc[field]
        return doc
    return change


BAD_MANIFESTS = [
    # data references must name files of that manifest
    ("data-absolute", _set(data=[{"$file": "/etc/passwd"}]),
     "field data refers to '/etc/passwd', which is not one of the bundle's files"),
    ("data-dotdot", _set(data=[{"$file": "../../../etc/passwd"}]), "field data refers to '../../../etc/passwd'"),
    ("data-missing", _set(data=[{"$file": "d/not-there.txt"}]), "field data refers to 'd/not-there.txt'"),
    ("data-frame-missing", _set(data={"$frame": "frame-0.json"}, presentation="dataframe"),
     "field data refers to 'frame-0.json'"),
    ("data-ref-not-text", _set(data=[{"$file": 7}]), "field data refers to 7,"),
    # paths of files must stay inside the bundle
    ("file-absolute", _rename_file("/tmp/owned.txt"), "field files: unsafe file path '/tmp/owned.txt'"),
    ("file-dotdot", _rename_file("../owned.txt"), "field files: unsafe file path '../owned.txt'"),
    ("file-inner-dotdot", _rename_file("d/../../owned.txt"), "field files: unsafe file path 'd/../../owned.txt'"),
    ("file-dot", _rename_file("./d/x.txt"), "field files: unsafe file path './d/x.txt'"),
    ("file-backslash", _rename_file("d\\..\\..\\owned.txt"), "field files: unsafe file path"),
    ("file-control", _rename_file("d/x\x1b[2J.txt"), "field files: unsafe file path 'd/x\\x1b[2J.txt'"),
    ("file-part-oversized", _rename_file("d/" + "p" * 256), "field files: unsafe file path"),
    ("file-and-dir", _both_file_and_dir, "field files: 'd/x.txt' is both a file and a directory"),
    ("sha-bad", _file_entry(sha256="../../etc"), "field files['d/x.txt'].sha256 is not a sha256"),
    ("size-negative", _file_entry(size=-1), "field files['d/x.txt'].size is not a size in bytes"),
    ("size-bool", _file_entry(size=True), "field files['d/x.txt'].size is not a size in bytes"),
    ("pack-offset-negative", _file_entry(pack="a" * 64, offset=-5),
     "field files['d/x.txt'].pack/offset is not a pack location"),
    ("pack-not-a-sha", _file_entry(pack="../../x", offset=0),
     "field files['d/x.txt'].pack/offset is not a pack location"),
    # timestamps: strict form (they become parts of remote keys)
    ("created-impossible-date", _set(created="2026-02-30T00:00:00.000000Z"),
     "field created: '2026-02-30T00:00:00.000000Z' is not a UTC timestamp"),
    ("created-free-text", _set(created="yesterday"), "field created: 'yesterday' is not a UTC timestamp"),
    ("created-path", _set(created="../../names/x"), "field created: '../../names/x' is not a UTC timestamp"),
    ("created-no-fraction", _set(created="2026-01-31T12:00:00Z"), "field created: '2026-01-31T12:00:00Z'"),
    ("created-number", _set(created=1767225600), "field created: 1767225600 is not a UTC timestamp"),
    # names, uuids, tags
    ("name-control", _set(name="victim\x1b]0;owned\x07"), "field name: invalid bundle name 'victim\\x1b]0;owned\\x07'"),
    ("name-path", _set(name="../victim"), "field name: invalid bundle name '../victim'"),
    ("name-oversized", _set(name="n" * 201), "field name: invalid bundle name"),
    ("name-not-text", _set(name=["victim"]), "field name: invalid bundle name"),
    ("uuid-mismatch", _uuid_of_another_bundle, "field uuid names bundle 0badc0de-0000-4000-8000-000000000000, not"),
    ("uuid-uppercase", lambda d: {**d, "uuid": d["uuid"].upper()}, "field uuid: "),
    ("uuid-path", _set(uuid="../../../x"), "field uuid: '../../../x' is not a uuid"),
    ("tag-value-control", _set(tags={"k": "v\x1b[31mred"}), "field tags: bad value for tag k"),
    ("tag-key-colon", _set(tags={"a:b": "v"}), "field tags: bad tag key 'a:b'"),
    ("tag-key-oversized", _set(tags={"k" * 129: "v"}), "field tags: bad tag key"),
    ("tag-value-oversized", _set(tags={"k": "v" * 1025}), "field tags: bad value for tag k"),
    ("tags-not-object", _set(tags=["k:v"]), "field tags is not an object"),
    # the rest of the format
    ("committed-text", _set(committed="yes"), "field committed is not true or false"),
    ("presentation-unknown", _set(presentation="pickle"), "field presentation 'pickle' is unknown"),
    ("presentation-mismatch", _set(presentation="dict"), "field presentation dict does not match the data"),
    ("lineage-run-id", _set(lineage={"run_id": "not-hex"}), "field lineage.run_id: 'not-hex' is not a hex id"),
    ("lineage-input-uuid", _set(lineage={"inputs": {"x": "../evil"}}), "field lineage.inputs['x']: '../evil'"),
    ("files-missing", _drop("files"), "field files is missing"),
    ("format-future", _set(format=2), "manifest format 2 is not supported"),
    ("not-json", lambda d: b"\xff\xfe{garbage", "manifest is not valid JSON"),
    ("not-an-object", lambda d: b"[1, 2]", "manifest is not a JSON object"),
]


@pytest.fixture
def file_remote(tmp_path):
    return (tmp_path / "remote").as_uri()


@pytest.mark.parametrize("change, fragment", [c[1:] for c in BAD_MANIFESTS], ids=[c[0] for c in BAD_MANIFESTS])
def test_a_crafted_manifest_is_refused_by_pull_and_nothing_is_kept(home, cli, tmp_path, file_remote, change,
                                                                    fragment):
    uuid = _publish(cli, home, tmp_path, file_remote)
    _rewrite(file_remote, uuid, change)
    _other(cli, file_remote)
    before, remote_before = _tree(home.path), _remote_files(file_remote)
    for args in (("pull", "-u", uuid), ("pull", "victim"), ("pull", "--all")):
        r = cli(*args)
        assert_user_error(r, f"the manifest of bundle {uuid} on the remote {file_remote}",
                          "is refused, nothing was kept: ", fragment)
        _no_control(r.err)
        assert r.out == ""
    assert _tree(home.path) == before
    assert _remote_files(file_remote) == remote_before
    assert cli("ls", "-v").out.splitlines()[1:] == []
    assert not (tmp_path / "owned.txt").exists() and not Path("/tmp/owned.txt").exists()


@pytest.mark.parametrize("case", ["file-dotdot", "data-absolute", "uuid-mismatch", "file-and-dir"])
def test_a_crafted_manifest_on_s3_is_refused_too(home, cli, tmp_path, s3_env, case):
    url = f"s3://{new_bucket(s3_env)}/shared"
    change, fragment = next(c[1:] for c in BAD_MANIFESTS if c[0] == case)
    uuid = _publish(cli, home, tmp_path, url)
    _rewrite(url, uuid, change)
    _other(cli, url)
    before, remote_before = _tree(home.path), _remote_files(url)
    r = cli("pull", "-u", uuid)
    assert_user_error(r, f"the manifest of bundle {uuid} on the remote {url}", "is refused, nothing was kept", fragment)
    assert _tree(home.path) == before and _remote_files(url) == remote_before


def test_the_untouched_manifest_pulls(home, cli, tmp_path, file_remote):
    """The corpus above is refused for what was crafted, not because the base case fails."""
    uuid = _publish(cli, home, tmp_path, file_remote)
    _rewrite(file_remote, uuid, lambda d: d)
    _other(cli, file_remote)
    assert cli("pull", "victim").code == 0
    assert home.context("other").bundle(uuid).path("d/x.txt").read_bytes() == b"x-bytes"


def test_a_manifest_filed_under_another_name_is_not_a_version_of_it(home, cli, tmp_path, file_remote):
    uuid = _publish(cli, home, tmp_path, file_remote)
    with open_remote(file_remote, "shared") as remote:
        created = remote.manifest(uuid).created
        remote.store.put_bytes(remote.names_prefix("decoy") + f"{created}_{uuid}", b"")
    _other(cli, file_remote)
    before = _tree(home.path)
    assert_user_error(cli("pull", "decoy"), "no bundle named decoy on the remote")
    assert _tree(home.path) == before


MARKERS = [
    ("bad-created", "names/victim/2026-13-01T00:00:00.000000Z_{uuid}"),
    ("no-created", "names/victim/{uuid}"),
    ("bad-uuid", "names/victim/{created}_not-a-uuid"),
    ("uppercase-uuid", "names/victim/{created}_{UUID}"),
    ("control-name", "names/vic\x1btim/{created}_{uuid}"),
    ("nested", "names/victim/extra/{created}_{uuid}"),
    ("empty-name", "names//{created}_{uuid}"),
]
DANGLING = "11111111-2222-4333-8444-555555555555"


def test_crafted_name_markers_are_not_versions(home, cli, tmp_path, file_remote):
    """A marker that is not <name>/<created>_<uuid> in strict form is ignored; with only such markers (and one
    naming no manifest) the name is not on the remote."""
    uuid = _publish(cli, home, tmp_path, file_remote)
    with open_remote(file_remote, "shared") as remote:
        created = remote.manifest(uuid).created
        good = [k for k in remote.store.list(remote.names_prefix())]
        assert len(good) == 1
        remote.store.delete(good[0])
        for _, marker in MARKERS:
            remote.store.put_bytes(f"context/shared/{marker.format(uuid=uuid, UUID=uuid.upper(), created=created)}",
                                   b"")
        assert remote.versions() == []
        remote.store.put_bytes(remote.names_prefix("victim") + f"{created}_{DANGLING}", b"")
        assert [v[2] for v in remote.versions()] == [DANGLING]
    _other(cli, file_remote)
    before, remote_before = _tree(home.path), _remote_files(file_remote)
    r = cli("pull", "victim")
    assert_user_error(r, "no bundle named victim on the remote")
    _no_control(r.err)
    assert_user_error(cli("pull", "--all"), f"bundle {DANGLING} is not on the remote")
    assert _tree(home.path) == before and _remote_files(file_remote) == remote_before


# ---------------------------------------------------------------------------------------------------
# strings from a remote stay strings: a crafted input cannot publish a host file through a pipe
# ---------------------------------------------------------------------------------------------------

def _publish_value(home, cli, url, value, name="stolen"):
    """A committed value bundle pushed from context test; returns its uuid."""
    assert cli("remote", "shared", url).code == 0
    ctx = home.context("test")
    b = ctx.commit(ctx.add_value(name, value))
    assert b.manifest.files == {}, "the value must hold no file when it is published"
    assert cli("push", name).code == 0
    return b.uuid


def test_apply_passes_a_remote_string_naming_a_host_file_on_as_a_string(home, cli, tmp_path, file_remote,
                                                                         pipe_root):
    pipe_root(TEST_PIPES)
    secret = tmp_path / "host-secret.txt"
    value = {"path": str(secret), "list": [str(secret), "plain"], "n": 3}
    uuid = _publish_value(home, cli, file_remote, value)
    secret.write_text("AKIA-host-credentials")          # exists on the victim's machine, not in the bundle
    _other(cli, file_remote)
    assert cli("pull", "stolen").code == 0
    r = cli("apply", "stolen", "passed", "passthrough.PassThrough")
    assert r.code == 0, r.err
    out = home.context("other").latest("passed")
    assert out.manifest.files == {} and out.manifest.data == value
    assert out.manifest.lineage["inputs"] == {"pipeline_input": uuid}
    assert json.loads(cli("cat", "passed").out) == value
    assert not any(b"AKIA-host-credentials" in p.read_bytes()
                   for p in (home.path / "contexts" / "other" / "objects").rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------
# dsdt run: the host's planning, and the container's own pull
# ---------------------------------------------------------------------------------------------------

def _run(*args, **kw):
    return run_dsdt("run", *args, cwd=REPO, **kw)


def _last_line(r):
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def test_run_refuses_a_crafted_remote_input_before_anything_runs(home, cli, tmp_path, file_remote, pipe_root,
                                                                 test_pipes_image):
    pipe_root(TEST_PIPES)
    uuid = _publish(cli, home, tmp_path, file_remote)
    _rewrite(file_remote, uuid, _rename_file("../../owned.txt"))
    _other(cli, file_remote)            # no local copy: the input is resolved on the remote
    before, remote_before = _tree(home.path), _remote_files(file_remote)
    r = _run("--no-push-input", "victim", "out", "passthrough.PassThrough")
    assert_user_error(r, f"the manifest of bundle {uuid} on the remote", "is refused, nothing was kept",
                      "field files: unsafe file path '../../owned.txt'")
    assert _tree(home.path) == before and _remote_files(file_remote) == remote_before
    assert docker_containers() == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["data-absolute", "file-dotdot", "uuid-mismatch", "name-control"])
def test_the_containers_pull_refuses_a_crafted_input(home, cli, tmp_path, file_remote, pipe_root,
                                                     test_pipes_image, case):
    """The host's copy of the input is sound, the remote's was replaced after the push: the container refuses
    it, the run fails with that line, and no output is published or pulled."""
    from disdat_luigi.runs.store import RunStore

    pipe_root(TEST_PIPES)
    change, fragment = next(c[1:] for c in BAD_MANIFESTS if c[0] == case)
    uuid = _publish(cli, home, tmp_path, file_remote)
    _rewrite(file_remote, uuid, change)
    before = _tree(home.path)
    r = _run("victim", "out", "passthrough.PassThrough")
    assert r.code == 1, r.err
    last = _last_line(r)
    assert last.startswith(f"dsdt: error: the run failed: the manifest of bundle {uuid} on the remote "
                           f"{file_remote} is refused, nothing was kept: "), last
    assert fragment in last, (fragment, last)
    _no_control(r.err)
    assert _tree(home.path) == before                # no output bundle, nothing changed in the local store
    keys, hidden = _remote_files(file_remote)
    assert not any("/names/out/" in k for k in keys) and hidden == []
    with open_remote(file_remote, "shared") as remote:
        runs = RunStore(remote)
        records = [runs.record(n) for n in runs.node_ids()]
    assert [(rec.status, rec.output_uuid) for rec in records] == [("failed", None)]
    assert records[0].error.startswith(f"the manifest of bundle {uuid}")
    assert not (tmp_path / "owned.txt").exists()
    assert docker_containers() == []


@pytest.mark.timeout(120)
def test_a_container_passes_a_remote_string_naming_a_file_it_can_see_on_as_a_string(home, cli, tmp_path,
                                                                                   file_remote, pipe_root,
                                                                                   test_pipes_image):
    """Inside the container the file:// remote is mounted: a string naming a file there stays a string."""
    pipe_root(TEST_PIPES)
    remote_dir = Path(urlparse(file_remote).path)
    secret = remote_dir / "context" / "shared" / "private.txt"
    value = {"path": str(secret), "also": [str(secret)]}
    _publish_value(home, cli, file_remote, value)
    secret.write_text("not for publishing")
    os.chmod(secret, 0o644)
    r = _run("stolen", "passed", "passthrough.PassThrough")
    assert r.code == 0, r.err
    out = home.context("test").latest("passed")
    assert out.manifest.files == {} and out.manifest.data == value
    keys, _ = _remote_files(file_remote)
    assert not any(b"not for publishing" in data for k, data in keys.items() if not k.endswith("private.txt"))
    assert docker_containers() == []
