"""The Celery app: Redis (or AMQP) broker, one queue per destination, settings chosen for I/O-bound
delivery with at-least-once semantics. Configuration is computed lazily from :class:`Settings` on first
use, so importing :mod:`worker` has no side effects.

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
* the broker URL and transport options come from :mod:`producers.connections`: a ``redis+sentinel://``
  URL becomes kombu's sentinel transport (it follows the master after a failover); on RabbitMQ the
  queues are quorum queues (:mod:`producers.queues`: replicated, they survive a node) and publishing
  waits for the broker's confirm (``confirm_publish``).
* ``worker_cancel_long_running_tasks_on_connection_loss``: after a broker connection loss the broker will
  re-deliver those messages anyway, so running them on would duplicate work.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from producers.connections import broker_transport_options, broker_url, is_amqp_url
from producers.queues import broker_queues
from producers.settings import Settings, get_settings


def build_config(settings: Settings) -> dict[str, Any]:
    queues = broker_queues(settings.destinations(), settings.broker)
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
        # RabbitMQ: quorum queues (producers.queues), also for any queue Celery creates on demand
        **({"task_default_queue_type": "quorum"} if is_amqp_url(settings.broker) else {}),
        "task_queues": queues,
        "task_default_queue": queues[0].name if queues else "grades.default",
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
