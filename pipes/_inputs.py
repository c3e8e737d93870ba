"""Helpers shared by the example pipes."""
from __future__ import annotations

import os
from typing import Any, Iterator


def input_files(data: Any, suffix: str) -> Iterator[str]:
    """Every local file path with ``suffix`` found anywhere in a bundle's data (files come back as paths)."""
    if isinstance(data, str):
        if data.endswith(suffix) and os.path.isfile(data):
            yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from input_files(value, suffix)
    elif isinstance(data, list):
        for value in data:
            yield from input_files(value, suffix)
