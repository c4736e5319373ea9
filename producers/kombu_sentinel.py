"""kombu's Redis Sentinel transport with one guard, used for every ``sentinel://`` broker URL.

Found by ``bench/drill_sentinel_failover.py``: when the master dies, the worker's consumer closes its
broker channel, and kombu's sentinel channel, having dropped its connection pool, rebuilds one to put the
unacknowledged messages back — from a connection whose client is already gone. That raised
``AttributeError: 'NoneType' object has no attribute 'hostname'``, which Celery treats as unrecoverable:
the worker process stopped (in one drill run of two). Raising a connection error instead lets kombu
ignore it as it ignores the other errors of a closing connection; the consumer reconnects through the
sentinels, and the unacknowledged messages are put back by the restore sweep after the visibility
timeout, as after a ``kill -9``.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.redis import SentinelChannel, SentinelTransport


class GuardedSentinelChannel(SentinelChannel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[no-untyped-call]
        return params


class Transport(SentinelTransport):
    Channel = GuardedSentinelChannel


def install() -> None:
    """Make ``sentinel://`` URLs use :class:`Transport` (idempotent)."""
    TRANSPORT_ALIASES["sentinel"] = f"{__name__}:Transport"
