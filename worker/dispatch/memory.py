"""The in-memory dispatcher: one process-local FIFO per destination queue — the broker seam's stand-in,
as dramatiq's ``StubBroker`` is. Like it, it imports only the seam: the worker that drains it in the same
process is built elsewhere (:class:`worker.testing.LocalWorker`, by :mod:`worker.runtime`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol

from worker.dispatch import Delivery


class Runs(Protocol):
    """What runs a delivery message (a :class:`worker.delivery.Deliverer`)."""

    def run(self, event_id: str, token: str) -> str: ...


class InMemoryDispatcher:
    """Thread-safe FIFO queues keyed by destination; ``sent`` counts every message ever queued."""

    kind = "memory"

    def __init__(self) -> None:
        self._queues: dict[str, deque[Delivery]] = {}
        self._ready = threading.Condition()
        self.sent = 0

    def send(self, delivery: Delivery) -> None:
        self.send_many([delivery])

    def send_many(self, deliveries: Sequence[Delivery]) -> None:
        with self._ready:
            for d in deliveries:
                self._queues.setdefault(d.destination, deque()).append(d)
            self.sent += len(deliveries)
            self._ready.notify_all()

    def depths(self, destinations: Iterable[str]) -> dict[str, int]:
        with self._ready:
            return {name: len(self._queues.get(name, ())) for name in destinations}

    def ping(self) -> None:
        return None

    def clear(self) -> int:
        """Drop every waiting message (what a lost message looks like); returns how many were dropped."""
        with self._ready:
            dropped = sum(len(q) for q in self._queues.values())
            self._queues.clear()
            return dropped

    def close(self) -> None:
        return None

    def take(self, timeout: float = 0.0) -> Delivery | None:
        """The next waiting message (destinations take turns), or None after ``timeout``."""
        with self._ready:
            if not any(self._queues.values()):
                self._ready.wait(timeout)
            for name, queue in self._queues.items():
                if queue:
                    self._queues[name] = self._queues.pop(name)  # to the back of the turn order
                    return queue.popleft()
            return None

    def drain(self, deliverer: Runs, limit: int | None = None) -> int:
        """Run waiting messages through ``deliverer`` in this thread until none wait (or ``limit`` ran);
        returns how many ran. Messages the runs queue (none: retries wait in Redis) run too."""
        ran = 0
        while limit is None or ran < limit:
            delivery = self.take()
            if delivery is None:
                break
            deliverer.run(delivery.event_id, delivery.token)
            ran += 1
        return ran
