"""The retry pump: a thread in every worker process that moves due scheduled retries back to their
destination's queue (and recovers claims a crashed pump left behind); it also runs the flow pump
(:mod:`worker.flow.drain`: parked events drained, probes released) when it is given one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from worker.dispatch import Delivery, Dispatcher
from worker.flow.drain import FlowPump
from worker.flow.store import FlowStore
from worker.settings import Settings
from worker.store import Store
from worker.store.ledger import RUNNABLE

log = structlog.get_logger("gradesync.pump")


class RetryPump:
    def __init__(self, store: Store, dispatcher: Dispatcher, *, interval: float = 1.0, batch: int = 500,
                 flow: FlowPump | None = None) -> None:
        self.store = store
        self.flow = flow
        self.dispatcher = dispatcher
        self.interval = interval
        self.batch = batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_recover = 0.0

    def tick(self, now: float | None = None) -> int:
        """Queue every retry due by ``now``; returns how many messages were sent."""
        now = time.time() if now is None else now
        if now - self._last_recover >= 30:
            self._last_recover = now
            recovered = self.store.schedule.recover(now)
            if recovered:
                log.warning("retry_claims_recovered", count=recovered)
        ids = self.store.schedule.claim_due(now, self.batch)
        if not ids:
            return 0
        deliveries = [
            Delivery(rec.event_id, rec.destination, rec.token)
            for rec in self.store.ledger.load_many(ids)
            # in_progress too: a message re-delivered at once after its worker died (RabbitMQ does that on
            # the lost connection) finds the dead worker's lease still held and is deferred; dropping it
            # here would strand the event in_progress. The token and the lease keep a live one single.
            if rec is not None and rec.state in RUNNABLE and rec.token
        ]
        self.dispatcher.send_many(deliveries)
        if deliveries:  # dispatched, not started: the stranded-event sweeper's index (worker.sweeper)
            self.store.redis.zadd(self.store.keys.queued, {d.event_id: now for d in deliveries})
        self.store.schedule.done(ids)
        if deliveries:
            log.info("retries_queued", count=len(deliveries))
        return len(deliveries)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.flow is not None:
                    self.flow.tick()
                while self.tick() >= self.batch:
                    pass
            except Exception:
                log.exception("retry_pump_failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gradesync-retry-pump", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        """Is the pump's thread running (the worker's heartbeat checks it)?"""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def waiting_since(store: Store) -> Callable[[list[str]], list[float | None]]:
    """When each event began waiting (published or requeued), for the flow pump's max_event_age check."""

    def since(ids: list[str]) -> list[float | None]:
        return [None if rec is None else max(rec.get_float("created_at") or 0.0, rec.get_float("requeued_at") or 0.0)
                for rec in store.ledger.load_many(ids)]
    return since


def build_pump(store: Store, dispatcher: Dispatcher, settings: Settings) -> RetryPump:
    """The retry pump with the flow pump, as every worker process runs it."""
    flow = FlowPump(FlowStore(store.redis, store.keys), settings.destinations, waiting_since(store))
    return RetryPump(store, dispatcher, flow=flow)
