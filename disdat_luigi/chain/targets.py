"""Luigi targets over bundles and run records: what makes each step of the run chain complete.

* :class:`RemoteBundleTarget` -- bundle UUID is complete on the remote (its manifest is there);
* :class:`RunRecordTarget` -- run RUN_ID succeeded (its run record says so);
* :class:`LocalRunOutputTarget` -- the output of run RUN_ID is in the local context.

The remote targets work on ``s3://`` and ``file://`` alike through the project's object stores rather than
``luigi.contrib.s3.S3Target``: one client and credential chain for transfers and completion checks, the same
retries, and one-line errors instead of botocore tracebacks in the scheduler. Their ``path`` is the object's
full URL, so the luigid UI and logs show where the data is. Targets are built from a local context name:
the remote URL comes from that context's binding, and credentials never become task parameters.
"""
from __future__ import annotations

from typing import Optional

import luigi

from ..store.context import Bundle, Context
from ..store.home import Home
from ..remotes import Remote, remote_of


def _context(name: str) -> Context:
    return Home().context(name)


class _RemoteTarget(luigi.Target):
    def __init__(self, context: str):
        self.context = context

    def _key(self, remote: Remote) -> str:
        raise NotImplementedError

    def _check(self, remote: Remote) -> bool:
        raise NotImplementedError

    def _remote(self) -> Remote:
        return remote_of(_context(self.context))

    @property
    def path(self) -> str:
        with self._remote() as remote:
            return f"{remote.url.rstrip('/')}/{self._key(remote)}"

    def exists(self) -> bool:
        with self._remote() as remote:
            return self._check(remote)


class RemoteBundleTarget(_RemoteTarget):
    """Bundle ``uuid`` is complete on the remote of local context ``context``."""

    def __init__(self, context: str, uuid: str):
        super().__init__(context)
        self.uuid = uuid

    def _key(self, remote: Remote) -> str:
        return remote.manifest_key(self.uuid)

    def _check(self, remote: Remote) -> bool:
        return remote.has_bundle(self.uuid)


class RunRecordTarget(_RemoteTarget):
    """Run ``run_id`` has a run record with status ``succeeded`` on the remote."""

    def __init__(self, context: str, run_id: str):
        super().__init__(context)
        self.run_id = run_id

    def _key(self, remote: Remote) -> str:
        return remote.run_key(self.run_id)

    def _check(self, remote: Remote) -> bool:
        return remote.run_succeeded(self.run_id)

    def record(self) -> Optional[dict]:
        with self._remote() as remote:
            return remote.run_record(self.run_id)


class LocalRunOutputTarget(luigi.Target):
    """The output bundle of run ``run_id`` is in local context ``context``."""

    def __init__(self, context: str, run_id: str):
        self.context = context
        self.run_id = run_id

    def bundle(self) -> Optional[Bundle]:
        return _context(self.context).by_run_id(self.run_id)

    def exists(self) -> bool:
        return self.bundle() is not None
