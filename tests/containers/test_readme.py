"""The README's tour runs as written: its shell blocks, in order, in one bash, from the repository's root.

Only two things are changed: the scratch directory (``export TOUR=...``) is the test's own, and luigid's port
8082 is a free one, so that the tour can run beside a developer's own luigid. The image names are the test
session's (its repository prefix), as for every test."""
from __future__ import annotations

import re
import subprocess

from conftest import REPO, TEST_PIPES, nodes_started  # noqa: F401  (TEST_PIPES: the session's test image fixture's home)


def _tour_script(tmp_path, port: int) -> str:
    readme = (REPO / "README.md").read_text()
    tour = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", tour, re.S)
    assert len(blocks) >= 6, "the tour lost its shell blocks"
    script = "\n".join(blocks)
    assert "export TOUR=/tmp/tour" in script and ":8082" in script
    script = script.replace("export TOUR=/tmp/tour", f"export TOUR={tmp_path / 'tour'}")
    return script.replace("8082", str(port))


def test_the_tour_runs_as_written(tmp_path, pipes_image):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = _tour_script(tmp_path, port)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    out = proc.stdout
    assert "the Docker engine answers" in out and "the store at" in out and "is sound" in out
    assert re.search(r"^report +[0-9a-f-]{36} ", out, re.M)  # dsdt ls -v report
    assert re.search(r"dsdt-entrypoint: pushed report [0-9a-f-]{36}", out)  # dsdt logs of the report's run
    assert out.count("is in context tour") == 3  # the three runs, the second one with nothing to do
    # ...and it did nothing: the graph's three nodes ran once each, and no fourth record or container appeared
    listed = re.findall(r"^([0-9a-f]{12}) +\d+ +\S+ +succeeded +", out, re.M)
    assert len(set(listed)) == 3, out[-3000:]
    second = _second_run_log(proc.stderr)
    assert nodes_started(second) == 0 and "3 done already" in second, "the up-to-date rerun ran a node"


def _second_run_log(stderr: str) -> str:
    """What the tour's second `dsdt run` (the one with nothing to do) printed: from its plan line to its summary
    line."""
    plans = [m.start() for m in re.finditer(r"^run [0-9a-f]{32}: report\.TextReport", stderr, re.M)]
    assert len(plans) >= 2, stderr[-3000:]
    summary = re.compile(r"^run [0-9a-f]{12}: .* in [\d.]+s$", re.M).search(stderr, plans[1])
    assert summary, stderr[plans[1]:][:3000]
    return stderr[plans[1]:summary.end()]
