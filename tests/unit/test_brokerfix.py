"""The guards around kombu's Redis QoS.restore_unacked and its client reuse (no I/O: the channel is a stand-in)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu.transport import redis as kombu_redis

from worker.celery_app import harden_kombu_redis, reuse_kombu_clients


def _gone(*_: Any, **__: Any) -> Any:
    conninfo: Any = None
    return conninfo.hostname  # what kombu's _connparams does once the connection was released


def test_a_restore_without_a_connection_no_longer_stops_the_worker() -> None:
    qos = SimpleNamespace(channel=SimpleNamespace(conn_or_acquire=_gone), _delivered={"tag-1": object()},
                          _remove_from_indices=_gone)
    harden_kombu_redis()
    harden_kombu_redis()  # idempotent
    assert kombu_redis.QoS.restore_unacked(qos) is None  # type: ignore[arg-type]
    assert "tag-1" in qos._delivered  # left for the visibility-timeout sweep
    assert kombu_redis.QoS.ack(qos, "tag-1") is None  # type: ignore[arg-type]  # late ack on the dead channel


def test_other_errors_still_propagate() -> None:
    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    qos = SimpleNamespace(channel=SimpleNamespace(conn_or_acquire=broken), _delivered={})
    harden_kombu_redis()
    with pytest.raises(RuntimeError, match="boom"):
        kombu_redis.QoS.restore_unacked(qos)  # type: ignore[arg-type]


def test_acknowledgements_reuse_one_client_per_channel_and_pool() -> None:
    reuse_kombu_clients()
    reuse_kombu_clients()  # idempotent
    channel = SimpleNamespace(pool=redis.ConnectionPool(), Client=redis.Redis)
    create: Any = kombu_redis.Channel._create_client
    first = create(channel)
    assert create(channel) is first and first.connection_pool is channel.pool
    channel.pool = redis.ConnectionPool()  # a reconnect: a new pool, so a new client
    second = create(channel)
    assert second is not first and second.connection_pool is channel.pool
