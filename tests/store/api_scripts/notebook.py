"""What a notebook does with disdat_luigi.api, run as a real process by tests/test_api.py.

It builds bundles of every kind, reads them back, applies pipes and shares the results through the remote
named by API_TEST_REMOTE (file:// or s3://), checking everything on the way; it prints ``notebook: ok`` last.
Paths come from the environment: DISDAT_HOME (the store), DISDAT_PIPE_ROOT (the example pipes) and
API_TEST_DIR (scratch files).
"""
import os
from pathlib import Path

import pandas as pd

from disdat_luigi import api

scratch = Path(os.environ["API_TEST_DIR"])
remote_url = os.environ["API_TEST_REMOTE"]

api.context("nb")
api.context("nb")  # an existing context is fine
assert "nb" in api.ls_contexts()

# -- building bundles of every kind ----------------------------------------------------------------------
scalar = api.Bundle("nb", name="scalar", data=42, tags={"kind": "value"})
text = api.Bundle("nb", name="text", data="hello", tags={"kind": "value"})
listed = api.Bundle("nb", name="listed", data=[1, "two", 3.5, None, True], tags={"kind": "value"})
mapping = api.Bundle("nb", name="mapping", data={"a": 1, "b": [1, 2], "c": {"d": "e"}}, tags={"kind": "value"})
(scratch / "in").mkdir()
local = [scratch / "in" / "a.txt", scratch / "in" / "b.csv"]
local[0].write_text("the cat sat on the mat with another cat and another hat\n")
local[1].write_text("region,amount\neu,3\nus,4\neu,5\n")
files = api.Bundle("nb", name="files", data=[str(p) for p in local], tags={"kind": "files"})
with api.Bundle("nb", name="inplace") as b:
    target = b.get_file("out/report.txt")
    target.write_text("written in place\n")
    inode = target.stat().st_ino
    b.add_data({"report": target, "lines": 1}).add_tags({"kind": "files"}).add_params({"alpha": 0.5})
inplace = b

assert scalar.data == 42 and type(scalar.data) is int
assert text.data == "hello" and type(text.data) is str
assert listed.data == [1, "two", 3.5, None, True]
assert mapping.data == {"a": 1, "b": [1, 2], "c": {"d": "e"}}
assert [Path(p).read_text() for p in files.data] == [p.read_text() for p in local]
assert all(type(p) is str and p.startswith(os.environ["DISDAT_HOME"]) for p in files.data)  # copied in
report = Path(inplace.data["report"])
assert report.read_text() == "written in place\n" and report.stat().st_ino == inode  # kept, never copied
assert inplace.tags == {"kind": "files"} and inplace.params == {"alpha": "0.5"} and inplace.committed is False

# -- finding and reading ---------------------------------------------------------------------------------
names = [found.name for found in api.search("nb")]
assert names == ["inplace", "files", "mapping", "listed", "text", "scalar"], names
assert [found.name for found in api.search("nb", tags={"kind": "files"})] == ["inplace", "files"]
assert [found.name for found in api.search("nb", "*e*", tags={"kind": "value"})] == ["listed", "text"]
assert api.search("nb", "nothing*") == []
assert api.get("nb", "mapping").data["c"] == {"d": "e"} and api.get("nb", "nothing") is None

# -- pipes in this process ---------------------------------------------------------------------------------
first = api.apply("nb", "wordcount.WordCount", "counts", input_bundle="files", params={"min_len": 3})
second = api.apply("nb", "wordcount.WordCount", "counts", input_bundle=files, params={"min_len": 4, "top": 1})
assert first.params == {"min_len": "3", "top": "10"} and second.params == {"min_len": "4", "top": "1"}
assert first.data["total_words"] == 11 and second.data["top"] == [["another", 2]]
assert first.dependencies == {"pipeline_input": files.uuid}
assert [c.uuid for c in api.search("nb", "counts")] == [second.uuid, first.uuid]
again = api.apply("nb", "wordcount.WordCount", "counts", input_bundle="files", params={"min_len": 4, "top": 1})
assert again.uuid == second.uuid  # up to date: nothing ran

totals = api.apply("nb", "sales.GroupBy", "totals", input_bundle="files")
expected = pd.DataFrame({"region": ["eu", "us"], "sum": [8, 4], "count": [2, 1]})
pd.testing.assert_frame_equal(totals.data, expected)

# -- sharing -------------------------------------------------------------------------------------------------
api.remote("nb", "shared", remote_url)
for bundle in (second, totals, inplace):
    bundle.commit().push()
api.context("other")
api.remote("other", "shared", remote_url)
assert api.search("other") == []
pulled = api.pull("other", "counts")
assert pulled.uuid == second.uuid and pulled.data["top"] == [["another", 2]] and pulled.committed
assert pulled.params == {"min_len": "4", "top": "1"}
pd.testing.assert_frame_equal(api.pull("other", uuid=totals.uuid).data, expected)
assert Path(api.pull("other", "inplace").data["report"]).read_text() == "written in place\n"
assert {found.name for found in api.search("other")} == {"counts", "totals", "inplace"}
print("notebook: ok")
