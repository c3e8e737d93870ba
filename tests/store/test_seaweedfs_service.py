"""The S3 server the tests and benches start leaves nothing behind in /tmp when it stops: weed mini makes unix
sockets there (named by port) and, without -logdir, writes its log files there too; every test session and bench
run used to add a few of each."""
from pathlib import Path

import services

TMP = Path("/tmp")


def _weed_files() -> set:
    return set(TMP.glob("seaweedfs-*.sock")) | set(TMP.glob("weed.*"))


def test_a_stopped_seaweedfs_leaves_nothing_in_tmp(tmp_path):
    before = _weed_files()
    with services.seaweedfs(tmp_path / "seaweedfs"):
        made = {p.name for p in _weed_files() - before}
        assert any(name.startswith("seaweedfs-s3-") for name in made), made   # what this test is about exists
    assert _weed_files() - before == set()
    assert list((tmp_path / "seaweedfs").glob("weed.*.log.INFO.*")), "weed's own log went with the server"
