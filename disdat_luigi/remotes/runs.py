"""Run records, leases and logs on the remote: what ran, whether it finished, who runs it now, what it said.

Layout, next to the bundles of a remote context (see remote.py)::

    context/<ctx>/runs/<node_id>.json      RunRecord: one per node, its latest attempt (the Luigi target)
    context/<ctx>/leases/<node_id>.json    Lease: the client running the node now, renewed by a heartbeat
    context/<ctx>/logs/<node_id>.log       the container's log of that attempt
    context/<ctx>/pending/<name>.json      the root node of a non-blocking run whose output is <name>

A record is written ``running`` by the client before it starts a container, and ``succeeded`` or
``failed`` by the container last, after its output is pushed; the client writes ``timed_out`` or
``interrupted`` when it stops a container, and ``failed`` when one dies without a word. So a record with
status ``succeeded`` means the node is complete, and every other run leaves a record saying why it is not.

A lease makes one client the owner of a running node, across machines: it is taken with a create-only
write (S3's ``If-None-Match``, a lock on file://), renewed every few seconds with a compare-and-swap, and
released at the end by a compare-and-swap too (a client that lost its lease never releases the new
owner's). A lease is stale when its owner's process is gone (same machine) or it was not renewed for
:data:`LEASE_TTL` seconds (elsewhere; a renewal time in the future counts as none); a stale or released
lease is taken over with a compare-and-swap, so two clients never both win it. A store that ignores
conditional writes is refused the first time a lease is taken.

A node submitted without a waiting client (AWS Batch, non-blocking) has no lease: its record says
``detached`` and its job is its owner, alive as long as the backend says the job is.

Everything here is read from a shared remote, so it is validated before it is used or printed.
"""
from __future__ import annotations

import json
import math
import os
import re
import socket
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..display import has_control, safe
from ..errors import IntegrityError, NotFound, RemoteError
from ..store.manifest import CREATED_FORMAT, check_created, check_hex_id, check_name, check_uuid, now_utc
from .remote import Remote

RUNNING, SUCCEEDED, FAILED, INTERRUPTED, TIMED_OUT = "running", "succeeded", "failed", "interrupted", "timed_out"
STATUSES = (RUNNING, SUCCEEDED, FAILED, INTERRUPTED, TIMED_OUT)
FINAL = (SUCCEEDED, FAILED, INTERRUPTED, TIMED_OUT)
LEASE_TTL = 60.0            # seconds without a renewal before a lease held on another machine is stale
HEARTBEAT = 5.0             # seconds between renewals
MAX_TEXT = 2000             # error lines and other free text in a record
MAX_LOG = 16 << 20          # the tail of a log that is stored, and printed
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")   # container names and Batch job ids: never a path


def check_job_id(value: Any, what: str = "field job_id:") -> str:
    if not (isinstance(value, str) and _JOB_ID.fullmatch(value)):
        raise IntegrityError(f"{what} {safe(repr(value))[:80]} is not a job id")
    return value


def _text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > limit or has_control(value):
        raise IntegrityError(f"field {what} is not a line of text")
    return value


def _opt(value: Any, check, *args) -> Any:
    return None if value is None else check(value, *args)


def _str_map(value: Any, what: str, check_value=None) -> Dict[str, str]:
    if not isinstance(value, dict):
        raise IntegrityError(f"field {what} is not an object")
    out = {}
    for k, v in value.items():
        _text(k, f"{what} key", 200)
        out[k] = check_value(v, f"field {what}[{k}]:") if check_value else _text(v, f"{what}[{k}]")
    return out


