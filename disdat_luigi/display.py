"""Text fit for a terminal. Whatever comes from a remote (names, tags, run records, container logs, error
text quoting them) is untrusted: an escape sequence or a carriage return in it could rewrite what the user
sees (forged rows in ``dsdt ls``, a hidden error). Control characters are shown as ``\\xNN`` instead."""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_OR_NEWLINE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe(text: object, keep_newlines: bool = False) -> str:
    """``text`` with every control character escaped (newlines and tabs kept when ``keep_newlines``)."""
    pattern = _CONTROL if keep_newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def has_control(text: str) -> bool:
    return bool(_CONTROL_OR_NEWLINE.search(text))
