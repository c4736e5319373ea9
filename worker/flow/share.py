"""Fair share of one worker process: no destination holds more than ``max_concurrency`` of its threads
(default: half of them, at least one), so a slow vendor slows only itself. A process that serves a single
destination has no one to share with: that destination may use every thread.

An over-share message does not wait on a thread: it is deferred durably (the retry schedule) for about
as long as that destination's attempts have been taking, and the thread takes the next message — which,
with one broker queue per destination, is most often another destination's. Deferring (rather than
cancelling the queue's consumer while it is full) keeps Celery's consumer untouched and works the same
with the Redis and AMQP brokers; its cost is one cheap Redis write per over-share message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: bounds (seconds) of the over-share deferral
MIN_DEFER = 0.5
MAX_DEFER = 15.0


def share_limit(max_concurrency: int | None, slots: int, destinations: int = 2) -> int:
    """Threads one destination may hold in a process of ``slots`` threads serving ``destinations``."""
    if max_concurrency is not None:
        return max(1, min(max_concurrency, slots))
    if destinations <= 1:
        return slots
    return max(1, slots // 2)


def defer_delay(typical_seconds: float, draw: float) -> float:
    """How long an over-share message waits: ~1-2 times a typical attempt of its destination."""
    base = min(MAX_DEFER, max(MIN_DEFER, typical_seconds))
    return round(base * (1.0 + draw), 3)


class FairShare:
    def __init__(self, slots: int, destinations: int = 2) -> None:
        self.slots = slots
        self.destinations = destinations
        self._held: dict[str, int] = {}
        self._typical: dict[str, float] = {}
        self._lock = threading.Lock()

    def enter(self, name: str, max_concurrency: int | None) -> bool:
        """Take a thread slot for ``name``; False when the destination already holds its share."""
        with self._lock:
            held = self._held.get(name, 0)
            if held >= share_limit(max_concurrency, self.slots, self.destinations):
                return False
            self._held[name] = held + 1
            return True

    @contextmanager
    def slot(self, name: str, max_concurrency: int | None) -> Iterator[bool]:
        """``with share.slot(name, limit) as admitted:`` — holds a thread slot while admitted."""
        if not self.enter(name, max_concurrency):
            yield False
            return
        began = time.monotonic()
        try:
            yield True
        finally:
            self.leave(name, time.monotonic() - began)

    def leave(self, name: str, seconds: float) -> None:
        with self._lock:
            self._held[name] = max(0, self._held.get(name, 0) - 1)
            old = self._typical.get(name)
            self._typical[name] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def held(self, name: str) -> int:
        with self._lock:
            return self._held.get(name, 0)

    def delay(self, name: str, rand: Callable[[], float]) -> float:
        with self._lock:
            typical = self._typical.get(name, MIN_DEFER)
        return defer_delay(typical, rand())
