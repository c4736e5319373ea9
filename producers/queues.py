"""The broker queues, declared the same way by every side (worker, producer, ops app, requeue).

On Redis a queue is a plain list ``grades.<destination>`` (KEDA's Redis-list scaler reads its length).
On RabbitMQ every queue is a **quorum queue** (``x-queue-type: quorum``): replicated with Raft across the
cluster's nodes, so a queue survives the loss of a node (RabbitMQ 4 removed classic mirrored queues).
RabbitMQ refuses to re-declare a queue with other arguments (PRECONDITION_FAILED), which is why producers
must declare exactly what the worker declares: both take their queues from :func:`broker_queues`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kombu.entity import Exchange, Queue

from producers.connections import is_amqp_url
from producers.keys import Keys

QUORUM_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}
#: on RabbitMQ every destination queue is bound to this one direct exchange by its own name, so the
#: binding does not depend on which destination sorts first (Celery's default exchange would)
AMQP_EXCHANGE = "gradesync"


def queue_arguments(broker_url: str) -> dict[str, Any] | None:
    """The ``x-*`` arguments a destination queue is declared with on this broker."""
    return dict(QUORUM_ARGUMENTS) if is_amqp_url(broker_url) else None


def broker_queue(destination: str, broker_url: str) -> Queue:
    name = Keys.queue(destination)
    if not is_amqp_url(broker_url):
        return Queue(name, routing_key=name)  # type: ignore[no-untyped-call]
    exchange = Exchange(AMQP_EXCHANGE, type="direct", durable=True)  # type: ignore[no-untyped-call]
    return Queue(name, exchange, routing_key=name, durable=True,  # type: ignore[no-untyped-call]
                 queue_arguments=queue_arguments(broker_url))


def broker_queues(destinations: Iterable[str], broker_url: str) -> list[Queue]:
    return [broker_queue(d, broker_url) for d in destinations]
