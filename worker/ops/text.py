"""Text as operators see it on a terminal: control characters neutralised, times humanised.

Reasons shown to operators come from vendors (a breaker opens *because of* a vendor's answer) and from
other operators (a pause reason), so a terminal must never receive their raw bytes: an escape sequence
could recolour, move the cursor or rewrite what the table shows. :func:`neutralize` renders every
control and format character (C0, DEL, C1, bidi overrides, zero-width characters...) visibly escaped.
"""

from __future__ import annotations

import time
import unicodedata

#: Unicode categories never written raw: controls, format characters (bidi overrides, zero-width),
#: line / paragraph separators, surrogates, private use and unassigned code points
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def neutralize(text: str | None) -> str:
    """``text`` with every control / format character written as a visible escape (``\\x1b``)."""
    if not text:
        return ""
    return "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text)


def humanize_duration(seconds: float) -> str:
    """``45s``, ``3m 12s``, ``2h 5m``, ``3d 4h`` (two units at most, whole seconds)."""
    s = max(0, int(seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {s}s" if s else f"{minutes}m"
    return f"{s}s"


def humanize_since(ts: float | None, *, now: float | None = None) -> str:
    """How long ago epoch ``ts`` was: ``just now``, ``3m 12s ago``; ``-`` when unknown."""
    if ts is None:
        return "-"
    ago = (time.time() if now is None else now) - ts
    if ago < 1:
        return "just now"
    return f"{humanize_duration(ago)} ago"


def humanize_until(ts: float | None, *, now: float | None = None) -> str:
    """How long until epoch ``ts``: ``in 12s``, ``now``; ``-`` when unknown."""
    if ts is None:
        return "-"
    ahead = ts - (time.time() if now is None else now)
    return "now" if ahead < 1 else f"in {humanize_duration(ahead)}"
