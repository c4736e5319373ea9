"""The guards around kombu's Redis QoS.restore_unacked and its client reuse (no I/O: the channel is a stand-in)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis
from kombu.transport import redis as kombu_redis

from worker.kombu_redis import harden_kombu_redis, reuse_kombu_clients


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


# -- acknowledgements in batches ------------------------------------------------------------------------
class _Pipe:
    def __init__(self, calls: list[tuple[Any, ...]], fail: bool = False) -> None:
        self.calls, self.fail = calls, fail

    def zrem(self, key: str, *tags: str) -> _Pipe:
        self.calls.append(("zrem", key, *tags))
        return self

    def hdel(self, key: str, *tags: str) -> _Pipe:
        self.calls.append(("hdel", key, *tags))
        return self

    def execute(self) -> list[int]:
        if self.fail:
            raise redis.ConnectionError("Redis went away")
        self.calls.append(("execute",))
        return [1, 1]


def _qos(calls: list[tuple[Any, ...]], booked: list[str], *, fail: bool = False) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def pipe_or_acquire(pipe: Any = None, client: Any = None) -> Any:
        yield _Pipe(calls, fail)

    qos: Any = kombu_redis.QoS.__new__(kombu_redis.QoS)  # no channel: only what ack and restore touch
    qos.pipe_or_acquire = pipe_or_acquire
    qos.unacked_index_key, qos.unacked_key = "unacked_index", "unacked"
    qos._quick_ack, qos._delivered = booked.append, {}
    qos._remove_from_indices = lambda tag: _Pipe(calls, fail).zrem("unacked_index", tag).hdel("unacked", tag)
    return qos


@pytest.fixture
def loop_thread_hub() -> Any:
    import threading

    from kombu.asynchronous import get_event_loop, set_event_loop

    hub = SimpleNamespace(on_tick=set(), _loop_thread=threading.get_ident())
    before = get_event_loop()
    set_event_loop(hub)  # type: ignore[arg-type]
    yield hub
    set_event_loop(before)


def test_acks_on_the_event_loop_are_sent_once_per_pass(loop_thread_hub: Any) -> None:
    from worker.kombu_redis import batch_kombu_acks

    harden_kombu_redis()
    batch_kombu_acks()
    batch_kombu_acks()  # idempotent
    calls: list[tuple[Any, ...]] = []
    booked: list[str] = []
    qos = _qos(calls, booked)
    for tag in ("t1", "t2", "t3"):
        kombu_redis.QoS.ack(qos, tag)
    assert calls == [] and booked == []  # recorded, nothing sent yet
    assert len(loop_thread_hub.on_tick) == 1  # one flush per pass, however many acks
    for tick in list(loop_thread_hub.on_tick):
        tick()
    assert calls == [("zrem", "unacked_index", "t1", "t2", "t3"), ("hdel", "unacked", "t1", "t2", "t3"), ("execute",)]
    assert booked == ["t1", "t2", "t3"]  # kombu's bookkeeping after Redis said yes
    assert loop_thread_hub.on_tick == set()


def test_an_ack_from_another_thread_goes_straight_through() -> None:
    from kombu.asynchronous import get_event_loop

    from worker.kombu_redis import batch_kombu_acks

    assert get_event_loop() is None
    harden_kombu_redis()
    batch_kombu_acks()
    calls: list[tuple[Any, ...]] = []
    booked: list[str] = []
    kombu_redis.QoS.ack(_qos(calls, booked), "t9")
    assert calls == [("zrem", "unacked_index", "t9"), ("hdel", "unacked", "t9"), ("execute",)]
    assert booked == ["t9"]


def test_a_failed_flush_leaves_the_messages_for_the_visibility_sweep(loop_thread_hub: Any) -> None:
    from worker.kombu_redis import batch_kombu_acks, flush_acks

    harden_kombu_redis()
    batch_kombu_acks()
    calls: list[tuple[Any, ...]] = []
    booked: list[str] = []
    qos = _qos(calls, booked, fail=True)
    kombu_redis.QoS.ack(qos, "t1")
    assert flush_acks(qos) == 0
    assert booked == []  # still delivered-but-unacked: restored, then skipped by its dispatch token
    assert loop_thread_hub.on_tick == set()


def test_closing_the_channel_flushes_the_recorded_acks_first(loop_thread_hub: Any) -> None:
    from worker.kombu_redis import batch_kombu_acks

    harden_kombu_redis()
    batch_kombu_acks()
    calls: list[tuple[Any, ...]] = []
    booked: list[str] = []
    qos = _qos(calls, booked)
    qos.channel = SimpleNamespace(conn_or_acquire=_gone)  # the restore itself then meets a closed channel
    kombu_redis.QoS.ack(qos, "t1")
    kombu_redis.QoS.restore_unacked(qos)
    assert ("execute",) in calls and booked == ["t1"]
