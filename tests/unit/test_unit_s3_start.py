"""The S3 client's start-up: botocore's parsed S3 model is cached between processes, and only plain data is read
back from that cache (a file planted there never runs code)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

from disdat_luigi.remotes import s3

MAKE_CLIENT = """
from disdat_luigi.remotes import s3
client = s3.make_client(2)
print(client.meta.service_model.service_name, len(s3._loader._cache))
"""


def make_client_in_a_new_process(cache_home: Path) -> str:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache_home), AWS_ENDPOINT_URL="http://127.0.0.1:9",
               AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1")
    r = subprocess.run([sys.executable, "-c", MAKE_CLIENT], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()[0]


def cache_files(cache_home: Path):
    return sorted((cache_home / "disdat-luigi").glob("botocore-*.pickle"))


def test_the_first_client_writes_the_cache_and_the_next_process_reads_it(tmp_path):
    assert make_client_in_a_new_process(tmp_path) == "s3"
    [cache] = cache_files(tmp_path)
    data = pickle.loads(cache.read_bytes())
    assert any(k[:2] == ("load_service_model", "s3") for k in data)
    stamp = cache.stat().st_mtime_ns
    assert make_client_in_a_new_process(tmp_path) == "s3"
    assert cache_files(tmp_path) == [cache] and cache.stat().st_mtime_ns == stamp   # read, not rewritten


class Planted:
    def __reduce__(self):
        return (os.system, ("touch planted-ran",))


def test_a_cache_holding_anything_but_data_is_ignored_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_client_in_a_new_process(tmp_path)
    [cache] = cache_files(tmp_path)
    cache.write_bytes(pickle.dumps({("load_service_model", "s3"): Planted()}))
    assert make_client_in_a_new_process(tmp_path) == "s3"
    assert not (tmp_path / "planted-ran").exists()
    with open(cache, "rb") as f:   # rewritten with the real data, which the data-only reader takes
        assert any(k[:2] == ("load_service_model", "s3") for k in s3._DataUnpickler(f).load())


def test_a_garbled_or_unwritable_cache_is_no_error(tmp_path):
    (tmp_path / "disdat-luigi").mkdir()
    make_client_in_a_new_process(tmp_path)
    [cache] = cache_files(tmp_path)
    cache.write_bytes(b"\x80\x05garbage")
    assert make_client_in_a_new_process(tmp_path) == "s3"
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert make_client_in_a_new_process(blocked) == "s3"
