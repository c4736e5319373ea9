"""The run-time destination registry in Redis (keys: :class:`worker.keys.Keys` ``registry*``).

- ``{p}:registry``: hash, destination name -> stored JSON (:mod:`worker.registry.codec`; direct secrets
  Fernet-encrypted);
- ``{p}:registry:names``: sorted set of the names (all scores 0), so a page in name order after a cursor
  is one ``ZRANGEBYLEX`` (O(log n + page)), whatever the number of destinations;
- ``{p}:registry:version``: bumped in the same transaction as every change; every worker and
  ``gradesync serve`` polls it (:mod:`worker.registry.live`) and rebuilds its map when it moved;
- ``{p}:registry:changes``: a capped stream of the changes (name, op, version), for whoever wants to
  follow them.

Every change is also an operator action in the audit stream (``{p}:audit``, written in the same
transaction), the shape of a pause / resume (:mod:`worker.ops.flow_status`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis

from worker.keys import Keys
from worker.registry.codec import Prepared
from worker.store.deadletters import AUDIT_MAXLEN

#: entries kept in the change stream (approximately)
CHANGES_MAXLEN = 10_000
#: names of one change named in its audit entry
AUDIT_NAMES = 50


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Registry:
    """Read and change the destinations registered at run time."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    # -- reading ---------------------------------------------------------------------------------
    def version(self) -> int:
        value = self.r.get(self.keys.registry_version)
        return int(_text(value)) if value is not None else 0

    def get(self, name: str) -> str | None:
        value = self.r.hget(self.keys.registry, name)
        return _text(value) if value is not None else None

    def get_many(self, names: list[str]) -> list[str | None]:
        return [_text(v) if v is not None else None for v in self.r.hmget(self.keys.registry, names)] if names else []

    def count(self) -> int:
        return int(self.r.zcard(self.keys.registry_names))

    def items(self, batch: int = 1000) -> Iterator[tuple[str, str]]:
        """Every (name, stored entry), without one huge answer (HSCAN)."""
        for name, value in self.r.hscan_iter(self.keys.registry, count=batch):
            yield _text(name), _text(value)

    def snapshot(self) -> tuple[int, dict[str, str]]:
        """The version and every entry, consistent: re-read when the version moved meanwhile."""
        for _ in range(5):
            before = self.version()
            entries = dict(self.items())
            if self.version() == before:
                return before, entries
        return self.version(), dict(self.items())

    def page(self, cursor: str | None, limit: int) -> tuple[list[str], str | None]:
        """Up to ``limit`` names after ``cursor`` (exclusive) in name order, and the next cursor (None: the
        end)."""
        start = f"({cursor}" if cursor else "-"
        names = [_text(n) for n in self.r.zrangebylex(self.keys.registry_names, start, "+", start=0, num=limit + 1)]
        if len(names) > limit:
            return names[:limit], names[limit - 1]
        return names, None

    # -- changing --------------------------------------------------------------------------------
    def upsert(self, entries: Sequence[Prepared], *, actor: str, source: str = "",
               audit: bool = True) -> dict[str, str]:
        """Store every entry in one transaction; name -> ``created`` | ``updated`` | ``unchanged``.

        Entries stored exactly so already are not written again (the version moves only on a change: N
        workers applying the same file at start-up make no one reload). ``audit=False``: the start-up
        application of the destinations file, which is configuration, not an operator's action."""
        if not entries:
            return {}
        names = [e.name for e in entries]
        old = [_text(v) if v is not None else None for v in self.r.hmget(self.keys.registry, names)]
        result = {e.name: ("created" if o is None else "unchanged" if o == e.stored else "updated")
                  for e, o in zip(entries, old, strict=True)}
        changed = [e for e in entries if result[e.name] != "unchanged"]
        if not changed:
            return result
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.registry, mapping={e.name: e.stored for e in changed})
            pipe.zadd(self.keys.registry_names, dict.fromkeys((e.name for e in changed), 0))
            pipe.incr(self.keys.registry_version)
            if audit:
                self._audit(pipe, "destination_apply", [e.name for e in changed], actor, reason=source)
            version = pipe.execute()[2]
        self._changed([e.name for e in changed], "upsert", int(version))
        return result

    def delete(self, name: str, *, actor: str, reason: str = "") -> bool:
        """Remove ``name``; False when it was not registered (nothing changes then)."""
        if self.r.hexists(self.keys.registry, name) is False:
            return False
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.registry, name)
            pipe.zrem(self.keys.registry_names, name)
            pipe.incr(self.keys.registry_version)
            self._audit(pipe, "destination_remove", [name], actor, reason=reason)
            removed, _, version, _ = pipe.execute()
        if removed:
            self._changed([name], "remove", int(version))
        return bool(removed)

    def swap(self, name: str, read: str, fresh: str) -> bool:
        """Replace ``name``'s entry by ``fresh`` only if it is still ``read`` (a key rotation); the version
        moves, so every process re-reads it."""
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.keys.registry)  # type: ignore[no-untyped-call]
                current = pipe.hget(self.keys.registry, name)
                if current is None or _text(current) != read:
                    return False
                pipe.multi()
                pipe.hset(self.keys.registry, name, fresh)
                pipe.incr(self.keys.registry_version)
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def _changed(self, names: list[str], op: str, version: int) -> None:
        with self.r.pipeline(transaction=False) as pipe:
            for name in names[:AUDIT_NAMES]:
                pipe.xadd(self.keys.registry_changes, {"name": name, "op": op, "version": str(version)},
                          maxlen=CHANGES_MAXLEN, approximate=True)
            pipe.execute()

    def _audit(self, pipe: Any, action: str, names: list[str], actor: str, *, reason: str = "") -> None:
        shown = ", ".join(names) if len(names) <= 3 else f"{len(names)} destinations"
        entry = {
            "at": f"{time.time():.3f}",
            "actor": actor,
            "action": action,
            "dry_run": "0",
            "matched": str(len(names)),
            "count": str(len(names)),
            "selection": "destination",
            "filters": json.dumps({"destinations": names[:AUDIT_NAMES]}),
            "event_ids": "[]",
            "destination": shown,
            "reason": reason,
        }
        pipe.xadd(self.keys.audit, entry, maxlen=AUDIT_MAXLEN, approximate=True)
