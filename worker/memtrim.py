"""Give the C allocator's free memory back to the system (glibc's ``malloc_trim``), now and then.

Why: CPython hands every object over 512 bytes to the C allocator. A worker builds and drops thousands
of them on 64 threads (destination models built on use, their adapters and HTTP clients, answers, the
registry's snapshot at start-up), and glibc keeps freed chunks inside its heaps: the process's RSS stays
at its high-water mark. Measured with ``bench/bench_tenants.py`` (10 000 destinations, 3 000 events
spread over them): about 7 MB of each worker process was chunks glibc held free; ``malloc_trim(0)``
returned them (with one destination: about 1 MB). A trim takes well under a millisecond, so it runs
after a registry refresh that changed the map and every :data:`TRIM_EVERY` seconds, from the registry's
polling thread (:mod:`worker.registry.live`). Where the C library is not glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from collections.abc import Callable

#: seconds between two periodic trims (the registry is polled every 2 s: a trim each poll)
TRIM_EVERY = 2.0


def _load() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None
    return trim


_trim = _load()
_lock = threading.Lock()
_last = 0.0


def available() -> bool:
    return _trim is not None


def trim(*, at_most_every: float = 0.0) -> bool:
    """Return the allocator's free memory to the system; False when it did not run (not glibc, or it ran
    less than ``at_most_every`` seconds ago)."""
    global _last
    if _trim is None:
        return False
    with _lock:
        now = time.monotonic()
        if at_most_every and now - _last < at_most_every:
            return False
        _last = now
    _trim(0)
    return True
