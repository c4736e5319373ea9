"""The broker seam: everything that queues a delivery message or asks how many wait goes through a
:class:`Dispatcher` — the publisher, the retry pump, the stranded-event sweeper, the dead-letter requeue
and the ops overview. Two implementations:

* :class:`worker.dispatch.celery.CeleryDispatcher`: the real one (Redis or RabbitMQ through Celery /
  kombu), with batched sends and the broker's queue depths;
* :class:`worker.dispatch.memory.InMemoryDispatcher`: a process-local queue per destination, drained
  into a :class:`worker.delivery.Deliverer` in the same process (as dramatiq's ``StubBroker`` or
  procrastinate's ``InMemoryConnector``), so the pipeline — publish, retry, dead-letter, requeue, stale —
  runs in one process against the real Redis.

A delivery message carries only the event id, its destination and a dispatch token: the event itself
(with its credentials) stays in the ledger.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Delivery:
    """One delivery message: run ``event_id``'s next attempt if its ledger still holds ``token``."""

    event_id: str
    destination: str
    token: str


def new_token() -> str:
    """A fresh dispatch token (only the message carrying the ledger's current token runs an attempt)."""
    return secrets.token_hex(8)


class BrokerUnavailable(ConnectionError):
    """The broker did not take the messages (a :class:`ConnectionError`, so callers retry it as one)."""


@runtime_checkable
class Dispatcher(Protocol):
    """Queues delivery messages on their destination's queue and reads how many wait there."""

    #: "redis", "amqp", "memory" or "other": what the overview reports as the broker
    kind: str

    def send(self, delivery: Delivery) -> None:
        """Queue one message."""

    def send_many(self, deliveries: Sequence[Delivery]) -> None:
        """Queue the messages, in as few broker round trips as the broker allows."""

    def depths(self, destinations: Iterable[str]) -> dict[str, int]:
        """Messages waiting per destination queue; a destination whose depth is unknown is left out."""

    def ping(self) -> None:
        """Raise when the broker cannot be reached (the health check)."""

    def close(self) -> None:
        """Release the connections (idempotent)."""


__all__ = ["BrokerUnavailable", "Delivery", "Dispatcher", "new_token"]
