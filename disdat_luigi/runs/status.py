"""What a pipe says of itself while it runs: Luigi's ``set_status_message`` and ``set_progress_percentage``,
from inside a container, to its node's task in luigid and the terminal.

A container has no line to the scheduler (on AWS Batch it may not even reach it), and CloudWatch shows a
job's log only once it ends (moto) or late (AWS), so the pipe's words travel through the remote, as every
other fact of a run does: the entrypoint gives the pipe a :class:`PipeStatus` whose calls write one small
object, ``status/<node>.json`` in the remote context (the latest message and percentage, at most one write
every :data:`WRITE_EVERY` seconds, removed when the pipe returns). On the client, one
:class:`StatusWatcher` per remote context lists ``status/`` every :data:`POLL_EVERY` seconds while some
node is followed and reads only the objects whose stamp changed (one LIST per round, whatever the graph's
width; one GET per new word). A pipe that never calls them costs nothing. Writing a status never fails the
pipe: the word is lost, the run goes on.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from ..errors import DisdatError
from ..remotes import shared_remote
from .store import RunStore, in_parallel

WRITE_EVERY = 1.0      # seconds between two writes of one pipe's status
POLL_EVERY = 2.0       # seconds between two listings of a context's statuses
MAX_STATUS = 4096      # bytes of a status object (a message is cut to MAX_MESSAGE characters)
MAX_MESSAGE = 1000
STALE = 10.0           # a status written this long before a node was followed is an earlier attempt's

OnWord = Callable[[Optional[str], Optional[float]], None]   # (message, percentage): what changed, else None


class PipeStatus:
    """The pipe's side (see the module docstring); its methods are the callbacks Luigi's worker would give."""

    def __init__(self, runs: RunStore, node_id: str, attempt: int):
        self._runs, self._key, self._attempt = runs, runs.status_key(node_id), attempt
        self._word: Dict[str, object] = {}
        self._written = 0.0
        self._wrote = False
        self._dirty = threading.Event()
        self._closed = False
        self._lock = threading.Lock()
        self._writer = threading.Thread(target=self._write_when_due, name="disdat-status", daemon=True)
        self._writer.start()

    def attach(self, task) -> None:
        """Make Luigi's task API work in ``task`` (a PipeTask about to run outside a Luigi worker)."""
        task.set_status_message = self.message
        task.set_progress_percentage = self.progress
        task.set_tracking_url = lambda url: None

    def message(self, text) -> None:
        self._say(message=str(text)[:MAX_MESSAGE])

    def progress(self, percentage) -> None:
        try:
            value = min(100.0, max(0.0, float(percentage)))
        except (TypeError, ValueError):
            return   # as luigid would take it: nothing shown
        self._say(percent=value)

    def _say(self, **word) -> None:
        with self._lock:
            self._word.update(word)
        self._dirty.set()

    def _write_when_due(self) -> None:
        while True:
            self._dirty.wait()
            if self._closed:
                return
            time.sleep(max(0.0, self._written + WRITE_EVERY - time.monotonic()))
            if self._closed:
                return
            self._write()

    def _write(self) -> None:
        with self._lock:
            self._dirty.clear()
            body = json.dumps({**self._word, "attempt": self._attempt, "at": time.time()}).encode()
        self._written = time.monotonic()
        try:
            self._runs.store.put_bytes(self._key, body)
            self._wrote = True
        except Exception as exc:  # noqa: BLE001  (a word lost never fails the pipe)
            print(f"dsdt-entrypoint: the pipe's status was not written: {exc}", file=sys.stderr)

    def close(self) -> None:
        """The pipe returned: its status object goes (its record says the rest)."""
        self._closed = True
        self._dirty.set()
        self._writer.join(timeout=WRITE_EVERY + 5)
        if self._wrote:
            try:
                self._runs.store.delete(self._key)
            except Exception:  # noqa: BLE001  (a leftover is ignored by watchers: it is older than their nodes)
                pass


class StatusWatcher:
    """The client's side: one thread per remote context, listing while some node is followed."""

    _watchers: Dict[Tuple[str, str], "StatusWatcher"] = {}
    _made = threading.Lock()

    @classmethod
    def of(cls, remote_url: str, remote_context: str) -> "StatusWatcher":
        with cls._made:
            key = (remote_url, remote_context)
            if key not in cls._watchers:
                cls._watchers[key] = cls(lambda: RunStore(shared_remote(remote_url, remote_context)))
            return cls._watchers[key]

    def __init__(self, runs: Callable[[], RunStore]):
        self._store_of = runs   # the process's shared remote, as it is now (a run's end closes it; the next reopens)
        self._followed: Dict[str, Tuple[OnWord, float]] = {}
        self._stamps: Dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: Optional[threading.Thread] = None

    def follow(self, node_id: str, on_word: OnWord) -> None:
        with self._lock:
            self._followed[node_id] = (on_word, time.time() - STALE)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="disdat-status-watch", daemon=True)
                self._thread.start()
            self._wake.notify()

    def unfollow(self, node_id: str) -> None:
        with self._lock:
            self._followed.pop(node_id, None)

    def _watch(self) -> None:
        while True:
            with self._lock:
                while not self._followed:
                    self._wake.wait()
            try:
                self.look()
            except Exception:  # noqa: BLE001  (an unreachable remote: the node's own wait says so; a word
                pass           # lost only shows later, and this thread must outlive any error)
            time.sleep(POLL_EVERY)

    def look(self) -> None:
        """One round: list the statuses, read the changed ones of followed nodes, tell their followers."""
        runs = self._store_of()
        prefix = runs.status_prefix
        changed = []
        for key, stamp in runs.store.listing(prefix):
            node = key[len(prefix):].removesuffix(".json")
            if node in self._followed and self._stamps.get(node) != stamp:
                self._stamps[node] = stamp
                changed.append(node)
        for node, word in zip(changed, in_parallel(lambda node: self._read(runs, node), changed)):
            follower = self._followed.get(node)
            if word is not None and follower is not None and word.get("at", 0) >= follower[1]:
                follower[0](word.get("message"), word.get("percent"))

    @staticmethod
    def _read(runs: RunStore, node_id: str) -> Optional[dict]:
        try:
            word = json.loads(runs.store.get_bytes(runs.status_key(node_id), MAX_STATUS))
        except (DisdatError, ValueError):
            return None   # gone since the listing, too large, or not JSON: nothing said
        if not isinstance(word, dict):
            return None
        message, percent, at = word.get("message"), word.get("percent"), word.get("at")
        return {"message": message if isinstance(message, str) else None,
                "percent": float(percent) if isinstance(percent, (int, float)) and 0 <= percent <= 100 else None,
                "at": at if isinstance(at, (int, float)) else 0}
