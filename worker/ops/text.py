"""Times as operators read them on a terminal: ``3m 12s ago``, ``in 12s``.

(Control characters in what the CLI prints are neutralised by :func:`worker.safetext.printable`, the
one definition of an unsafe character.)
"""

from __future__ import annotations

import time


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
