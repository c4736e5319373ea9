"""Queue depth on RabbitMQ: the ready-message count of each destination's quorum queue.

A passive ``queue.declare`` answers with the queue's message count without creating or changing it (the
same number ``rabbitmqctl list_queues messages_ready`` and KEDA's RabbitMQ scaler in ``QueueLength`` mode
read). Messages a worker has already taken but not acknowledged are not counted: like the Redis list
length, the gauge is the backlog *waiting* for a worker. A queue that does not exist yet (nothing
published to it, no worker started on it) has depth 0. When RabbitMQ does not answer, the depths are
unknown and the gauge is left out of the scrape (alert ``GradesyncQueueDepthMissing``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import structlog
from celery import Celery

from producers.keys import Keys
from producers.settings import without_credentials

log = structlog.get_logger("gradesync.ops")

_NOT_FOUND = 404


def amqp_queue_depths(app: Celery, destinations: Iterable[str]) -> dict[str, int]:
    """Ready messages per destination queue; ``{}`` when the broker cannot be read."""
    names = list(destinations)
    depths: dict[str, int] = {}
    try:
        conn: Any = app.connection_for_read()  # kombu is untyped
        with conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            channel = conn.channel()
            try:
                for name in names:
                    try:
                        ok = channel.queue_declare(queue=Keys.queue(name), passive=True)
                        depths[name] = int(ok.message_count)
                    except Exception as exc:
                        if getattr(exc, "code", None) != _NOT_FOUND:
                            raise
                        depths[name] = 0  # never declared: nothing waits in it
                        channel = conn.channel()  # the broker closed the channel with the 404
            finally:
                channel.close()
    except Exception as exc:  # any kombu / amqp / socket error: the depths are unknown this scrape
        log.warning("amqp_queue_depth_failed", broker=without_credentials(str(app.conf.broker_url)),
                    error=type(exc).__name__)
        return {}
    return depths
