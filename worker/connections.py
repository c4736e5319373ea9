"""Connecting to Redis and to the broker from one URL each: plain, TLS, Sentinel or AMQP.

Every Redis client of gradesync (the state store, the publisher, the ops app) and the Celery broker
settings are built here, so a URL means the same thing everywhere:

* ``redis://[:password@]host:port/db`` and ``rediss://…`` (TLS, e.g. a managed Redis; add
  ``?ssl_cert_reqs=required`` and ``ssl_ca_certs=/path`` as redis-py and kombu document).
* ``redis+sentinel://[[user]:password@]host:port[,host:port…]/<master name>[/<db>]`` (or ``sentinel://``):
  Redis Sentinel. Clients ask the listed sentinels where the current master of ``<master name>`` is and
  follow it after a failover. The password is the master's; ``?sentinel_password=…`` sets the sentinels'
  own password when they have one. The state store uses redis-py's :class:`redis.sentinel.Sentinel`, the
  broker kombu's ``sentinel://`` transport (``master_name`` transport option), both built from this URL.
* ``amqp://…`` (broker only): RabbitMQ, with quorum queues and publisher confirms
  (:func:`worker.celery_app.broker_queues`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel://", "sentinel://")
_SENTINEL_DEFAULT_PORT = 26379


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEMES)


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        if not is_sentinel_url(url):
            raise ValueError("not a redis+sentinel:// URL")
        rest = url.split("://", 1)[1]
        # urlsplit cannot parse a comma-separated host list: split the authority by hand
        authority, _, path_query = rest.partition("/")
        userinfo, _, hosts = authority.rpartition("@")
        username = password = None
        if userinfo:
            user, _, pw = userinfo.partition(":")
            username, password = unquote(user) or None, unquote(pw) or None
        sentinels: list[tuple[str, int]] = []
        for item in hosts.split(","):
            parts = urlsplit(f"//{item.strip()}")
            if not parts.hostname:
                raise ValueError(f"sentinel URL: bad host {item!r}")
            sentinels.append((parts.hostname, parts.port or _SENTINEL_DEFAULT_PORT))
        path, _, query = path_query.partition("?")
        segments = [s for s in path.split("/") if s]
        if not segments:
            raise ValueError("sentinel URL: the master name is missing (redis+sentinel://host:26379/<master>/0)")
        if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
            raise ValueError("sentinel URL: the path must be /<master name>[/<db number>]")
        options = {k: v[-1] for k, v in parse_qs(query).items()}
        return cls(
            sentinels=tuple(sentinels),
            master=unquote(segments[0]),
            db=int(segments[1]) if len(segments) == 2 else 0,
            username=username,
            password=password,
            sentinel_password=options.pop("sentinel_password", None),
            options=options,
        )


def redis_client(url: str, **kwargs: Any) -> redis.Redis:
    """A Redis client for ``url`` (plain, TLS or Sentinel-managed); ``kwargs`` are redis-py's (timeouts)."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **kwargs)
    s = SentinelURL.parse(url)
    sentinel_kwargs: dict[str, Any] = {
        k: v for k, v in kwargs.items() if k in ("socket_timeout", "socket_connect_timeout")
    }
    if s.sentinel_password:
        sentinel_kwargs["password"] = s.sentinel_password
    sentinel: Any = Sentinel  # typed from redis-py 8.2 on, untyped before: Any reads the same on both
    manager = sentinel(list(s.sentinels), sentinel_kwargs=sentinel_kwargs)
    client: redis.Redis = manager.master_for(
        s.master, db=s.db, username=s.username, password=s.password, **kwargs)
    return client


def broker_url(url: str) -> str:
    """The URL kombu understands for ``url`` (a Sentinel URL becomes kombu's ``sentinel://a;sentinel://b/db``)."""
    if not is_sentinel_url(url):
        return url
    # kombu resolves ``sentinel://`` to the guarded transport worker.celery_app registers on import
    s = SentinelURL.parse(url)
    cred = ""
    if s.password or s.username:
        cred = f"{s.username or ''}:{s.password or ''}@"
    return ";".join(f"sentinel://{cred}{host}:{port}/{s.db}" for host, port in s.sentinels)


def broker_transport_options(url: str) -> dict[str, Any]:
    """Transport options that ``url`` itself implies (Sentinel's master name, RabbitMQ's confirms)."""
    if is_sentinel_url(url):
        s = SentinelURL.parse(url)
        options: dict[str, Any] = {"master_name": s.master}
        if s.sentinel_password:
            options["sentinel_kwargs"] = {"password": s.sentinel_password}
        return options
    if is_amqp_url(url):
        # publisher confirms: a publish returns only once RabbitMQ has taken the message (a quorum queue
        # confirms after a majority of its replicas wrote it), so "published" means "will be delivered"
        return {"confirm_publish": True}
    return {}


def is_amqp_url(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://", "pyamqp://"))
