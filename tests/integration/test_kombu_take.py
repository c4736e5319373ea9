"""Messages taken in batches (:func:`worker.kombu_redis.batch_kombu_take`) against a real Redis with kombu's
own Connection, Producer and Consumer: the prefetch window is kept, every taken message is in ``unacked``
in kombu's own format (so kombu's visibility sweep and its restore put it back), nothing is lost or
delivered twice, and a payload that is not a kombu message is left where it was."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

from worker.kombu_redis import MAX_TAKE, batch_kombu_acks, batch_kombu_take, harden_kombu_redis, take

QUEUE = "grades.taketest"


#: the visibility timeout of the broker connection (kombu also sweeps while it waits for messages)
VISIBILITY = 3600


@pytest.fixture
def broker(redis_client: redis.Redis, redis_url: str, request: pytest.FixtureRequest) -> Iterator[Connection]:
    harden_kombu_redis()
    batch_kombu_acks()
    batch_kombu_take()
    batch_kombu_take()  # idempotent
    visibility = getattr(request, "param", VISIBILITY)
    with Connection(redis_url, transport_options={"visibility_timeout": visibility}) as conn:
        yield conn


def _publish(conn: Connection, n: int, start: int = 0) -> None:
    with conn.channel() as channel:
        producer = Producer(channel)
        for i in range(start, start + n):
            producer.publish({"n": i}, routing_key=QUEUE, declare=[Queue(QUEUE, routing_key=QUEUE)])


def _drain(conn: Connection, received: list[Any], until: int, *, ack: bool = False, timeout: float = 30.0) -> None:
    """Wait until ``until`` messages were received (acknowledging each as it comes when ``ack``)."""
    deadline = time.monotonic() + timeout
    while len(received) < until:
        assert time.monotonic() < deadline, f"only {len(received)} of {until} received"
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=1)
        if ack:
            for message in received:
                if not message.acknowledged:
                    message.ack()


def _consume(conn: Connection, received: list[Any], prefetch: int, queues: list[str] | None = None) -> Any:
    """A channel consuming ``queues`` (default: QUEUE) into ``received``, with a prefetch window."""
    channel = conn.channel()
    consumer = Consumer(channel, [Queue(q, routing_key=q) for q in queues or [QUEUE]],
                        callbacks=[lambda body, m: received.append(m)])
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    return channel


def test_a_pass_takes_up_to_the_prefetch_window_and_records_each_in_unacked(
        broker: Connection, redis_client: redis.Redis) -> None:
    _publish(broker, 30)
    received: list[Any] = []
    channel = _consume(broker, received, 10)
    _drain(broker, received, 1)
    # one BRPOP'd message, then the take filled the rest of the window in the same pass (or the next)
    _drain(broker, received, 10)
    assert len(received) == 10, "never more than the prefetch window"
    assert redis_client.llen(QUEUE) == 20
    unacked = {k.decode(): json.loads(v) for k, v in redis_client.hgetall("unacked").items()}
    assert set(unacked) == {m.delivery_tag for m in received}
    assert redis_client.zcard("unacked_index") == 10
    for message in received:  # kombu's own format: [payload, exchange, routing_key]
        payload, exchange, routing_key = unacked[message.delivery_tag]
        assert payload["properties"]["delivery_tag"] == message.delivery_tag
        assert (exchange, routing_key) == (message.delivery_info["exchange"], message.delivery_info["routing_key"])
    for message in received:
        message.ack()
    assert redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0
    _drain(broker, received, 30, ack=True)
    assert sorted(m.payload["n"] for m in received) == list(range(30)), "every message once, none twice"
    assert redis_client.llen(QUEUE) == 0 and redis_client.hlen("unacked") == 0
    channel.close()


@pytest.mark.parametrize("broker", [3], indirect=True)
def test_taken_but_unacknowledged_messages_come_back_by_kombus_visibility_sweep(
        broker: Connection, redis_client: redis.Redis) -> None:
    _publish(broker, 8)
    received: list[Any] = []
    channel = _consume(broker, received, 8)
    _drain(broker, received, 8)
    assert redis_client.hlen("unacked") == 8 and redis_client.llen(QUEUE) == 0
    # the worker "dies": nothing acknowledged. kombu's sweep restores what outlived the visibility timeout
    # (3 s here), exactly as it restores what kombu's own append recorded.
    time.sleep(3.5)
    channel.qos.restore_visible(num=100, interval=1)
    assert redis_client.llen(QUEUE) == 8, "every taken message is back in its queue"
    assert redis_client.hlen("unacked") == 0
    payloads = sorted(json.loads(item)["properties"]["delivery_tag"] for item in redis_client.lrange(QUEUE, 0, -1))
    assert payloads == sorted(m.delivery_tag for m in received)
    channel.close()


def test_closing_the_channel_puts_taken_messages_back(broker: Connection, redis_client: redis.Redis) -> None:
    _publish(broker, 6)
    received: list[Any] = []
    channel = _consume(broker, received, 6)
    _drain(broker, received, 6)
    received[0].ack()
    channel.close()  # kombu restores what was delivered and not acknowledged (restore_at_shutdown)
    assert redis_client.llen(QUEUE) == 5 and redis_client.hlen("unacked") == 0


def test_a_payload_that_is_not_a_kombu_message_is_left_where_it_was(
        broker: Connection, redis_client: redis.Redis) -> None:
    channel: Any = broker.channel()
    Consumer(channel, [Queue(QUEUE, routing_key=QUEUE)], callbacks=[lambda body, m: None]).consume()
    channel.qos.prefetch_count = 5
    redis_client.lpush(QUEUE, b"not json at all", json.dumps({"properties": {}}))
    assert take(channel) == 0
    assert redis_client.lrange(QUEUE, 0, -1) == [b'{"properties": {}}', b"not json at all"]
    assert redis_client.hlen("unacked") == 0
    channel.close()


def test_no_window_no_take(broker: Connection, redis_client: redis.Redis) -> None:
    _publish(broker, 3)
    channel: Any = broker.channel()
    Consumer(channel, [Queue(QUEUE, routing_key=QUEUE)], callbacks=[lambda body, m: None]).consume()
    channel.qos.prefetch_count = 0  # unlimited: kombu's own BRPOP loop, one at a time, as before
    assert take(channel) == 0 and redis_client.llen(QUEUE) == 3
    assert MAX_TAKE >= 64  # a whole default window (64 threads) fits one pass
    channel.close()


def test_queues_are_taken_round_robin(broker: Connection, redis_client: redis.Redis) -> None:
    other = "grades.taketest2"
    with broker.channel() as channel:
        producer = Producer(channel)
        for i in range(10):
            producer.publish({"n": i}, routing_key=QUEUE, declare=[Queue(QUEUE, routing_key=QUEUE)])
            producer.publish({"n": i}, routing_key=other, declare=[Queue(other, routing_key=other)])
    received: list[Any] = []
    channel = _consume(broker, received, 8, [QUEUE, other])
    _drain(broker, received, 8)
    by_queue = [m.delivery_info["routing_key"] for m in received]
    assert by_queue.count(QUEUE) == 4 and by_queue.count(other) == 4, "one busy queue does not starve the other"
    channel.close()


def test_prefixed_keys_keep_kombus_own_path(redis_client: redis.Redis, redis_url: str) -> None:
    harden_kombu_redis()
    batch_kombu_acks()
    batch_kombu_take()
    with Connection(redis_url, transport_options={"global_keyprefix": "pfx:"}) as conn:
        _publish(conn, 5)
        received: list[Any] = []
        channel = _consume(conn, received, 5)
        assert take(channel) == 0  # a script's keys would not be prefixed: BRPOP and kombu's append instead
        _drain(conn, received, 5, ack=True)
        assert sorted(m.payload["n"] for m in received) == list(range(5))
        assert redis_client.llen(f"pfx:{QUEUE}") == 0 and redis_client.hlen("pfx:unacked") == 0
        channel.close()
