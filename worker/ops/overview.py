"""What the ops surface reads: one :class:`OpsContext` per web process (settings, store, dead-letter queue,
broker dispatcher) and the per-destination overview shared by the dashboard, the API and ``/metrics``.

Everything is read from Redis at request / scrape time, so the numbers are right whatever the number of
worker processes and hosts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from worker.dispatch import Dispatcher
from worker.dispatch.celery import CeleryDispatcher
from worker.keys import Keys
from worker.ops.views import iso
from worker.settings import Settings
from worker.store import Store
from worker.store.deadletters import DeadLetterQueue
from worker.store.ledger import EventState

WINDOW_OUTCOMES = (EventState.SUCCEEDED, EventState.DEAD_LETTERED, "retried", EventState.SUPERSEDED)


class OpsContext:
    """The connections one web process uses (all thread-safe, pooled)."""

    def __init__(self, settings: Settings, store: Store | None = None, dispatcher: Dispatcher | None = None) -> None:
        self.settings = settings
        self.store = store or Store.connect(settings)
        self.dispatcher: Dispatcher = dispatcher or CeleryDispatcher(settings, client=self.store.redis)
        self.dlq = DeadLetterQueue(self.store, self.dispatcher)

    @property
    def keys(self) -> Keys:
        return self.store.keys

    def vendors(self) -> dict[str, str]:
        return self.settings.vendors()

    def close(self) -> None:
        self.dispatcher.close()
        self.store.redis.close()


@dataclass(frozen=True)
class DestinationOverview:
    destination: str
    vendor: str
    queue_depth: int | None  # None when the broker could not be read (depth unknown)
    in_progress: int
    scheduled_retries: int
    dead_letters: int
    oldest_dead_letter_at: float | None
    windows: dict[str, dict[str, int]]  # "5m"/"60m" -> outcome -> count

    def oldest_age(self, now: float) -> float | None:
        return None if self.oldest_dead_letter_at is None else max(0.0, now - self.oldest_dead_letter_at)

    def as_dict(self, now: float) -> dict[str, Any]:
        data = asdict(self)
        data["oldest_dead_letter_at"] = iso(self.oldest_dead_letter_at)
        age = self.oldest_age(now)
        data["oldest_dead_letter_age_seconds"] = None if age is None else round(age, 1)
        return data


def scheduled_by_destination(store: Store, destinations: Iterable[str]) -> dict[str, int]:
    """Scheduled retries per destination: one ZCARD of each ``scheduled:{dest}`` (no scan of the events)."""
    names = list(destinations)
    with store.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(store.keys.scheduled_of(name))
        counts = pipe.execute()
    return {name: int(n) for name, n in zip(names, counts, strict=True)}


def compute_overview(ctx: OpsContext, *, windows: bool = True) -> list[DestinationOverview]:
    """One entry per configured destination, in name order."""
    vendors = ctx.vendors()
    names = sorted(vendors)
    r, keys = ctx.store.redis, ctx.keys
    with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zcard(keys.inflight(name))
            pipe.zcard(keys.dlq_of(name))
            pipe.zrange(keys.dlq_of(name), 0, 0, withscores=True)
        raw = pipe.execute()
    depths = ctx.dispatcher.depths(names)
    scheduled = scheduled_by_destination(ctx.store, names)
    counts: dict[str, dict[tuple[str, str], int]] = {}
    if windows:
        for label, minutes in (("5m", 5), ("60m", 60)):
            counts[label] = ctx.store.stats.window(names, WINDOW_OUTCOMES, minutes)
    out: list[DestinationOverview] = []
    for i, name in enumerate(names):
        in_progress, dead, oldest = raw[i * 3 : i * 3 + 3]
        out.append(DestinationOverview(
            destination=name,
            vendor=vendors[name],
            queue_depth=depths.get(name),
            in_progress=int(in_progress),
            scheduled_retries=scheduled.get(name, 0),
            dead_letters=int(dead),
            oldest_dead_letter_at=float(oldest[0][1]) if oldest else None,
            windows={label: {o: c.get((name, o), 0) for o in WINDOW_OUTCOMES} for label, c in counts.items()},
        ))
    return out


def overview_json(ctx: OpsContext) -> dict[str, Any]:
    """The overview as the dashboard and ``GET /v1/overview`` show it."""
    now = time.time()
    rows = compute_overview(ctx)
    return {
        "generated_at": iso(now),
        "broker": ctx.dispatcher.kind,
        # the ledger's state names, so the dashboard's JavaScript has no list of its own
        "states": {state.name: state.value for state in EventState},
        "destinations": [row.as_dict(now) for row in rows],
    }
