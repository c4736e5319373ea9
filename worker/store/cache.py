"""A small JSON cache in Redis, shared by every worker (e.g. an adapter's gradebook item lookups)."""

from __future__ import annotations

import json
from typing import Any

import redis


class RedisCache:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self._prefix = prefix

    def _key(self, namespace: str, key: str) -> str:
        return f"{self._prefix}:cache:{namespace}:{key}"

    def get_json(self, namespace: str, key: str) -> Any | None:
        raw = self._r.get(self._key(namespace, key))
        return None if raw is None else json.loads(raw)

    def set_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> None:
        self._r.set(self._key(namespace, key), json.dumps(value), ex=max(1, ttl_seconds))

    def delete(self, namespace: str, key: str) -> None:
        self._r.delete(self._key(namespace, key))

    def add_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> bool:
        """``SET NX``: True when this call set the key (a lock or a first-writer-wins value)."""
        return bool(self._r.set(self._key(namespace, key), json.dumps(value), ex=max(1, ttl_seconds), nx=True))
