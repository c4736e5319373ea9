"""Control characters and terminal escapes: refused in identifiers, neutralised on output.

One definition of "unsafe" for both sides. A character is unsafe when it is a C0/C1 control (``ESC``,
``BEL``, ``CR``, ``DEL``…), a bidirectional override or isolate (which reorder what a terminal shows),
or a line / paragraph separator. Ids refuse every one of them (:func:`unsafe_chars`); free text printed
by the CLI (vendor messages, reasons, learner ids of old records) goes through :func:`printable`, which
shows each one as a visible ``\\x1b``-style escape, so a vendor's ``\\x1b]0;…`` cannot retitle or clear
an operator's terminal.
"""

from __future__ import annotations

import re
from typing import Any

#: C0 and C1 controls, DEL, bidi embeddings/overrides/isolates, LRM/RLM/ALM, line and paragraph separators
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]")
#: the same, but tab, line feed and carriage return allowed (multi-line free text such as a comment)
_UNSAFE_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def unsafe_chars(value: str, *, multiline: bool = False) -> list[str]:
    """The unsafe characters of ``value`` as visible escapes (empty when it is safe)."""
    pattern = _UNSAFE_IN_TEXT if multiline else _UNSAFE
    return sorted({_escape(m) for m in pattern.finditer(value)})


def check_id(value: str, *, multiline: bool = False) -> str:
    """``value`` unchanged, or :class:`ValueError` naming the control characters found (a validator)."""
    found = unsafe_chars(value, multiline=multiline)
    if found:
        raise ValueError(f"must not contain control characters or terminal escapes (found {', '.join(found)})")
    return value


def printable(value: Any) -> str:
    """``str(value)`` with every unsafe character shown as an escape: for anything a CLI prints."""
    return _UNSAFE.sub(_escape, "" if value is None else str(value))
