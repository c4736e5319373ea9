"""The Celery dispatcher on a real Redis: the batch it LPUSHes itself is the message ``send_task`` would
push, the depths count kombu's priority lists, and a lost broker is a BrokerUnavailable."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from worker.dispatch import BrokerUnavailable, Delivery, Dispatcher
from worker.dispatch.celery import CeleryDispatcher, priority_lists
from worker.settings import Settings

pytestmark = pytest.mark.integration

TOML = '[destinations.lt]\nvendor = "ltiaas"\nbase_url = "http://127.0.0.1:9"\napi_key_env = "K"\n'
#: fields that are fresh per message (task id, delivery tag)
FRESH = {"id", "root_id", "correlation_id", "delivery_tag"}


@pytest.fixture
def dispatcher(redis_client: redis.Redis, redis_url: str, tmp_path: Path) -> Iterator[CeleryDispatcher]:
    (tmp_path / "d.toml").write_text(TOML)
    d = CeleryDispatcher(Settings(redis_url=redis_url, destinations_file=tmp_path / "d.toml"))
    yield d
    d.close()


def _comparable(raw: bytes) -> dict[str, Any]:
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    for part in ("headers", "properties"):
        message[part] = {k: v for k, v in message[part].items() if k not in FRESH}
    return dict(message)


def test_the_pipelined_batch_is_what_send_task_pushes(dispatcher: CeleryDispatcher, redis_client: redis.Redis) -> None:
    assert isinstance(dispatcher, Dispatcher) and dispatcher.kind == "redis"
    one = Delivery("event-1", "lt", "token-1")
    dispatcher._publish([one])  # through Celery and kombu
    dispatcher.send_many([one, Delivery("event-2", "lt", "token-2")])  # the pipelined LPUSHes
    # one shared queue: each destination reads its depth (what its messages wait behind)
    assert dispatcher.depths(["lt", "other"]) == {"lt": 3, "other": 3}
    assert dispatcher.queue_depths(["grades", "grades.nobody"]) == {"grades": 3, "grades.nobody": 0}
    via_kombu, ours, second = (redis_client.rpop("grades") for _ in range(3))
    assert isinstance(via_kombu, bytes) and isinstance(ours, bytes) and isinstance(second, bytes)
    assert _comparable(ours) == _comparable(via_kombu)
    assert _comparable(second)["body"][1] == {"token": "token-2", "destination": "lt"}
    headers = json.loads(ours)["headers"]
    assert headers["root_id"] == headers["id"] == json.loads(ours)["properties"]["correlation_id"]


def test_depths_count_every_priority_list(dispatcher: CeleryDispatcher, redis_client: redis.Redis) -> None:
    for key in priority_lists("grades"):
        redis_client.lpush(key, "x")
    assert dispatcher.depths(["lt"]) == {"lt": 4}
    dispatcher.ping()


def test_an_unreachable_broker_is_broker_unavailable(tmp_path: Path) -> None:
    (tmp_path / "d.toml").write_text(TOML)
    dead = CeleryDispatcher(Settings(redis_url="redis://127.0.0.1:9/0", destinations_file=tmp_path / "d.toml"))
    with pytest.raises(BrokerUnavailable):
        dead.send_many([Delivery("e", "lt", "t")])
    assert isinstance(BrokerUnavailable("x"), ConnectionError)  # retried like any connection error
    dead.close()


def test_a_dedicated_group_has_its_own_queue(redis_client: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    from worker.celery_app import build_config

    (tmp_path / "g.toml").write_text(TOML + TOML.replace("[destinations.lt]", "[destinations.slow]")
                                     + 'group = "slow-lms"\n')
    settings = Settings(redis_url=redis_url, destinations_file=tmp_path / "g.toml")
    d = CeleryDispatcher(settings)
    try:
        d.send_many([Delivery("e1", "lt", "t1"), Delivery("e2", "slow", "t2"), Delivery("e3", "slow", "t3")])
        assert d.queue_depths(["grades", "grades.slow-lms"]) == {"grades": 1, "grades.slow-lms": 2}
        assert d.depths(["lt", "slow"]) == {"lt": 1, "slow": 2}
        payload = json.loads(redis_client.rpop("grades.slow-lms") or b"{}")
        assert payload["properties"]["delivery_info"]["routing_key"] == "grades.slow-lms"
        # a worker without --destinations / --group consumes both queues (the app declares them)
        assert [q.name for q in build_config(settings)["task_queues"]] == ["grades", "grades.slow-lms"]
    finally:
        d.close()
