"""Progress of a transfer: one tqdm bar of bytes with a files counter on a terminal, and a listener for
whoever else wants to know (the Luigi tasks show it in the scheduler as a status message and percentage)."""
from __future__ import annotations

import sys
import threading
from typing import Callable, Optional

Listener = Callable[[int, int, int, int], None]    # (files done, files in all, bytes done, bytes in all)


class Progress:
    def __init__(self, desc: str, total_bytes: int, total_files: int, enabled: Optional[bool] = None,
                 listener: Optional[Listener] = None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._files = self._bytes = 0
        self._total_files, self._total_bytes = total_files, total_bytes
        self._listener = listener
        self._bar = None
        if enabled and (total_bytes or total_files):
            from tqdm import tqdm

            self._bar = tqdm(total=total_bytes, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                             leave=False, file=sys.stderr, postfix=f"0/{total_files} files")

    def add_bytes(self, n: int) -> None:
        if n:
            with self._lock:
                self._bytes += n
                if self._bar is not None:
                    self._bar.update(n)
            self._tell()

    def add_files(self, n: int = 1) -> None:
        with self._lock:
            self._files += n
            if self._bar is not None:
                self._bar.set_postfix_str(f"{self._files}/{self._total_files} files", refresh=False)
        self._tell()

    def _tell(self) -> None:
        if self._listener is not None:
            self._listener(self._files, self._total_files, self._bytes, self._total_bytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
