"""The Celery app: Redis (or AMQP) broker, one shared queue (plus one per dedicated group), settings
chosen for I/O-bound delivery with at-least-once semantics. Configuration is computed lazily from
:class:`Settings` on first use, so importing this module has no side effects beyond registering the
guarded sentinel transport. ``celery -A worker.celery_app ...`` (and ``gradesync worker`` / ``gradesync
flower``) find the app here; ``import worker`` does not load Celery.

This is one of the four modules that import Celery / kombu (with :mod:`worker.kombu_redis`, :mod:`worker.tasks`
and :mod:`worker.dispatch.celery`): besides the worker's app it holds the producers' send-only app
(:func:`make_client_app`), the queue declarations and the sentinel transport; how the worker's consumer
talks to Redis (the closed-channel guard, client reuse, acknowledgements and takes in batches) is in
:mod:`worker.kombu_redis`.

Why each setting (see also README "Operations"):

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its attempt
  is recorded, so a killed worker loses nothing; the broker re-delivers it.
* ``visibility_timeout`` (``GRADESYNC_VISIBILITY_TIMEOUT``, 90 s) and a restore sweep every 5 s: how soon
  Redis re-delivers a killed worker's messages (at most ~95 s). It can be short because gradesync never
  uses ETA/countdown messages (retries wait in Redis, :mod:`worker.store.schedule`) and every attempt is
  bounded by ``task_time_limit``.
* ``worker_prefetch_multiplier = 1``: a worker reserves only what it can run, so a slow vendor's backlog
  is not hoarded by one process and a crash strands few messages.
* the ``threads`` pool (``gradesync worker``): vendor calls dominate, so threads overlap them cheaply and
  share one pooled HTTP client per destination.
* ``task_ignore_result``: outcomes live in the ledger; no result backend to fill up.
* ``worker_send_task_events`` off unless ``GRADESYNC_TASK_EVENTS`` (or ``gradesync worker -E``): publishing
  an event per task state costs about 15 % of a delivery's CPU and only Flower reads them; the ledger,
  the dashboard and ``/metrics`` already say what happened to every event.
* the broker URL and transport options come from :mod:`worker.connections`: a ``redis+sentinel://``
  URL becomes kombu's sentinel transport (it follows the master after a failover); on RabbitMQ the
  queues are quorum queues (:func:`broker_queues`: replicated, they survive a node) and publishing
  waits for the broker's confirm (``confirm_publish``).
* ``worker_cancel_long_running_tasks_on_connection_loss``: after a broker connection loss the broker will
  re-deliver those messages anyway, so running them on would duplicate work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.redis import SentinelChannel, SentinelTransport

from worker.connections import broker_transport_options, broker_url, is_amqp_url
from worker.keys import SHARED_QUEUE
from worker.routing import all_queues
from worker.settings import Settings, get_settings

# -- the broker queues ---------------------------------------------------------------------------------
# A small fixed set (:mod:`worker.routing`): ``grades``, shared by every destination, and ``grades.<group>``
# per dedicated group; not one per destination (a worker's take cost grew with the queues it polls).
# Declared the same way by every side (worker, producer, ops app, requeue). On Redis a queue is a plain
# list (KEDA's Redis-list scaler reads its length). On RabbitMQ every queue is a
# **quorum queue** (``x-queue-type: quorum``): replicated with Raft across the cluster's nodes, so a queue
# survives the loss of a node (RabbitMQ 4 removed classic mirrored queues). RabbitMQ refuses to re-declare
# a queue with other arguments (PRECONDITION_FAILED), which is why producers must declare exactly what the
# worker declares: both take their queues from :func:`broker_queues`.

QUORUM_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}
#: on RabbitMQ every queue is bound to this one direct exchange by its own name, so the
#: binding does not depend on which destination sorts first (Celery's default exchange would)
AMQP_EXCHANGE = "gradesync"


def queue_arguments(broker: str) -> dict[str, Any] | None:
    """The ``x-*`` arguments a queue is declared with on this broker."""
    return dict(QUORUM_ARGUMENTS) if is_amqp_url(broker) else None


def broker_queue(name: str, broker: str) -> Queue:
    """The kombu declaration of the broker queue ``name`` (:func:`worker.routing.queue_of`)."""
    if not is_amqp_url(broker):
        return Queue(name, routing_key=name)  # type: ignore[no-untyped-call]
    exchange = Exchange(AMQP_EXCHANGE, type="direct", durable=True)  # type: ignore[no-untyped-call]
    return Queue(name, exchange, routing_key=name, durable=True,  # type: ignore[no-untyped-call]
                 queue_arguments=queue_arguments(broker))


def broker_queues(names: Iterable[str], broker: str) -> list[Queue]:
    return [broker_queue(name, broker) for name in names]


# -- the sentinel transport --------------------------------------------------------------------------------
# kombu's Redis Sentinel transport with one guard, used for every ``sentinel://`` broker URL. Found by
# ``bench/drill_sentinel_failover.py``: when the master dies, the worker's consumer closes its broker
# channel, and kombu's sentinel channel, having dropped its connection pool, rebuilds one to put the
# unacknowledged messages back — from a connection whose client is already gone. That raised
# ``AttributeError: 'NoneType' object has no attribute 'hostname'``, which Celery treats as unrecoverable:
# the worker process stopped (in one drill run of two). Raising a connection error instead lets kombu
# ignore it as it ignores the other errors of a closing connection; the consumer reconnects through the
# sentinels, and the unacknowledged messages are put back by the restore sweep after the visibility
# timeout, as after a ``kill -9``.


class GuardedSentinelChannel(SentinelChannel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
        return params


class GuardedSentinelTransport(SentinelTransport):
    Channel = GuardedSentinelChannel


def install_sentinel_transport() -> None:
    """Make ``sentinel://`` URLs use :class:`GuardedSentinelTransport` (idempotent; done on import)."""
    TRANSPORT_ALIASES["sentinel"] = f"{__name__}:GuardedSentinelTransport"


