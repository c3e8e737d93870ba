"""Run records, leases, logs and pending markers of one remote context: where they live, and reading them safely.

Layout, next to the bundles of a remote context (see remotes/remote.py)::

    context/<ctx>/runs/<node_id>.json      RunRecord: one per node, its latest attempt (the Luigi target)
    context/<ctx>/leases/<node_id>.json    Lease: the client running the node now (client-owned nodes only)
    context/<ctx>/logs/<node_id>.log       the log of that attempt (its last MAX_LOG bytes)
    context/<ctx>/pending/<name>.json      the nodes of the latest non-blocking run whose output is <name>

Every read is bounded (a record, a lease, a marker, a log: never more than its limit, whatever a remote
holds) and validated. A graph's records are read with a bounded pool of requests (:meth:`RunStore.read_many`),
never one node after another. Writes that decide who owns a node are compare-and-swaps on the object's
version (S3's If-Match / If-None-Match; a lock on file://); a store that ignores them is refused the first
time one is needed.
"""
from __future__ import annotations

import hashlib
import json
import re
import uuid as uuidlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .. import config
from ..errors import IntegrityError, NotFound, RemoteError
from ..remotes.remote import Remote
from ..store.manifest import check_hex_id, check_name
from .lease import MAX_LEASE_BYTES, RELEASED, Lease
from .record import RUNNING, SUCCEEDED, RunRecord

MAX_RECORD_BYTES = 4 << 20      # a record names its upstream nodes and inputs: a join of 10,000 is ~1 MB
MAX_PENDING_BYTES = 8 << 20     # a pending marker lists a run's nodes (at most MAX_PENDING_NODES)
MAX_PENDING_NODES = 100_000
MAX_LOG = 16 << 20              # the tail of a log that is stored, and printed
MAX_INLINE_JOB = 8 << 10        # a job description passed on the command line (a Batch request has 30 KiB)
MAX_JOB_BYTES = 16 << 20        # a job description stored on the remote

Versioned = Tuple[Optional[RunRecord], Optional[str]]   # (record, or None if absent or malformed; its version)
OVERSIZED = "oversized"         # the version read() gives an object too large to be a record
_HEX = re.compile(r"[0-9a-f]+")


def pool_size() -> int:
    """Requests in flight for a graph's records: the transfer workers (the S3 client's pool is sized to them)."""
    return max(1, config.get("disdat", "transfer_workers"))


