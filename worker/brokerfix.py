"""One guard around kombu's Redis transport, so that a worker survives a Redis crash.

When the broker connection drops, Celery closes the old connection and opens a new one. Two things then
touch the *old* channel, whose connection kombu has already released: closing it puts its unacknowledged
messages back (``QoS.restore_unacked``), and the acknowledgements of tasks that finish after the drop
(late ack: ``QoS.ack`` / ``QoS.reject``) still run on it. Either can raise
``AttributeError: 'NoneType' object has no attribute 'hostname'`` / ``'client'`` (from kombu's
``_connparams``; the kombu#582 / #970 family). That is not one of the connection errors Celery ignores, so
the worker stopped with "Unrecoverable error" instead of reconnecting — seen in the Redis-crash drill and
its integration test, roughly one run in three.

:func:`harden_kombu_redis` wraps those three ``QoS`` methods so that this one failure is logged and
skipped. Nothing is lost by skipping it: the messages are still in Redis's ``unacked`` hash, and kombu's
visibility-timeout sweep (``unacked_restore_interval``, every 5 s here) puts them back after
``GRADESYNC_VISIBILITY_TIMEOUT``; the dispatch token makes a copy whose attempt was recorded a no-op.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("gradesync.broker")

GUARDED = ("restore_unacked", "ack", "reject")


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except AttributeError as exc:  # the channel's connection is already gone (Redis went away)
            log.warning("broker_channel_gone", operation=name, error=str(exc),
                        message="left in Redis's unacked set; re-delivered after the visibility timeout")
            return None

    guarded.__gradesync_guard__ = True  # type: ignore[attr-defined]
    return guarded


def harden_kombu_redis() -> None:
    """Install the guard (idempotent)."""
    from kombu.transport import redis as kombu_redis

    qos: Any = kombu_redis.QoS
    for name in GUARDED:
        method = getattr(qos, name)
        if not getattr(method, "__gradesync_guard__", False):
            setattr(qos, name, _guard(name, method))
