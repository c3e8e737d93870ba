"""What ``dsdt run`` tells its terminal: one line per node event, then a summary.

Luigi's own log is for ``-v``. By default a run prints its plan in one line (chain/run.py), then a line when
a node starts, succeeds (with its duration and output) or fails (with its duration and reason), when it is
tried again, what a pipe says of itself (``set_status_message``, ``set_progress_percentage``: at most one line
every few seconds a node), on AWS Batch its job id and each state change, and a summary at the end. The lines
are plain and complete wherever they go (a terminal, a file, a CI log): a graph of 200 nodes is about 400
lines. Nothing is printed unless a run turns it on (:meth:`NodeEvents.enabled`): the Python API prints nothing,
and ``luigi --module disdat_luigi`` has Luigi's own log.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from typing import Iterator, Optional, TextIO

from ..display import safe
from ..errors import DisdatError

SAID_EVERY = 5.0    # seconds between two lines of what one pipe says of itself


class NodeEvents:
    """See the module docstring; thread-safe (every node of a run reports from its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: Optional[TextIO] = None
        self._counts: Counter = Counter()
        self._said: dict = {}
        self._started = 0.0

    @contextlib.contextmanager
    def enabled(self, stream: Optional[TextIO] = None) -> Iterator["NodeEvents"]:
        """Print the events of the run in this block to ``stream`` (default: stderr as it is now)."""
        with self._lock:
            self._stream, self._counts, self._said = stream or sys.stderr, Counter(), {}
            self._started = time.monotonic()
        try:
            yield self
        finally:
            with self._lock:
                self._stream = None

    def _line(self, node_id: str, pipe_cls: str, text: str, below: str = "") -> None:
        """One event line (and, ``below`` it, indented lines that belong to it: a failed node's last log lines)."""
        with self._lock:
            if self._stream is None:
                return
            stamp = time.strftime("%H:%M:%S")
            lines = [f"{stamp} {pipe_cls} {node_id[:12]} {safe(text)}"]
            lines += ["    " + safe(line) for line in below.splitlines() if line.strip()]
            with contextlib.suppress(OSError, ValueError):   # a closed terminal never fails a node
                print("\n".join(lines), file=self._stream, flush=True)

    def started(self, node_id: str, pipe_cls: str, how: str) -> None:
        """A container or job of the node: started by this client, or one it follows."""
        self._line(node_id, pipe_cls, f"started: {how}")

    def state(self, node_id: str, pipe_cls: str, state: str) -> None:
        self._line(node_id, pipe_cls, state)

    def said(self, node_id: str, pipe_cls: str, message: str, percent: Optional[float]) -> None:
        """What the pipe says of itself: a line now and then (its latest word goes to the scheduler anyway)."""
        now = time.monotonic()
        with self._lock:
            if now - self._said.get(node_id, -SAID_EVERY) < SAID_EVERY:
                return
            self._said[node_id] = now
        self._line(node_id, pipe_cls, "says: " + " ".join(filter(None, (
            message, f"({percent:.0f}%)" if percent is not None else ""))))

    def ended(self, node_id: str, pipe_cls: str, outcome: str, seconds: Optional[float], detail: str,
              below: str = "") -> None:
        """``outcome``: succeeded, failed, timed out, interrupted; ``below``: a failure's last log lines."""
        with self._lock:
            self._counts[outcome] += 1
        took = f" in {seconds:.1f}s" if seconds is not None else ""
        self._line(node_id, pipe_cls, f"{outcome}{took}: {detail}" if detail else f"{outcome}{took}", below)

    def summary(self, nodes: int) -> str:
        """``3 succeeded, 1 failed, 2 done already in 4.2s`` (of a graph of ``nodes`` nodes)."""
        with self._lock:
            counts = dict(self._counts)
            took = time.monotonic() - self._started
        parts = [f"{n} {outcome}" for outcome, n in sorted(counts.items())]
        if nodes > sum(counts.values()):
            parts.append(f"{nodes - sum(counts.values())} done already")
        return f"{', '.join(parts)} in {took:.1f}s"


events = NodeEvents()


class _Unreported(logging.Filter):
    """Luigi's records that no event line tells: its warnings and unexpected errors (a node's DisdatError
    is its "failed" line, an interrupt its "interrupted" line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        raised = record.exc_info[1] if record.exc_info else None
        return not isinstance(raised, (DisdatError, KeyboardInterrupt))


@contextlib.contextmanager
def luigi_log(verbose: bool) -> Iterator[None]:
    """Luigi's own log in this block: all of it with ``verbose`` (``dsdt run -v``), else what _Unreported
    keeps."""
    if verbose:
        yield
        return
    log, only = logging.getLogger("luigi-interface"), _Unreported()
    log.addFilter(only)
    try:
        yield
    finally:
        log.removeFilter(only)
