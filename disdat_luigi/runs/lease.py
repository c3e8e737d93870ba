"""A node's lease: which client process runs the node now (a Local container lives only as long as its client).

A lease names its owner (a fresh id per client process), its host and process, and when it was last renewed
(every :data:`HEARTBEAT` seconds, by a compare-and-swap). It is *stale*, and may be taken over, when it was
released, when it was not renewed for :data:`LEASE_TTL` seconds (a renewal time in the future counts as
none: a clock nobody can trust), or, on the owner's own machine, as soon as its process is gone.

A lease is read from a shared remote, so nothing in it is proof of life on its own: a lease planted with this
host's name and a long-lived pid would otherwise block a node for ever. So a lease on this machine must be
renewed like any other, and a client that waits for a holder watches the lease *change* (:class:`LeaseWatch`):
one whose version stays the same for LEASE_TTL seconds of the waiter's own clock is stale, whatever it says.
"""
from __future__ import annotations

import functools
import json
import math
import os
import socket
import time
import uuid as uuidlib
from dataclasses import asdict, dataclass
from typing import Optional

LEASE_TTL = 60.0            # seconds without a renewal before a lease is stale
HEARTBEAT = 5.0             # seconds between renewals
MAX_LEASE_BYTES = 4096      # a lease is a few hundred bytes: a larger file on the remote is not one
RELEASED = b'{"released": true}'


@functools.lru_cache(maxsize=1)
def host_id() -> str:
    """This machine: hostname plus its machine id, so two hosts both called 'localhost' differ (read once: every
    claim and lease names it)."""
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
            lease = cls(owner=str(d["owner"])[:64], host=str(d["host"])[:300], pid=int(d["pid"]),
                        pid_start=None if d.get("pid_start") is None else str(d["pid_start"])[:40],
                        renewed=float(d["renewed"]), job_id=None if d.get("job_id") is None else str(d["job_id"])[:128],
                        backend=str(d.get("backend", "Local"))[:40])
            if not math.isfinite(lease.renewed):
                raise ValueError("renewed is not a time")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError, OverflowError):
            return cls(owner="?", host="?", pid=0, pid_start=None, renewed=0.0, free=True)
        return lease

    def stale(self, now: Optional[float] = None) -> bool:
        """Released, not renewed within LEASE_TTL (or 'renewed' in the future), or, on this machine, its
        process is gone (see the module docstring: a live pid alone proves nothing)."""
        if self.free:
            return True
        age = (now or time.time()) - self.renewed
        if age > LEASE_TTL or age < -LEASE_TTL:
            return True
        return self.host == host_id() and _process_start(self.pid) != self.pid_start

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


class LeaseWatch:
    """A waiter's view of a holder's lease: stale once it says so, or once its version has not changed for
    LEASE_TTL seconds of this process's clock (a holder renews every HEARTBEAT seconds)."""

    def __init__(self, version: str, ttl: float = LEASE_TTL):
        self.version, self.ttl = version, ttl
        self.since = time.monotonic()

    def stale(self, lease: Lease, version: str) -> bool:
        if version != self.version:
            self.version, self.since = version, time.monotonic()
        return lease.stale() or time.monotonic() - self.since > self.ttl
