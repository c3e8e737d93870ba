"""A test hook: deterministic interruption, for the tests that kill a push, a pull or a run at a known point.

``DISDAT_FAULT=<op>:<key prefix>:<n>`` makes the n-th store operation ``op`` (``put`` or ``get``) on a key
starting with the prefix block for ever, after creating the file named by ``DISDAT_FAULT_SIGNAL``, so that a
test knows the moment and can kill the process there instead of racing a transfer. It is a test hook and
nothing else: it only works with ``DISDAT_FAULT_SIGNAL`` set, a malformed value is one error line (never a
traceback), and the process says on stderr where it blocks. Unset (always, outside tests), a checkpoint
costs one dictionary lookup.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from typing import Tuple

from ..errors import DisdatError

_lock = threading.Lock()
_seen = {"put": 0, "get": 0}
_SPEC = re.compile(r"(put|get):([^:]*):([1-9][0-9]{0,8})")


def parse(spec: str) -> Tuple[str, str, int]:
    """(op, key prefix, n) of a DISDAT_FAULT value; one line when it is not one."""
    found = _SPEC.fullmatch(spec)
    if found is None:
        raise DisdatError(f"DISDAT_FAULT={spec[:80]!r} is not put|get:KEY_PREFIX:N (it is a test hook: unset it)")
    if not os.environ.get("DISDAT_FAULT_SIGNAL"):
        raise DisdatError("DISDAT_FAULT is a test hook and needs DISDAT_FAULT_SIGNAL (the file it creates when it "
                          "blocks): unset DISDAT_FAULT")
    return found.group(1), found.group(2), int(found.group(3))


def check() -> None:
    """At start-up: a malformed DISDAT_FAULT is one line before anything is done."""
    spec = os.environ.get("DISDAT_FAULT")
    if spec:
        parse(spec)


def checkpoint(op: str, key: str) -> None:
    spec = os.environ.get("DISDAT_FAULT")
    if not spec:
        return
    want_op, prefix, count = parse(spec)
    if op != want_op or not key.startswith(prefix):
        return
    with _lock:
        _seen[op] += 1
        hit = _seen[op] == count
    if hit:
        print(f"DISDAT_FAULT (a test hook): blocking for ever at {op} number {count} of {prefix}*: {key}",
              file=sys.stderr, flush=True)
        open(os.environ["DISDAT_FAULT_SIGNAL"], "w").close()
        while True:
            time.sleep(3600)
