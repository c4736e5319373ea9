"""Which broker queue a destination's messages go to: a small fixed set, not one queue per destination.

Why: with one queue per destination every worker polled every queue. kombu's take (and BRPOP) names each
queue's lists on every pass of the consumer loop, so with 1 000 destinations a pass touched 4 000 Redis
keys and the delivery threads sat idle waiting for the loop (profile in README "Performance": 59 events/s
against 723 with one destination). Now every destination shares one queue, ``grades``, unless it sets
``group``: then its messages go to ``grades.<group>``, consumed only by the workers started for that group
(``gradesync worker --destinations`` naming its destinations; KEDA's optional dedicated groups).

Fairness between the destinations of one queue is not the queue's job: the fair share of a worker's
threads (:mod:`worker.flow.share`) keeps a slow or busy destination from holding every thread while others
have work, and per-destination rate limits, breakers, pause and parking (:mod:`worker.flow`) defer a
destination's messages through the retry schedule, so they do not block the queue behind them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from worker.keys import SHARED_QUEUE, Keys
from worker.registry.lazy import groups_of
from worker.vendors.base import DestinationBase


def queue_of(destination: DestinationBase | None) -> str:
    """The broker queue of a destination (the shared queue for an unknown one)."""
    return Keys.queue(destination.group if destination is not None else None)


def queues_of(destinations: Iterable[DestinationBase]) -> list[str]:
    """The queues a worker serving ``destinations`` consumes (sorted, each once)."""
    return sorted({queue_of(d) for d in destinations})


def all_queues(destinations: Mapping[str, DestinationBase]) -> list[str]:
    """Every queue in use: the shared queue (always) and each dedicated group's (read without building a
    lazy map's models: :func:`worker.registry.lazy.groups_of`)."""
    return sorted({SHARED_QUEUE, *(Keys.queue(g) for g in groups_of(destinations))})


def members(destinations: Mapping[str, DestinationBase]) -> dict[str, list[str]]:
    """queue -> the destinations whose messages it carries."""
    out: dict[str, list[str]] = {q: [] for q in all_queues(destinations)}
    for name, d in destinations.items():
        out[queue_of(d)].append(name)
    return out
