"""Work-conserving fair share of one worker process's threads.

A destination whose attempts are fast may use every thread while no other destination has work in hand
in this process; only under contention is it capped, at half the threads (at least one), so a slow vendor
slows only itself. "Work in hand": another destination holds a thread now, or took one (or was turned
away) within the last :data:`CONTENTION_WINDOW` seconds — its next message is likely right behind in the
shared queue. An explicit ``max_concurrency`` replaces the share: the threads the destination may hold,
contended or not (an operator's number, as before).

A destination whose attempts are slow (typically over :data:`FAST_ATTEMPT`), or not known yet (its
first attempts in this process), keeps to its share even alone. Why: the worker cannot see what waits in
the shared queue behind its messages. A slow vendor holding every thread for seconds would leave no
thread to take the next message, so another destination's events would wait for the slow one's whole
backlog (isolation drill, no ``max_concurrency``: minutes); with half the threads, the others take the
slow destination's over-share messages, defer them, and reach the next destination's events. A fast
destination hands its threads back within milliseconds, so it costs others nothing to let it use them.

Why work-conserving: the old rule capped a destination at half the threads whenever the process served
more than one destination, even with the others idle, and deferred every over-share message: one busy
destination among five configured got 0.44x the throughput it had alone. Caps that apply only under
contention cost nothing when there is none.

An over-share message does not wait on a thread: it is deferred durably (the retry schedule) for about as
long as that destination's attempts have been taking, and the thread takes the next message — with one
shared broker queue (:mod:`worker.routing`), most often another destination's. A destination already
holding more than its share when contention starts is not pre-empted: it drops to its share as its
attempts end. Deferring (rather than cancelling the consumer) keeps Celery's consumer untouched and works
the same with the Redis and AMQP brokers; its cost is one cheap Redis write per over-share message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: bounds (seconds) of the over-share deferral
MIN_DEFER = 0.5
MAX_DEFER = 15.0
#: another destination seen within this many seconds still has work in hand (contention)
CONTENTION_WINDOW = 2.0
#: seconds: a destination whose attempts typically take longer keeps to its share even alone
FAST_ATTEMPT = 1.0


def share_limit(max_concurrency: int | None, slots: int, contended: bool = True) -> int:
    """Threads one destination may hold in a process of ``slots`` threads: its ``max_concurrency`` when
    set (the operator's number, contended or not), else all of them without contention and half of them
    (at least one) under contention."""
    if max_concurrency is not None:
        return max(1, min(max_concurrency, slots))
    return max(1, slots // 2) if contended else slots


def held_to_share(others_active: bool, typical: float | None) -> bool:
    """Whether a destination is held to its share: another destination has work in hand, or its own
    attempts are slow or not known yet (see the module's "why")."""
    return others_active or typical is None or typical > FAST_ATTEMPT


def admit(held: int, max_concurrency: int | None, slots: int, contended: bool) -> bool:
    """Whether a destination holding ``held`` threads may take one more (the pure decision)."""
    return held < share_limit(max_concurrency, slots, contended)


def defer_delay(typical_seconds: float, draw: float) -> float:
    """How long an over-share message waits: ~1-2 times a typical attempt of its destination."""
    base = min(MAX_DEFER, max(MIN_DEFER, typical_seconds))
    return round(base * (1.0 + draw), 3)


class FairShare:
    """Per-process state of the share: threads held per destination, and who was seen last (O(1) per
    decision, whatever the number of destinations)."""

    def __init__(self, slots: int, *, window: float = CONTENTION_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.window = window
        self.clock = clock
        self._held: dict[str, int] = {}
        self._holders = 0  # destinations holding at least one thread
        self._typical: dict[str, float] = {}
        self._started: dict[str, list[float]] = {}  # when each held slot's attempt began
        self._recent: list[tuple[str, float]] = []  # the last two distinct destinations seen, newest first
        self._lock = threading.Lock()

    def _seen(self, name: str, now: float) -> None:
        others = [r for r in self._recent if r[0] != name]
        self._recent = [(name, now), *others[:1]]

    def _contended(self, name: str, held: int, now: float) -> bool:
        others = self._holders - (1 if held else 0) > 0 or any(
            other != name and now - seen < self.window for other, seen in self._recent)
        return held_to_share(others, self._typical.get(name))

    def enter(self, name: str, max_concurrency: int | None) -> bool:
        """Take a thread slot for ``name``; False when the destination already holds its share."""
        with self._lock:
            now = self.clock()
            held = self._held.get(name, 0)
            ok = admit(held, max_concurrency, self.slots, self._contended(name, held, now))
            self._seen(name, now)
            if not ok:
                return False
            self._held[name] = held + 1
            if held == 0:
                self._holders += 1
            self._started.setdefault(name, []).append(now)
            return True

    @contextmanager
    def slot(self, name: str, max_concurrency: int | None) -> Iterator[bool]:
        """``with share.slot(name, limit) as admitted:`` — holds a thread slot while admitted."""
        if not self.enter(name, max_concurrency):
            yield False
            return
        began = self.clock()
        try:
            yield True
        finally:
            self.leave(name, self.clock() - began)

    def leave(self, name: str, seconds: float) -> None:
        with self._lock:
            started = self._started.get(name)
            if started:  # this attempt's start: the one nearest to now - seconds
                began = self.clock() - seconds
                started.remove(min(started, key=lambda t: abs(began - t)))
                if not started:
                    del self._started[name]
            held = self._held.get(name, 0)
            if held <= 1:
                self._held.pop(name, None)
                if held == 1:
                    self._holders -= 1
            else:
                self._held[name] = held - 1
            old = self._typical.get(name)
            self._typical[name] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def held(self, name: str) -> int:
        with self._lock:
            return self._held.get(name, 0)

    def delay(self, name: str, rand: Callable[[], float]) -> float:
        """How long an over-share message of ``name`` waits: about as long as its attempts take, or as its
        oldest attempt in flight has been running (a vendor that has not answered yet for 3 s is at least
        3 s slow: before its first answer, its messages came back every half second and stood in the
        shared queue ahead of other destinations' events, isolation drill)."""
        with self._lock:
            typical = self._typical.get(name, MIN_DEFER)
            started = self._started.get(name)
            running = self.clock() - min(started) if started else 0.0
        return defer_delay(max(typical, running), rand())
