"""Durable scheduled retries: a Redis sorted set of event ids by due time.

A retry is never held in worker memory as a Celery ETA/countdown message (those outlive the Redis
broker's visibility timeout and run twice: celery#2599, kombu#337). Instead the worker writes the due
time here and a pump in every worker process moves due events back to their queue:
``claim_due`` atomically moves them to ``dispatching`` (so two pumps never both take one), the pump
queues their messages and calls ``done``; an entry left in ``dispatching`` by a crashed pump is put back
by ``recover``. It moves event ids between its sets and never writes an event's record (the ledger
does, :mod:`worker.store.ledger`); its two scripts are in :mod:`worker.store.scripts`.
"""

from __future__ import annotations

import redis

from worker.keys import Keys
from worker.store import scripts


class RetrySchedule:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._claim = client.register_script(scripts.SCHEDULE_CLAIM)
        self._recover = client.register_script(scripts.SCHEDULE_RECOVER)

    def claim_due(self, now: float, limit: int = 500) -> list[str]:
        ids = self._claim(keys=[self.keys.scheduled, self.keys.dispatching],
                          args=[f"{now:.3f}", limit, self.keys.prefix])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def done(self, event_ids: list[str]) -> None:
        if event_ids:
            self.r.zrem(self.keys.dispatching, *event_ids)

    def recover(self, now: float, older_than: float = 60.0) -> int:
        return int(self._recover(keys=[self.keys.dispatching, self.keys.scheduled],
                                 args=[f"{now - older_than:.3f}", f"{now:.3f}", self.keys.prefix]))

    def due_time(self, event_id: str) -> float | None:
        score = self.r.zscore(self.keys.scheduled, event_id)
        return None if score is None else float(score)
