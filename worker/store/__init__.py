"""Everything gradesync keeps in Redis: the ledger, scheduled retries, dead letters, counters, caches.
Key names come from :mod:`worker.keys` only."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from worker.connections import redis_client
from worker.crypto import WireCipher
from worker.keys import Keys
from worker.settings import Settings
from worker.store.cache import RedisCache
from worker.store.ledger import EventRecord, Ledger
from worker.store.schedule import RetrySchedule
from worker.store.stats import Stats


@dataclass
class Store:
    redis: Redis
    keys: Keys
    ledger: Ledger
    schedule: RetrySchedule
    stats: Stats
    cache: RedisCache

    @classmethod
    def connect(cls, settings: Settings, client: Redis | None = None) -> Store:
        r = client or redis_client(
            settings.redis_url, socket_timeout=15, socket_connect_timeout=5, health_check_interval=30
        )
        keys = Keys(settings.key_prefix)
        return cls(
            redis=r,
            keys=keys,
            ledger=Ledger(r, keys, settings.ledger_ttl_seconds, cipher=WireCipher.optional(settings),
                          dead_letter_ttl=settings.dead_letter_ttl_seconds),
            schedule=RetrySchedule(r, keys),
            stats=Stats(r, keys),
            cache=RedisCache(r, keys.cache_prefix()),
        )


__all__ = ["EventRecord", "Store"]
