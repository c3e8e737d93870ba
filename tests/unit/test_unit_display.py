"""Terminal-safe text (disdat_luigi.display)."""
from __future__ import annotations

import pytest

from disdat_luigi.display import has_control, safe


@pytest.mark.parametrize("text, expected", [
    ("a\x1b[2Jb", "a\\x1b[2Jb"),
    ("ok\rforged", "ok\\x0dforged"),
    ("nul\x00", "nul\\x00"),
    ("del\x7f", "del\\x7f"),
    ("csi\x9b31m", "csi\\x9b31m"),
    ("c1 \x80 \x85 \x9f", "c1 \\x80 \\x85 \\x9f"),
    ("bell\x07 vt\x0b ff\x0c", "bell\\x07 vt\\x0b ff\\x0c"),
    ("line\nnext", "line\\x0anext"),
    ("tab\there", "tab\\x09here"),
])
def test_safe_escapes_control_characters_as_hex(text, expected):
    assert safe(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("line\nnext\tcol", "line\nnext\tcol"),
    ("ok\rforged\n", "ok\\x0dforged\n"),
    ("a\x1b[2Jb\n", "a\\x1b[2Jb\n"),
    ("\x00\x0b\x0c\x7f\x9b", "\\x00\\x0b\\x0c\\x7f\\x9b"),
])
def test_safe_keeps_only_newlines_and_tabs_with_keep_newlines(text, expected):
    assert safe(text, keep_newlines=True) == expected


@pytest.mark.parametrize("text", ["plain", "caf\u00e9", "nbsp\u00a0", "\u00ff", "emoji \U0001F600", "[31m", "\\x1b"])
def test_safe_keeps_printable_text(text):
    assert safe(text) == text
    assert safe(text, keep_newlines=True) == text


def test_safe_accepts_any_object():
    assert safe(12) == "12"
    assert safe(None) == "None"


@pytest.mark.parametrize("text, expected", [("plain", False), ("", False), ("a\nb", True), ("a\tb", True),
                                            ("\x1b", True), ("\x9b", True), ("\x7f", True), ("\u00a0", False)])
def test_has_control(text, expected):
    assert has_control(text) is expected
