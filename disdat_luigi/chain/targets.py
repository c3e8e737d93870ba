"""Luigi targets over bundles and run records: what makes each step of a run complete.

* :class:`RemoteBundleTarget` -- bundle UUID is complete on the remote (its manifest is there);
* :class:`RunRecordTarget` -- node NODE_ID succeeded (its run record on the remote says so);
* :class:`LocalBundleTarget` -- the bundle with processing id NODE_ID is in the local context.

The remote targets work on ``s3://`` and ``file://`` alike through the project's object stores rather than
``luigi.contrib.s3.S3Target``: one client and credential chain for transfers and completion checks, the same
retries, and one-line errors instead of botocore tracebacks in the scheduler. Their ``path`` is the object's
full URL, so the luigid UI and logs show where the data is. A remote target is named by where it is (the
remote URL and remote context), a local one by the store and context it is in; credentials never are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import luigi

from ..remotes import Remote, open_remote
from ..remotes.runs import RunRecord, RunStore
from ..store.context import Bundle
from ..store.home import Home


class _RemoteTarget(luigi.Target):
    def __init__(self, remote_url: str, remote_context: str):
        self.remote_url = remote_url
        self.remote_context = remote_context

    def _key(self, remote: Remote) -> str:
        raise NotImplementedError

    def _check(self, remote: Remote) -> bool:
        raise NotImplementedError

    def _remote(self) -> Remote:
        return open_remote(self.remote_url, self.remote_context)

    @property
    def path(self) -> str:
        with self._remote() as remote:
            return f"{remote.url.rstrip('/')}/{self._key(remote)}"

    def exists(self) -> bool:
        with self._remote() as remote:
            return self._check(remote)


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
        return RunStore(remote).succeeded(self.node_id)

    def record(self) -> Optional[RunRecord]:
        with self._remote() as remote:
            return RunStore(remote).record(self.node_id)


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
