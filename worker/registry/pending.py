"""A destination's pending events (queued, retrying, parked, in progress), and dead-lettering them when it
is removed by force.

Per destination the store keeps ``scheduled:{dest}`` (retrying), ``parked:{dest}`` and
``inflight:{dest}``; the events waiting for a broker message are in the global ``queued`` index, whose
records say their destination (read in batches).
"""

from __future__ import annotations

from collections.abc import Iterator

from worker.store import Store
from worker.store.records import TERMINAL

#: records read per round trip while looking through the ``queued`` index
BATCH = 500


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _queued_of(store: Store, destination: str) -> Iterator[str]:
    r, keys = store.redis, store.keys
    offset = 0
    while True:
        ids = [_text(i) for i in r.zrange(keys.queued, offset, offset + BATCH - 1)]
        if not ids:
            return
        with r.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hget(keys.event(event_id), "destination")
            owners = pipe.execute()
        yield from (i for i, d in zip(ids, owners, strict=True) if d is not None and _text(d) == destination)
        offset += BATCH


def pending_events(store: Store, destination: str) -> list[str]:
    """The ids of the events of ``destination`` not finished yet (each once)."""
    r, keys = store.redis, store.keys
    seen: dict[str, None] = {}
    for key in (keys.inflight(destination), keys.scheduled_of(destination), keys.parked(destination)):
        seen.update(dict.fromkeys(_text(i) for i in r.zrange(key, 0, -1)))
    seen.update(dict.fromkeys(_queued_of(store, destination)))
    return list(seen)


def dead_letter_pending(store: Store, destination: str, reason: str) -> int:
    """Dead-letter every pending event of ``destination`` with ``reason``; how many were."""
    done = 0
    keys = store.keys
    for event_id in pending_events(store, destination):
        record = store.ledger.load(event_id)
        if record is None or record.state in TERMINAL:
            continue
        with store.redis.pipeline(transaction=False) as pipe:  # out of the retry / parked indexes too
            pipe.zrem(keys.scheduled, event_id)
            pipe.zrem(keys.scheduled_of(destination), event_id)
            pipe.zrem(keys.parked(destination), event_id)
            pipe.execute()
        store.ledger.dead_letter(record, None, reason=reason,
                                 error={"error_class": "DestinationRemoved", "message": reason})
        done += 1
    return done
