"""Deterministic interruption, for the tests that kill a push, a pull or a run at a known point.

``DISDAT_FAULT=<op>:<key prefix>:<n>`` makes the n-th store operation ``op`` (``put`` or ``get``) on a key
starting with the prefix block for ever, after creating the file named by ``DISDAT_FAULT_SIGNAL``, so that
a test knows the moment and can kill the process there instead of racing a transfer. Unset (always, outside
tests), a checkpoint costs one dictionary lookup.
"""
from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_seen = {"put": 0, "get": 0}


def checkpoint(op: str, key: str) -> None:
    spec = os.environ.get("DISDAT_FAULT")
    if not spec:
        return
    want_op, prefix, count = spec.split(":")
    if op != want_op or not key.startswith(prefix):
        return
    with _lock:
        _seen[op] += 1
        hit = _seen[op] == int(count)
    if hit:
        signal = os.environ.get("DISDAT_FAULT_SIGNAL")
        if signal:
            open(signal, "w").close()
        while True:
            time.sleep(3600)
