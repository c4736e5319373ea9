"""The stranded-event sweeper: a thread in every worker process (one of them leads at a time) that queues
events a producer recorded but never queued a message for (it died between the two steps).

The index is the ``queued`` sorted set (:mod:`worker.keys`) of events whose message was (or should have
been) sent and whose attempt has not started: the publisher's register script adds every new event with
its creation time, a requeue and the retry pump add the events they queue, and an event leaves when an
attempt starts or it finishes. So a message lost in a Redis crash (kombu BRPOPs a message and records it
as unacknowledged in a second command) is covered too, for first attempts and retries alike. An event
still in it after ``GRADESYNC_STRANDED_AFTER`` seconds (default 300) is probably
stranded — or its message is just waiting in a long queue. So, per destination:

* while its broker queue is **empty** (the depth the dispatcher reads: the list lengths on Redis, the
  ready count on RabbitMQ), an event queued that long has no message waiting: it is swept after
  ``stranded_after``;
* while the queue is **not empty** (or its depth is unknown) the sweep waits 4x longer, so a backlog is
  not answered with a second copy of itself.

Sweeping is safe either way: one ledger operation per event (:meth:`worker.store.ledger.Ledger.reissue`)
checks it is still waiting (``queued``, or ``retrying`` and no longer in the retry schedule) and gives it
a **fresh dispatch token** before the new message is sent, so any old message of it (one waiting in the queue, or a
re-delivery of a dead worker's) runs nothing — there is never a second live message for an event. The
leader lease (``sweeper:lock``) only keeps many workers from doing the same work twice.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any, cast

import structlog

from worker.dispatch import Delivery, Dispatcher, new_token
from worker.settings import Settings
from worker.store import Store, scripts

log = structlog.get_logger("gradesync.sweeper")

#: how much longer an event waits before a sweep while its destination's queue holds messages
BUSY_FACTOR = 4.0

def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Sweeper:
    def __init__(self, store: Store, dispatcher: Dispatcher, settings: Settings, *, owner: str | None = None,
                 batch: int = 500) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.age = settings.stranded_after
        self.interval = max(1.0, min(30.0, self.age / 4))
        self.batch = batch
        self.owner = owner or new_token()
        self._lead = store.redis.register_script(scripts.LEAD)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def leads(self) -> bool:
        lease_ms = int(self.interval * 3 * 1000)
        return bool(self._lead(keys=[self.store.keys.sweeper_lock], args=[self.owner, lease_ms]))

    def _busy(self, destinations: set[str]) -> set[str]:
        """The destinations whose broker queue is not known to be empty (the depth the dashboard shows)."""
        depths = self.dispatcher.depths(sorted(destinations))
        return {name for name in destinations if depths.get(name, 1) > 0}

    def tick(self, now: float | None = None) -> int:
        """One sweep; returns how many stranded events were queued again."""
        now = time.time() if now is None else now
        if not self.leads():
            return 0
        keys = self.store.keys
        raw = self.store.redis.zrangebyscore(keys.queued, "-inf", now - self.age, start=0, num=self.batch,
                                             withscores=True)
        if not raw:
            return 0
        candidates = [(_s(member), float(score)) for member, score in cast(list[tuple[Any, float]], raw)]
        records = self.store.ledger.load_many([eid for eid, _ in candidates])
        by_destination: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for (eid, score), record in zip(candidates, records, strict=True):
            if record is None:  # expired or purged
                self.store.redis.zrem(keys.queued, eid)
            else:
                by_destination[record.destination].append((eid, score))
        busy = self._busy(set(by_destination))
        deliveries: list[Delivery] = []
        for destination, entries in by_destination.items():
            cutoff = now - self.age * (BUSY_FACTOR if destination in busy else 1.0)
            for eid, score in entries:
                if score > cutoff:
                    continue
                token = new_token()
                found = self.store.ledger.reissue(eid, token, now)
                if found is not None:
                    deliveries.append(Delivery(eid, found, token))
        self.dispatcher.send_many(deliveries)
        if deliveries:
            log.warning("stranded_events_queued", count=len(deliveries),
                        destinations=sorted({d.destination for d in deliveries}))
        return len(deliveries)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("sweeper_failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gradesync-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
