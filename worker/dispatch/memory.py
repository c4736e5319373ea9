"""The in-memory dispatcher: one process-local FIFO per destination queue, drained into a
:class:`~worker.delivery.Deliverer` in the same process — the broker seam's stand-in, as dramatiq's
``StubBroker`` and procrastinate's ``InMemoryConnector`` are.

Everything but the broker stays real: the ledger, the retry schedule, the flow state and the caches live
in Redis, the adapters call the vendors over HTTP. So publish → deliver → retry → dead-letter → requeue →
stale runs in one process (:class:`LocalWorker` adds the threads ``gradesync worker`` has: the delivery
pool, the retry + flow pump and the stranded-event sweeper), and only what needs processes (kill -9,
shutdown, Flower, the supervisor, a Redis crash) needs a real worker.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Iterable, Sequence

import structlog

from producers.settings import Settings
from worker.delivery import AdapterPool, Deliverer
from worker.dispatch import Delivery
from worker.flow.share import FairShare
from worker.known_secrets import register_destinations
from worker.pump import RetryPump, build_pump
from worker.store import Store
from worker.sweeper import Sweeper

log = structlog.get_logger("gradesync.dispatch")


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

    def drain(self, deliverer: Deliverer, limit: int | None = None) -> int:
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


class LocalWorker:
    """``gradesync worker`` in this process, on an :class:`InMemoryDispatcher`: ``threads`` delivery
    threads, the retry pump (with the flow pump) and the stranded-event sweeper."""

    def __init__(self, settings: Settings, dispatcher: InMemoryDispatcher, *, threads: int = 4,
                 name: str | None = None) -> None:
        register_destinations(settings)  # their credentials are masked in every record and log line
        self.dispatcher = dispatcher
        self.store = Store.connect(settings)
        self.adapters = AdapterPool(settings, self.store)
        share = FairShare(threads, len(settings.destinations()))
        self.deliverer = Deliverer(settings, self.store, self.adapters, worker=name or socket.gethostname(),
                                   share=share)
        self.pump: RetryPump = build_pump(self.store, dispatcher, settings)
        self.sweeper = Sweeper(self.store, dispatcher, settings, owner=name)
        self.threads = threads
        self._stop = threading.Event()
        self._pool: list[threading.Thread] = []

    def _consume(self) -> None:
        while not self._stop.is_set():
            delivery = self.dispatcher.take(timeout=0.2)
            if delivery is None:
                continue
            try:
                self.deliverer.run(delivery.event_id, delivery.token)
            except Exception:  # as Celery would: logged, the message is gone, the ledger says the rest
                log.exception("local_delivery_failed", event_id=delivery.event_id)

    def start(self) -> LocalWorker:
        self._pool = [threading.Thread(target=self._consume, name=f"gradesync-local-{i}", daemon=True)
                      for i in range(self.threads)]
        for t in self._pool:
            t.start()
        self.pump.start()
        self.sweeper.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.pump.stop()
        self.sweeper.stop()
        for t in self._pool:
            t.join(timeout=10)
        self.adapters.close()
        self.store.redis.close()
