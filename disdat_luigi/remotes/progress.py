"""Progress of a transfer: one tqdm bar of bytes with a files counter, only on a terminal."""
from __future__ import annotations

import sys
import threading
from typing import Optional


class Progress:
    def __init__(self, desc: str, total_bytes: int, total_files: int, enabled: Optional[bool] = None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._files = 0
        self._total_files = total_files
        self._bar = None
        if enabled and (total_bytes or total_files):
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                             leave=False, file=sys.stderr, postfix=f"0/{total_files} files")

    def add_bytes(self, n: int) -> None:
        if self._bar is not None and n:
            with self._lock:
                self._bar.update(n)

    def add_files(self, n: int = 1) -> None:
        if self._bar is not None:
            with self._lock:
                self._files += n
                self._bar.set_postfix_str(f"{self._files}/{self._total_files} files", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
