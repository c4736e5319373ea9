"""Broker and Redis URLs: Sentinel parsing, kombu's form of it, RabbitMQ quorum queues and confirms."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.celery_app import broker_queue, build_config
from worker.connections import SentinelURL, broker_transport_options, broker_url, is_sentinel_url
from worker.settings import Settings, is_redis_url


def test_sentinel_url_parsing() -> None:
    s = SentinelURL.parse("redis+sentinel://:pw@s1:26379,s2:26380,s3/mymaster/2?sentinel_password=sp")
    assert s.sentinels == (("s1", 26379), ("s2", 26380), ("s3", 26379))
    assert (s.master, s.db, s.password, s.sentinel_password) == ("mymaster", 2, "pw", "sp")
    assert broker_url("sentinel://:pw@s1:26379,s2:26380/mymaster/2") == \
        "sentinel://:pw@s1:26379/2;sentinel://:pw@s2:26380/2"
    assert broker_transport_options("redis+sentinel://s1/m?sentinel_password=sp") == {
        "master_name": "m", "sentinel_kwargs": {"password": "sp"}}
    assert broker_transport_options("amqp://guest@h//") == {"confirm_publish": True}
    for bad in ("redis+sentinel://s1:26379", "redis+sentinel://s1/m/x", "redis+sentinel://s1/m/0/extra"):
        with pytest.raises(ValueError):
            SentinelURL.parse(bad)


def test_sentinel_urls_count_as_redis() -> None:
    assert is_redis_url("redis+sentinel://s1/m") and is_redis_url("sentinel://s1/m")
    assert is_sentinel_url("sentinel://s1/m") and not is_sentinel_url("rediss://h:6380/0")
    assert broker_url("rediss://:pw@h:6380/0") == "rediss://:pw@h:6380/0"  # TLS URLs pass through


def test_queues_are_quorum_on_rabbitmq_only() -> None:
    assert broker_queue("grades", "amqp://guest@h//").queue_arguments == {"x-queue-type": "quorum"}
    assert broker_queue("grades", "redis://h/0").queue_arguments is None
    assert broker_queue("grades", "amqp://guest@h//").name == "grades"


def test_worker_config_on_rabbitmq_and_on_sentinel(tmp_path: Path) -> None:
    dests = tmp_path / "d.toml"
    dests.write_text('[destinations.a]\nvendor = "ltiaas"\nbase_url = "https://x"\napi_key_env = "K"\n')
    amqp = build_config(Settings(broker_url="amqp://guest:guest@h//", destinations_file=dests))
    assert amqp["broker_transport_options"]["confirm_publish"] is True
    assert amqp["task_default_queue_type"] == "quorum"
    assert [q.queue_arguments for q in amqp["task_queues"]] == [{"x-queue-type": "quorum"}]
    sentinel = build_config(Settings(redis_url="redis+sentinel://:pw@s1:26379,s2/gs/1", destinations_file=dests))
    assert sentinel["broker_url"] == "sentinel://:pw@s1:26379/1;sentinel://:pw@s2:26379/1"
    assert sentinel["broker_transport_options"]["master_name"] == "gs"
    assert "task_default_queue_type" not in sentinel


def test_managed_redis_tls_url_with_password() -> None:
    import redis

    from worker.connections import redis_client

    url = "rediss://default:s3cret@redis.example.com:6380/0?ssl_cert_reqs=required"
    client = redis_client(url, socket_timeout=5)  # no connection is made until the first command
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is redis.SSLConnection
    assert (kwargs["host"], kwargs["port"], kwargs["password"], kwargs["ssl_cert_reqs"]) == (
        "redis.example.com", 6380, "s3cret", "required")
    assert broker_url(url) == url and broker_transport_options(url) == {}  # kombu reads the same URL
    client.close()


def test_sentinel_urls_use_the_guarded_transport() -> None:
    import redis
    from kombu.transport import resolve_transport

    from worker import celery_app  # installs it on import

    broker_url("redis+sentinel://s1:26379/m/0")
    assert resolve_transport("sentinel") is celery_app.GuardedSentinelTransport
    transport = celery_app.GuardedSentinelTransport
    assert transport.Channel is celery_app.GuardedSentinelChannel

    class Closed:  # a channel whose kombu connection was already closed (client detached)
        class connection:
            client = None

    with pytest.raises(redis.ConnectionError):
        celery_app.GuardedSentinelChannel._connparams(Closed())  # type: ignore[arg-type]
    # ... an error kombu ignores while closing a connection, instead of an AttributeError that stops Celery
    assert redis.ConnectionError in transport.connection_errors