install_sentinel_transport()

# -- the apps ------------------------------------------------------------------------------------------------
def build_config(settings: Settings) -> dict[str, Any]:
    from worker.registry.service import routing_destinations  # the registry's groups, no model built

    queues = broker_queues(all_queues(routing_destinations(settings)), settings.broker)
    time_limit = settings.visibility_timeout - 15
    return {
        "broker_url": broker_url(settings.broker),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # sweep for a dead worker's unacknowledged messages every 5 s (kombu's default sweeps only
            # every 10 s x 10 = 100 s), so they run again within visibility_timeout + 5 s
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            "socket_keepalive": True,
            "health_check_interval": 30,
            **broker_transport_options(settings.broker),  # Sentinel master name / RabbitMQ confirms
        },
        # RabbitMQ: quorum queues (broker_queues), also for any queue Celery creates on demand
        **({"task_default_queue_type": "quorum"} if is_amqp_url(settings.broker) else {}),
        "task_queues": queues,
        "task_default_queue": SHARED_QUEUE,
        "task_create_missing_queues": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_ignore_result": True,
        "task_time_limit": time_limit,
        "task_soft_time_limit": time_limit - 5,
        "task_track_started": False,
        "task_send_sent_event": settings.task_events,
        "worker_send_task_events": settings.task_events,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "worker_max_memory_per_child": 512_000,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_lost_wait": 20.0,
        "result_backend": None,
        "timezone": "UTC",
        "enable_utc": True,
    }


app = Celery("gradesync", set_as_current=True, include=["worker.tasks"])
app.add_defaults(lambda: build_config(get_settings()))


def make_client_app(settings: Settings) -> Celery:
    """A Celery app that only sends delivery messages (the worker's app consumes them)."""
    from worker.registry.service import routing_destinations

    client = Celery("gradesync-producer", broker=broker_url(settings.broker), set_as_current=False)
    client.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": settings.visibility_timeout,
                                  **broker_transport_options(settings.broker)},
        broker_connection_retry_on_startup=True,
        # on RabbitMQ declared exactly as the worker declares them (quorum queues); a Redis list needs no
        # declaration
        task_queues=(broker_queues(all_queues(routing_destinations(settings)), settings.broker)
                     if is_amqp_url(settings.broker) else None),
        task_create_missing_queues=True,
    )
    return client