@dataclass(frozen=True)
class RunRecord:
    """One node's latest attempt (see the module docstring)."""

    node_id: str
    run_id: str                                  # the root node id of the run that started this attempt
    status: str
    pipe_cls: str
    params: Dict[str, str]
    bundle_name: str                             # the output bundle's name
    backend: str
    image: str
    started: str
    input_uuid: Optional[str] = None
    upstream: Dict[str, str] = field(default_factory=dict)        # dependency name -> upstream node id
    inputs: Dict[str, str] = field(default_factory=dict)          # dependency name -> bundle uuid it read
    output_uuid: Optional[str] = None
    job_id: Optional[str] = None                 # container name (Local) or Batch job id
    host: Optional[str] = None                   # where the client (or the container) ran
    stopped: Optional[str] = None
    error: Optional[str] = None
    attempt: int = 1
    detached: bool = False                       # submitted without a waiting client: its job is its owner
    format: int = 1

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, node_id: str) -> "RunRecord":
        """Parse and validate a record read from the remote; it must be the record of ``node_id``."""
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"the run record of {node_id} is not valid JSON: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != 1:
            raise IntegrityError(f"the run record of {node_id} is not a format 1 record")
        try:
            record = cls(
                node_id=check_hex_id(d.get("node_id"), "field node_id:"),
                run_id=check_hex_id(d.get("run_id"), "field run_id:"),
                status=d.get("status") if d.get("status") in STATUSES else _bad("status"),
                pipe_cls=_text(d.get("pipe_cls"), "pipe_cls", 300),
                params=_str_map(d.get("params", {}), "params"),
                bundle_name=check_name(d.get("bundle_name")),
                backend=_text(d.get("backend"), "backend", 40), image=_text(d.get("image"), "image", 300),
                started=check_created(d.get("started"), "field started:"),
                input_uuid=_opt(d.get("input_uuid"), check_uuid, "field input_uuid:"),
                upstream=_str_map(d.get("upstream", {}), "upstream", check_hex_id),
                inputs=_str_map(d.get("inputs", {}), "inputs", check_uuid),
                output_uuid=_opt(d.get("output_uuid"), check_uuid, "field output_uuid:"),
                job_id=_opt(d.get("job_id"), check_job_id), host=_opt(d.get("host"), _text, "host", 300),
                stopped=_opt(d.get("stopped"), check_created, "field stopped:"),
                error=_opt(d.get("error"), _text, "error"),
                attempt=d.get("attempt") if _is_attempt(d.get("attempt")) else _bad("attempt"),
                detached=d.get("detached", False) if isinstance(d.get("detached", False), bool) else _bad("detached"))
        except IntegrityError:
            raise
        except Exception as exc:  # a name, uuid or id in the wrong form raises DisdatError subclasses
            raise IntegrityError(f"the run record of {node_id} is refused: {exc}") from None
        if record.node_id != node_id:
            raise IntegrityError(f"the run record of {node_id} names node {record.node_id}")
        if record.status == SUCCEEDED and record.output_uuid is None:
            raise IntegrityError(f"the run record of {node_id} says succeeded without an output")
        return record

    def finished(self, status: str, error: Optional[str] = None, **changes: Any) -> "RunRecord":
        """This record with a final status (the error cut to one line)."""
        line = safe(error.splitlines()[0])[:MAX_TEXT] if error and error.strip() else None
        return replace(self, status=status, error=line, stopped=now_utc(), **changes)

    @property
    def duration(self) -> Optional[float]:
        if self.stopped is None:
            return None
        parse = lambda s: datetime.strptime(s, CREATED_FORMAT).replace(tzinfo=timezone.utc)  # noqa: E731
        return (parse(self.stopped) - parse(self.started)).total_seconds()


def _bad(what: str) -> Any:
    raise IntegrityError(f"field {what} has a value that is not allowed")