def in_parallel(fn: Callable, items: Iterable, workers: Optional[int] = None) -> List:
    """``[fn(item) for item in items]``, with at most ``workers`` of them at a time (in order)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(workers or pool_size(), len(items)), thread_name_prefix="runs") as pool:
        return list(pool.map(fn, items))


class RunStore:
    """The records, leases, logs and pending markers of one remote context."""

    def __init__(self, remote: Remote):
        self.remote = remote
        self.store = remote.store
        self._root = f"context/{remote.context}"

    @property
    def where(self) -> str:
        """The remote and remote context, as containers are labelled (and jobs tagged) with it: ``url context``."""
        return f"{self.remote.url} {self.remote.context}"

    def record_key(self, node_id: str) -> str:
        return f"{self._root}/runs/{check_hex_id(node_id, 'node id')}.json"

    def lease_key(self, node_id: str) -> str:
        return f"{self._root}/leases/{check_hex_id(node_id, 'node id')}.json"

    def log_key(self, node_id: str) -> str:
        return f"{self._root}/logs/{check_hex_id(node_id, 'node id')}.log"

    @property
    def status_prefix(self) -> str:
        return f"{self._root}/status/"

    def status_key(self, node_id: str) -> str:
        """What a running pipe last said of itself (runs/status.py)."""
        return f"{self.status_prefix}{check_hex_id(node_id, 'node id')}.json"

    def pending_key(self, name: str) -> str:
        return f"{self._root}/pending/{check_name(name)}.json"

    # -- records -----------------------------------------------------------------------------------
    def record(self, node_id: str) -> Optional[RunRecord]:
        """The node's record (None when there is none); IntegrityError when it is malformed or too large."""
        try:
            raw = self.store.get_bytes(self.record_key(node_id), MAX_RECORD_BYTES)
        except NotFound:
            return None
        return RunRecord.from_json(raw, node_id)

    def read(self, node_id: str) -> Versioned:
        """The node's record and its version, for a compare-and-swap: (None, None) when there is none, (None,
        version) when it is malformed (then it is simply replaced)."""
        try:
            raw, version = self.store.get_versioned(self.record_key(node_id), MAX_RECORD_BYTES)
        except NotFound:
            return None, None
        except IntegrityError:  # too large to be a record: it is replaced too (see write_if)
            return None, OVERSIZED
        try:
            return RunRecord.from_json(raw, node_id), version
        except IntegrityError:
            return None, version

    def read_many(self, node_ids: Iterable[str]) -> Dict[str, Versioned]:
        """:meth:`read` of many nodes, with a bounded pool of requests."""
        ids = list(node_ids)
        return dict(zip(ids, in_parallel(self.read, ids)))

    def current(self, node_id: str) -> Optional[RunRecord]:
        """The node's record, None when there is none or it is malformed (then it is simply replaced)."""
        return self.read(node_id)[0]

    def write(self, record: RunRecord) -> None:
        self.store.put_bytes(self.record_key(record.node_id), record.to_json())

    def write_if(self, record: RunRecord, version: Optional[str]) -> Optional[str]:
        """Write ``record`` only over ``version`` (None: only where there is no record); its new version, or
        None when somebody else wrote first. An oversized object (never one of ours) is deleted first; then
        whoever writes first wins, as over no record. (Who relies on it for ownership checks the store honours
        it first: :meth:`check_conditional_writes`.)"""
        if version == OVERSIZED:
            self.store.delete(self.record_key(record.node_id))
            version = None
        return self.store.put_if(self.record_key(record.node_id), record.to_json(), version)

    def update_running(self, node_id: str, change: Callable[[RunRecord], RunRecord],
                       attempt: Optional[int] = None) -> Optional[RunRecord]:
        """Apply ``change`` (record -> record) only while the record still says running (and, given
        ``attempt``, is still that attempt): a compare-and-swap, so nobody overwrites a final record, nor an
        old attempt (a paused client, a terminated job) the current one. Returns what is there."""
        for _ in range(5):
            record, version = self.read(node_id)
            if record is None or record.status != RUNNING or (attempt is not None and record.attempt != attempt):
                return record
            new = change(record)
            if self.write_if(new, version):
                return new
        return self.current(node_id)

    def made_by(self, record: Optional[RunRecord]) -> bool:
        """``record`` says succeeded and its output, made by its node, is on the remote. A record whose output
        is gone, or was made by another node, does not count: the node runs again and its record is replaced."""
        if record is None or record.status != SUCCEEDED or record.output_uuid is None:
            return False
        try:
            lineage = self.remote.manifest(record.output_uuid).lineage or {}
        except (NotFound, IntegrityError):
            return False
        return lineage.get("processing_id") == record.node_id

    def succeeded(self, node_id: str) -> bool:
        return self.made_by(self.current(node_id))

    def succeeded_among(self, records: Dict[str, Versioned]) -> Dict[str, bool]:
        """:meth:`made_by` for each record read by :meth:`read_many` (manifests read with a bounded pool)."""
        ids = list(records)
        return dict(zip(ids, in_parallel(lambda node: self.made_by(records[node][0]), ids)))

    def node_ids(self) -> List[str]:
        """Every node with a record (ids in their strict form only; anything else on the remote is ignored)."""
        return self._ids(f"{self._root}/runs/")

    def leased_ids(self) -> List[str]:
        """Every node with a lease (released ones included)."""
        return self._ids(f"{self._root}/leases/")

    def _ids(self, prefix: str) -> List[str]:
        out = []
        for key in self.store.list(prefix):
            name = key[len(prefix):]
            if name.endswith(".json") and "/" not in name:
                try:
                    out.append(check_hex_id(name[:-5], "node id"))
                except IntegrityError:
                    continue
        return out

    def records(self) -> Iterator[Tuple[str, Optional[RunRecord], Optional[str]]]:
        """(node id, record, why it was refused) for every record on the remote (a bounded pool of reads)."""
        def read(node: str) -> Tuple[str, Optional[RunRecord], Optional[str]]:
            try:
                return node, self.record(node), None
            except IntegrityError as exc:
                return node, None, str(exc)

        yield from in_parallel(read, self.node_ids())

    def resolve_prefix(self, prefix: str) -> str:
        """The one node id that starts with ``prefix`` (as git resolves commits)."""
        if not prefix or any(c not in "0123456789abcdef" for c in prefix):
            raise NotFound(f"{prefix!r} is not a run id: use the hex id `dsdt runs` shows")
        matches = [n for n in self.node_ids() if n.startswith(prefix)]
        if not matches:
            raise NotFound(f"no run {prefix} on the remote {self.remote.url} (see `dsdt runs`)")
        if len(matches) > 1:
            raise NotFound(f"run id {prefix} is ambiguous ({len(matches)} runs start with it): give more digits")
        return matches[0]

    # -- every attempt (history) ---------------------------------------------------------------------
    def attempt_key(self, node_id: str, attempt: int, suffix: str = "json") -> str:
        return f"{self._root}/attempts/{check_hex_id(node_id, 'node id')}/{int(attempt)}.{suffix}"

    def archive(self, record: RunRecord) -> None:
        """Keep a finished attempt, record and log, before the next attempt of its node replaces them (only a
        superseded attempt costs these writes: a node that succeeds at once has its latest record alone)."""
        if record.status == RUNNING:
            return
        self.store.put_bytes(self.attempt_key(record.node_id, record.attempt), record.to_json())
        try:
            self.store.copy(self.log_key(record.node_id), self.attempt_key(record.node_id, record.attempt, "log"),
                            MAX_LOG)
        except (NotFound, IntegrityError):  # no log (it never started), or not one of ours
            pass

    def archived(self) -> Dict[str, List[int]]:
        """node id -> the attempts kept of it (one listing of the remote context's attempts)."""
        prefix = f"{self._root}/attempts/"
        out: Dict[str, List[int]] = {}
        for key in self.store.list(prefix):
            node, _, name = key[len(prefix):].partition("/")
            number, _, suffix = name.partition(".")
            if suffix == "json" and number.isdigit() and len(node) == 32 and _HEX.fullmatch(node):
                out.setdefault(node, []).append(int(number))
        return out

    def archived_record(self, node_id: str, attempt: int) -> RunRecord:
        """An attempt kept by :meth:`archive` (IntegrityError when malformed, NotFound when absent)."""
        record = RunRecord.from_json(self.store.get_bytes(self.attempt_key(node_id, attempt), MAX_RECORD_BYTES),
                                     node_id)
        if record.attempt != attempt:
            raise IntegrityError(f"the kept attempt {attempt} of {node_id} says it is attempt {record.attempt}")
        return record

    def attempt_log(self, node_id: str, attempt: int) -> Optional[bytes]:
        """The log kept of an attempt, at most its last MAX_LOG bytes."""
        return self._tail(self.attempt_key(node_id, attempt, "log"))

    # -- pending outputs (non-blocking runs) ----------------------------------------------------------
    def write_pending(self, name: str, nodes: List[str]) -> None:
        """Mark ``name`` as the output of a non-blocking run of ``nodes`` (upstream first, the root last)."""
        self.store.put_bytes(self.pending_key(name), json.dumps({"nodes": nodes}).encode())

    def pending(self, name: str) -> List[str]:
        """The nodes of the latest non-blocking run whose output is ``name``, the root last ([] when none)."""
        try:
            d = json.loads(self.store.get_bytes(self.pending_key(name), MAX_PENDING_BYTES))
            nodes = d.get("nodes") if isinstance(d, dict) else None
            if not isinstance(nodes, list) or not nodes or len(nodes) > MAX_PENDING_NODES:
                raise ValueError("no nodes")
            return [check_hex_id(n, "pending node id") for n in nodes]
        except NotFound:
            return []
        except (ValueError, UnicodeDecodeError, RecursionError, IntegrityError):
            raise IntegrityError(f"the pending marker of {name} on the remote is malformed") from None

    # -- job descriptions too large to pass inline ----------------------------------------------------
    def job_arguments(self, job_json: str) -> List[str]:
        """The entrypoint's arguments for a job description: inline, or, when it is larger than a command
        line or a Batch request should carry (a join of many upstream nodes), stored on the remote under its
        sha256, which the entrypoint checks (so the copy is immutable, and nobody can swap it)."""
        if len(job_json) <= MAX_INLINE_JOB:
            return ["--job", job_json]
        sha = hashlib.sha256(job_json.encode()).hexdigest()
        self.store.put_bytes(self._job_key(sha), job_json.encode())
        return ["--job-at", self.remote.url, self.remote.context, sha]

    def stored_job(self, sha256: str) -> str:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise IntegrityError(f"{sha256[:80]!r} is not the sha256 of a job description")
        raw = self.store.get_bytes(self._job_key(sha256), MAX_JOB_BYTES)
        if hashlib.sha256(raw).hexdigest() != sha256:
            raise IntegrityError(f"the job description {sha256} on the remote does not match its sha256")
        return raw.decode()

    def _job_key(self, sha256: str) -> str:
        return f"{self._root}/jobs/{sha256}.json"

    # -- logs --------------------------------------------------------------------------------------
    def write_log(self, node_id: str, text: bytes) -> None:
        """Store a job's log (its last MAX_LOG bytes: a chatty job must not fill the remote or a reader)."""
        if len(text) > MAX_LOG:
            text = b"(the log's first %d bytes are not kept)\n" % (len(text) - MAX_LOG) + text[-MAX_LOG:]
        self.store.put_bytes(self.log_key(node_id), text)

    def log(self, node_id: str) -> Optional[bytes]:
        """The stored log, at most its last MAX_LOG bytes (whatever a remote holds, a reader reads no more)."""
        return self._tail(self.log_key(node_id))

    def _tail(self, key: str) -> Optional[bytes]:
        size = self.store.size(key)
        if size is None:
            return None
        start = max(0, size - MAX_LOG)
        with self.store.open_range(key, start, size - start) as stream:
            body = stream.read(size - start)
        return (b"(the log's first %d bytes are not shown)\n" % start if start else b"") + body

    # -- leases ------------------------------------------------------------------------------------
    def lease(self, node_id: str) -> Optional[Tuple[Lease, str]]:
        """The current lease and its version, or None (an unreadable or released lease counts as stale)."""
        try:
            raw, version = self.store.get_versioned(self.lease_key(node_id), MAX_LEASE_BYTES)
        except NotFound:
            return None
        except IntegrityError:  # larger than any lease: not one, so free (and replaced, see take)
            return Lease.from_json(b""), OVERSIZED
        return Lease.from_json(raw), version

    def take(self, node_id: str, lease: Lease, over: Optional[str] = None) -> Optional[str]:
        """Take the lease (``over``: replacing that stale version); its new version, or None if beaten."""
        self.check_conditional_writes()
        if over == OVERSIZED:
            self.store.delete(self.lease_key(node_id))
            over = None
        return self.store.put_if(self.lease_key(node_id), lease.to_json(), over)

    def renew(self, node_id: str, lease: Lease, version: str) -> Optional[str]:
        import time

        return self.take(node_id, replace(lease, renewed=time.time()), over=version)

    def release(self, node_id: str, version: str) -> None:
        """Give the lease up, if it is still the one this client holds (``version``)."""
        self.store.put_if(self.lease_key(node_id), RELEASED, version)

    _probed: set = set()

    def check_conditional_writes(self) -> None:
        """Ownership needs a store that honours conditional writes: a second create-only write must fail."""
        if self.remote.url in RunStore._probed:
            return
        key = f"{self._root}/leases/probe-{uuidlib.uuid4().hex}"
        try:
            first = self.store.put_if(key, b"{}", None)
            second = self.store.put_if(key, b"{}", None)
        finally:
            self.store.delete(key)
        if not first or second:
            raise RemoteError(f"the remote {self.remote.url} ignores conditional writes (If-None-Match): runs "
                              f"cannot be owned safely there; use a store that supports them (AWS S3, SeaweedFS, "
                              f"MinIO)")
        RunStore._probed.add(self.remote.url)
