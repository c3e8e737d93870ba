"""The run record of a node: what ran, how it ended, and why (one JSON object per node on the remote).

A record is written ``running`` before a node's job starts, and made final (``succeeded``, ``failed``,
``interrupted``, ``timed_out``) last, by whoever saw the end: the container itself, or the client or job
monitor that saw the job die without a word. ``succeeded`` always names the output bundle, so a record that
says so means the node is complete.

Records are read from a shared remote: every field is checked (strict ids, names, times and one-line texts)
before a record is used or printed, and one that is refused names the node and the field.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from ..containers.backend import CAUSES
from ..display import has_control, safe
from ..errors import IntegrityError
from ..store.manifest import CREATED_FORMAT, check_created, check_hex_id, check_name, check_uuid, now_utc

RUNNING, SUCCEEDED, FAILED, INTERRUPTED, TIMED_OUT = "running", "succeeded", "failed", "interrupted", "timed_out"
STATUSES = (RUNNING, SUCCEEDED, FAILED, INTERRUPTED, TIMED_OUT)
FINAL = (SUCCEEDED, FAILED, INTERRUPTED, TIMED_OUT)
MAX_TEXT = 2000             # error lines and other free text in a record
ERROR_PREFIX = "dsdt-entrypoint: error: "   # how a container says why it failed, in its log
# container names, Batch job ids (an array child's is <id>:<index>): never a path
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


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


def _bad(what: str) -> Any:
    raise IntegrityError(f"field {what} has a value that is not allowed")


def _exit_code(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -255 <= value <= 255:
        raise IntegrityError("field exit_code is not an exit status")
    return value


def _cause(value: Any) -> str:
    if value not in CAUSES:
        raise IntegrityError("field cause is not one of " + ", ".join(CAUSES))
    return value


def _is_attempt(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1_000_000


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
    exit_code: Optional[int] = None              # the container's, once it ended
    cause: Optional[str] = None                  # a failed attempt's kind (containers.backend.CAUSES)
    format: int = 1

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, node_id: str) -> "RunRecord":
        """Parse and validate a record read from the remote; it must be the record of ``node_id``."""
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise IntegrityError(f"the run record of {node_id} is not valid JSON: {str(exc)[:200]}") from None
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
                detached=d.get("detached", False) if isinstance(d.get("detached", False), bool) else _bad("detached"),
                exit_code=_opt(d.get("exit_code"), _exit_code), cause=_opt(d.get("cause"), _cause))
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