def _is_attempt(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1_000_000


class RunStore:
    """The records, leases and logs of one remote context."""

    def __init__(self, remote: Remote):
        self.remote = remote
        self.store = remote.store
        self._root = f"context/{remote.context}"

    @property
    def where(self) -> str:
        """The remote and remote context, as containers are labelled (and jobs tagged) with it: ``url context``."""
        return f"{self.remote.url} {self.remote.context}"

    def record_key(self, node_id: str) -> str:
        return f"{self._root}/runs/{node_id}.json"

    def lease_key(self, node_id: str) -> str:
        return f"{self._root}/leases/{node_id}.json"

    def log_key(self, node_id: str) -> str:
        return f"{self._root}/logs/{node_id}.log"

    # -- records -----------------------------------------------------------------------------------
    def record(self, node_id: str) -> Optional[RunRecord]:
        try:
            raw = self.store.get_bytes(self.record_key(check_hex_id(node_id, "node id")))
        except NotFound:
            return None
        return RunRecord.from_json(raw, node_id)

    def write(self, record: RunRecord) -> None:
        self.store.put_bytes(self.record_key(record.node_id), record.to_json())

    def update_running(self, node_id: str, change, attempt: Optional[int] = None) -> Optional[RunRecord]:
        """Apply ``change`` (record -> record) only while the record still says running (and, given
        ``attempt``, is still that attempt): a compare-and-swap, so nobody overwrites a final record, nor an
        old attempt (a paused client, a terminated job) the current one. Returns what is there."""
        for _ in range(5):
            try:
                raw, version = self.store.get_versioned(self.record_key(node_id))
            except NotFound:
                return None
            record = RunRecord.from_json(raw, node_id)
            if record.status != RUNNING or (attempt is not None and record.attempt != attempt):
                return record
            new = change(record)
            if self.store.put_if(self.record_key(node_id), new.to_json(), version):
                return new
        return self.record(node_id)

    def current(self, node_id: str) -> Optional[RunRecord]:
        """The node's record, None when there is none or it is malformed (then it is simply replaced)."""
        try:
            return self.record(node_id)
        except IntegrityError:
            return None

    def succeeded(self, node_id: str) -> bool:
        """The node's record says succeeded and its output, made by this node, is on the remote. A malformed
        record, or one whose output is gone or was made by another node, counts as not succeeded: the node
        runs again and its record is replaced."""
        record = self.current(node_id)
        if record is None or record.status != SUCCEEDED or record.output_uuid is None:
            return False
        try:
            made_by = (self.remote.manifest(record.output_uuid).lineage or {}).get("processing_id")
        except (NotFound, IntegrityError):
            return False
        return made_by == node_id

    def node_ids(self) -> List[str]:
        """Every node with a record (ids in their strict form only; anything else on the remote is ignored)."""
        prefix = f"{self._root}/runs/"
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
        """(node id, record, why it was refused) for every record on the remote."""
        from concurrent.futures import ThreadPoolExecutor

        ids = self.node_ids()

        def read(node: str) -> Tuple[str, Optional[RunRecord], Optional[str]]:
            try:
                return node, self.record(node), None
            except IntegrityError as exc:
                return node, None, str(exc)

        with ThreadPoolExecutor(8) as pool:
            yield from pool.map(read, ids)

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

    # -- pending outputs (non-blocking runs) ----------------------------------------------------------
    def pending_key(self, name: str) -> str:
        return f"{self._root}/pending/{check_name(name)}.json"

    def write_pending(self, name: str, nodes: List[str]) -> None:
        """Mark ``name`` as the output of a non-blocking run of ``nodes`` (upstream first, the root last)."""
        self.store.put_bytes(self.pending_key(name), json.dumps({"nodes": nodes}).encode())

    def pending(self, name: str) -> List[str]:
        """The nodes of the latest non-blocking run whose output is ``name``, the root last ([] when none)."""
        try:
            d = json.loads(self.store.get_bytes(self.pending_key(name)))
            nodes = d.get("nodes") if isinstance(d, dict) else None
            if not isinstance(nodes, list) or not nodes or len(nodes) > 100_000:
                raise ValueError("no nodes")
            return [check_hex_id(n, "pending node id") for n in nodes]
        except NotFound:
            return []
        except (ValueError, UnicodeDecodeError):
            raise IntegrityError(f"the pending marker of {name} on the remote is malformed") from None

    # -- logs --------------------------------------------------------------------------------------
    def write_log(self, node_id: str, text: bytes) -> None:
        """Store a job's log (its last MAX_LOG bytes: a chatty job must not fill the remote or a reader)."""
        if len(text) > MAX_LOG:
            text = b"(the log's first %d bytes are not kept)\n" % (len(text) - MAX_LOG) + text[-MAX_LOG:]
        self.store.put_bytes(self.log_key(node_id), text)

    def log(self, node_id: str) -> Optional[bytes]:
        """The stored log, at most its last MAX_LOG bytes (whatever a remote holds, a reader reads no more)."""
        key = self.log_key(node_id)
        size = self.store.size(key)
        if size is None:
            return None
        start = max(0, size - MAX_LOG)
        with self.store.open_range(key, start, size - start) as stream:
            body = stream.read(size - start)
        return (b"(the log's first %d bytes are not shown)\n" % start if start else b"") + body

    # -- leases ------------------------------------------------------------------------------------
    def lease(self, node_id: str) -> Optional[Tuple["Lease", str]]:
        """The current lease and its version, or None (an unreadable or released lease counts as stale)."""
        try:
            raw, version = self.store.get_versioned(self.lease_key(node_id))
        except NotFound:
            return None
        return Lease.from_json(raw), version

    def take(self, node_id: str, lease: "Lease", over: Optional[str] = None) -> Optional[str]:
        """Take the lease (``over``: replacing that stale version); its new version, or None if beaten."""
        self.check_conditional_writes()
        key = self.lease_key(node_id)
        if not self.store.put_if(key, lease.to_json(), over):
            return None
        return self.store.get_versioned(key)[1]

    def renew(self, node_id: str, lease: "Lease", version: str) -> Optional[str]:
        return self.take(node_id, replace(lease, renewed=time.time()), over=version)

    def release(self, node_id: str, version: str) -> None:
        """Give the lease up, if it is still the one this client holds (``version``)."""
        self.store.put_if(self.lease_key(node_id), RELEASED, version)

    _probed: set = set()

    def check_conditional_writes(self) -> None:
        """Leases need a store that honours conditional writes: a second create-only write must fail."""
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


RELEASED = b'{"released": true}'


def host_id() -> str:
    """This machine: hostname plus its machine id, so two hosts both called 'localhost' differ."""
    try:
        machine = open("/etc/machine-id").read().strip()[:12]
    except OSError:
        machine = ""
    return f"{socket.gethostname()}/{machine}" if machine else socket.gethostname()


def _process_start(pid: int) -> Optional[str]:
    """When ``pid`` started (field 22 of /proc/pid/stat): tells a live owner from a reused pid."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


@dataclass(frozen=True)
class Lease:
    owner: str                  # a fresh uuid per client process
    host: str
    pid: int
    pid_start: Optional[str]
    renewed: float              # epoch seconds of the last renewal (by the owner's clock)
    job_id: Optional[str] = None
    backend: str = "Local"
    free: bool = False          # released, unreadable or malformed: anybody may take it over

    @classmethod
    def mine(cls, backend: str) -> "Lease":
        """A new lease for this process (a fresh owner id: forked Luigi workers each get their own)."""
        return cls(owner=uuidlib.uuid4().hex, host=host_id(), pid=os.getpid(),
                   pid_start=_process_start(os.getpid()), renewed=time.time(), backend=backend)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Lease":
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or d.get("released"):
                raise ValueError("released")
            lease = cls(owner=str(d["owner"]), host=str(d["host"]), pid=int(d["pid"]),
                        pid_start=None if d.get("pid_start") is None else str(d["pid_start"]),
                        renewed=float(d["renewed"]), job_id=None if d.get("job_id") is None else str(d["job_id"]),
                        backend=str(d.get("backend", "Local")))
            if not math.isfinite(lease.renewed):
                raise ValueError("renewed is not a time")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return cls(owner="?", host="?", pid=0, pid_start=None, renewed=0.0, free=True)
        return lease

    def stale(self, now: Optional[float] = None) -> bool:
        """The owner is gone: its process (on this machine) or its heartbeat (anywhere); or it was released."""
        if self.free:
            return True
        if self.host == host_id():
            return _process_start(self.pid) is None or _process_start(self.pid) != self.pid_start
        age = (now or time.time()) - self.renewed
        return age > LEASE_TTL or age < -LEASE_TTL  # a renewal "in the future" is a clock nobody can trust

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"

