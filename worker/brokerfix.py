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


def reuse_kombu_clients() -> None:
    """One Redis client object per channel and pool for kombu's acknowledgements (idempotent).

    Why: kombu builds a new ``redis.Redis`` for every ``QoS.append`` (a message taken) and ``QoS.ack``;
    with redis-py 8 that constructor costs as much as the commands themselves, about 5 % of a worker's
    CPU. The client holds no connection of its own (it borrows one from the channel's pool per command), so
    sharing it between threads is what redis-py expects; a new pool (a reconnect) gets a new client.
    """
    from kombu.transport import redis as kombu_redis

    channel: Any = kombu_redis.Channel
    create = channel._create_client
    if getattr(create, "__gradesync_reuse__", False):
        return

    @functools.wraps(create)
    def create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return create(self, asynchronous=True)
        pool = self.pool
        client = self.__dict__.get("_gradesync_client")
        if client is None or client.connection_pool is not pool:
            client = create(self)
            self.__dict__["_gradesync_client"] = client
        return client

    create_client.__gradesync_reuse__ = True  # type: ignore[attr-defined]
    channel._create_client = create_client
