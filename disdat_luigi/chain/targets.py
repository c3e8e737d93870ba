"""Luigi targets over bundles and run records: what makes each step of a run complete.

* :class:`RemoteBundleTarget` -- bundle UUID is complete on the remote (its manifest is there);
* :class:`RunRecordTarget` -- node NODE_ID succeeded (its run record on the remote says so);
* :class:`LocalBundleTarget` -- the bundle with processing id NODE_ID is in the local context.

The remote targets work on ``s3://`` and ``file://`` alike through the project's object stores rather than
``luigi.contrib.s3.S3Target``: one client and credential chain for transfers and completion checks, the same
retries, and one-line errors instead of botocore tracebacks in the scheduler. Their ``path`` is the object's
full URL, so the luigid UI and logs show where the data is. A remote target is named by where it is (the
remote URL and remote context), a local one by the store and context it is in; credentials never are.

Luigi asks every task of a graph whether it is complete, one after the other, before it runs anything: a
thousand nodes would be a thousand sequential requests. So a run first surveys all of its nodes with a
bounded pool (:meth:`Completion.survey`), and :data:`completion` answers from that survey while Luigi schedules
(:meth:`Completion.scheduling`, entered by chain/worker.py's ``ThreadWorker.add``); afterwards only what
succeeded stays known (it cannot un-succeed: what the survey found, and the nodes this process saw succeed), and
everything else is asked of the remote again.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Tuple

import luigi

from ..remotes import Remote, shared_remote
from ..runs.record import RunRecord
from ..runs.store import RunStore
from ..store.context import Bundle
from ..store.home import Home


class Completion:
    """What is known of nodes' completion in this process (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._succeeded: set = set()                        # (url, context, node): known to have succeeded
        self._surveyed: Dict[Tuple[str, str, str], bool] = {}
        self._scheduling = 0

    def known(self, key: Tuple[str, str, str]) -> Optional[bool]:
        with self._lock:
            if key in self._succeeded:
                return True
            return self._surveyed.get(key) if self._scheduling else None

    def learn(self, key: Tuple[str, str, str], succeeded: bool) -> None:
        with self._lock:
            if succeeded:
                self._succeeded.add(key)

    def survey(self, url: str, remote_context: str, node_ids: Iterable[str]) -> None:
        """Read every node's record and output (a bounded pool of requests) for the next scheduling."""
        runs = RunStore(shared_remote(url, remote_context))
        done = runs.succeeded_among(runs.read_many(node_ids))
        with self._lock:
            for node, succeeded in done.items():
                self._surveyed[(url, remote_context, node)] = succeeded
                if succeeded:
                    self._succeeded.add((url, remote_context, node))

    @contextlib.contextmanager
    def scheduling(self) -> Iterator[None]:
        """While Luigi schedules a graph, surveyed answers stand (see the module docstring)."""
        with self._lock:
            self._scheduling += 1
        try:
            yield
        finally:
            with self._lock:
                self._scheduling -= 1
                if not self._scheduling:
                    self._surveyed.clear()


completion = Completion()


class _RemoteTarget(luigi.Target):
    def __init__(self, remote_url: str, remote_context: str):
        self.remote_url = remote_url
        self.remote_context = remote_context

    def _key(self, remote: Remote) -> str:
        raise NotImplementedError

    def _check(self, remote: Remote) -> bool:
        raise NotImplementedError

    def _remote(self) -> Remote:
        return shared_remote(self.remote_url, self.remote_context)

    @property
    def path(self) -> str:
        remote = self._remote()
        return f"{remote.url.rstrip('/')}/{self._key(remote)}"

    def exists(self) -> bool:
        return self._check(self._remote())


class RemoteBundleTarget(_RemoteTarget):
    """Bundle ``uuid`` is complete on the remote."""

    def __init__(self, remote_url: str, remote_context: str, uuid: str):
        super().__init__(remote_url, remote_context)
        self.uuid = uuid

    def _key(self, remote: Remote) -> str:
        return remote.manifest_key(self.uuid)

    def _check(self, remote: Remote) -> bool:
        return remote.has_bundle(self.uuid)


class RunRecordTarget(_RemoteTarget):
    """Node ``node_id`` has a run record with status ``succeeded`` on the remote."""

    def __init__(self, remote_url: str, remote_context: str, node_id: str):
        super().__init__(remote_url, remote_context)
        self.node_id = node_id

    def _key(self, remote: Remote) -> str:
        return RunStore(remote).record_key(self.node_id)

    def _check(self, remote: Remote) -> bool:
        known = completion.known(self._known_as)
        if known is not None:
            return known
        succeeded = RunStore(remote).succeeded(self.node_id)
        completion.learn(self._known_as, succeeded)
        return succeeded

    @property
    def _known_as(self) -> Tuple[str, str, str]:
        return self.remote_url, self.remote_context, self.node_id

    def seen_to_succeed(self) -> None:
        """This process saw the node succeed (its record, and the output it names): Luigi's check of it, as an
        upstream of the nodes that follow, needs no request."""
        completion.learn(self._known_as, True)

    def record(self) -> Optional[RunRecord]:
        return RunStore(self._remote()).record(self.node_id)


class LocalBundleTarget(luigi.Target):
    """The output of node ``node_id`` (the bundle with that processing id) is in local context ``context`` of
    the store at ``home``."""

    def __init__(self, home: str, context: str, node_id: str):
        self.home = home
        self.context = context
        self.node_id = node_id

    def bundle(self) -> Optional[Bundle]:
        return Home(Path(self.home)).context(self.context).by_processing_id(self.node_id)

    def exists(self) -> bool:
        return self.bundle() is not None
