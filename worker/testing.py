"""Helpers for tests that run the pipeline in one process (as procrastinate's ``testing`` module keeps its
``InMemoryConnector`` and helpers together): the in-memory dispatcher and :class:`LocalWorker`.

Everything but the broker stays real: the ledger, the retry schedule, the flow state and the caches live
in Redis, the adapters call the vendors over HTTP. So publish → deliver → retry → dead-letter → requeue →
stale runs in one process (:class:`LocalWorker` adds the threads ``gradesync worker`` has: the delivery
pool, the retry + flow pump and the stranded-event sweeper), and only what needs processes (kill -9,
shutdown, Flower, the supervisor, a Redis crash) needs a real worker. The worker is built by
:func:`worker.runtime.build`, as ``gradesync worker``'s is.
"""

from __future__ import annotations

import threading

import structlog

from worker import runtime
from worker.dispatch.memory import InMemoryDispatcher
from worker.settings import Settings

log = structlog.get_logger("gradesync.testing")

__all__ = ["InMemoryDispatcher", "LocalWorker"]


class LocalWorker:
    """``gradesync worker`` in this process, on an :class:`InMemoryDispatcher`: ``threads`` delivery
    threads, the retry pump (with the flow pump) and the stranded-event sweeper."""

    def __init__(self, settings: Settings, dispatcher: InMemoryDispatcher, *, threads: int = 4,
                 name: str | None = None) -> None:
        self.dispatcher = dispatcher
        self.runtime = runtime.build(settings, slots=threads, worker=name)
        self.store = self.runtime.store
        self.adapters = self.runtime.adapters
        self.deliverer = self.runtime.deliverer
        self.name = name
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
        self.runtime.start(self.dispatcher, owner=self.name)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.runtime.stop()
        for t in self._pool:
            t.join(timeout=10)
        self.runtime.close()
