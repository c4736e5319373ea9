"""Redis as gradesync's durable store: the start-up checks that it will not silently lose state, and the
worker's client that rides out a Redis restart.

* :func:`redis_risks`: a Redis that evicts keys (``maxmemory-policy`` other than ``noeviction``) drops
  ledger records, retries and dead letters under memory pressure; one with neither AOF nor RDB snapshots
  loses everything on a restart. ``gradesync config check`` prints these, the worker logs them at start.
  ``CONFIG GET`` is tried first; managed services that disable it are read through ``INFO``.
* :func:`worker_client`: the worker's Redis client retries a command through a short outage (a Redis
  restart, a fail-over) for up to :data:`OUTAGE_SECONDS`, with backoff. The point is the write *after* a
  vendor call: the vendor has the grade, and if its outcome were dropped the ledger would still say
  ``in_progress`` and a re-delivery would send it again (Thought Industries is not idempotent).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker.connections import redis_client
from worker.settings import Settings

#: about how long a worker's Redis command keeps retrying before it gives up (backoff capped at 2 s)
OUTAGE_SECONDS = 90
_RETRIES = 50


def worker_client(settings: Settings) -> redis.Redis:
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), _RETRIES)
    return redis_client(
        settings.redis_url, socket_timeout=15, socket_connect_timeout=5, health_check_interval=30,
        retry=retry, retry_on_error=[redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError],
    )


def _config(client: redis.Redis, name: str) -> str | None:
    try:
        raw: Any = client.config_get(name)
    except redis.ResponseError:  # CONFIG disabled or renamed (managed Redis)
        return None
    value = raw.get(name)
    return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else None)


def _info(client: redis.Redis, section: str) -> dict[str, Any]:
    try:
        return dict(client.info(section))
    except redis.ResponseError:
        return {}


def redis_risks(client: redis.Redis) -> list[str]:
    """What in this Redis's configuration can lose gradesync's state (empty: nothing found)."""
    risks: list[str] = []
    policy = _config(client, "maxmemory-policy") or str(_info(client, "memory").get("maxmemory_policy", "") or "")
    if policy and policy != "noeviction":
        risks.append(f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis will evict gradesync's "
                     "ledger records, scheduled retries and dead letters; set maxmemory-policy noeviction")
    aof = _config(client, "appendonly")
    save = _config(client, "save")
    if aof is None:
        persistence = _info(client, "persistence")
        aof = "yes" if persistence.get("aof_enabled") in (1, "1") else "no" if persistence else None
    if aof == "no" and (save is None or not save.strip()):
        risks.append("Redis has no persistence (appendonly no, no RDB save points): a Redis restart loses every "
                     "queued event, scheduled retry and dead letter; enable appendonly yes (appendfsync everysec)")
    return risks
