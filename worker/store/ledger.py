"""The event ledger in Redis: each event's state, its attempts, and the atomic state transitions the
worker makes after each attempt (success, superseded, retry scheduled, dead-lettered, requeued).

The ledger owns the record from creation (:meth:`Ledger.register_many`, called by the publisher) to
purge. States (:class:`EventState`):
``queued → in_progress → (succeeded | superseded | retrying → in_progress … | dead_lettered)``;
``dead_lettered → queued`` on requeue. A delivery message runs only while the ledger holds its dispatch
token, so duplicate or re-delivered messages never run an attempt twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

import redis

from producers.crypto import ENV, UndecryptableRecord, WireCipher, is_encrypted
from producers.keys import Keys


class EventState(StrEnum):
    """An event's state in the ledger: the one list the ledger, the API, the CLI and the dashboard use
    (the dashboard's JavaScript gets it from the server). A ``StrEnum``, so it is stored, compared and
    serialised as the plain string."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    SUPERSEDED = "superseded"
    DEAD_LETTERED = "dead_lettered"


#: the states in which a delivery message may still run an attempt
RUNNABLE = (EventState.QUEUED, EventState.RETRYING, EventState.IN_PROGRESS)
#: the states an event ends in (until a dead letter is requeued)
TERMINAL = (EventState.SUCCEEDED, EventState.SUPERSEDED, EventState.DEAD_LETTERED)

# Creation of a batch. KEYS: published counter, queued, then each event's key ; ARGV: now, ttl, then 7 per
# event: wire, destination, vendor, token, learner id, occurred_at, event id. Records each event unless it
# exists (and indexes it in ``queued`` for the stranded-event sweeper of worker.sweeper, should the
# producer die before its message is queued); returns token, state of each event (as found or created).
# One script call per chunk of events, not per event: the per-command cost was most of publishing's.
_REGISTER = """
local out = {}
for i = 3, #KEYS do
  local a = 2 + (i - 3) * 7
  local existing = redis.call('HMGET', KEYS[i], 'token', 'state')
  if existing[2] then
    out[#out + 1] = existing[1]
    out[#out + 1] = existing[2]
  else
    redis.call('HSET', KEYS[i], 'wire', ARGV[a + 1], 'destination', ARGV[a + 2], 'vendor', ARGV[a + 3],
      'token', ARGV[a + 4], 'state', 'queued', 'attempts', 0, 'created_at', ARGV[1], 'updated_at', ARGV[1],
      'learner_id', ARGV[a + 5], 'occurred_at', ARGV[a + 6])
    redis.call('EXPIRE', KEYS[i], ARGV[2])
    redis.call('HINCRBY', KEYS[1], ARGV[a + 2], 1)
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[a + 7])
    out[#out + 1] = ARGV[a + 4]
    out[#out + 1] = 'queued'
  end
end
return out
"""
#: events per register script call (a call runs alone in Redis: a bounded batch keeps it short)
REGISTER_CHUNK = 500

# KEYS: event, inflight, queued ; ARGV: token, now, event id
_START = """
local h = redis.call('HMGET', KEYS[1], 'token', 'state', 'attempts')
if not h[2] then return {-1, 'missing'} end
if h[1] ~= ARGV[1] then return {-2, h[2]} end
if h[2] ~= 'queued' and h[2] ~= 'retrying' and h[2] ~= 'in_progress' then return {-3, h[2]} end
local n = tonumber(h[3] or '0') + 1
redis.call('HSET', KEYS[1], 'state', 'in_progress', 'attempts', n, 'started_at', ARGV[2], 'updated_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
return {n, 'in_progress'}
"""

# KEYS: hwm ; ARGV: occurred_ms, event_id  -- keep the newest occurred_at applied
_ADVANCE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ms = tonumber(string.match(cur, '^(%d+)'))
  if ms and ms > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2])
return 1
"""

# KEYS: event, dlq, attempts, dlq of the destination, queued ; ARGV: new token, now, ttl, event id
_REQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'dead_lettered' then return state or 'missing' end
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0, 'token', ARGV[1], 'requeued_at', ARGV[2],
  'updated_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'requeues', 1)
redis.call('HDEL', KEYS[1], 'dead_at', 'next_attempt_at', 'uncounted', 'flow_slot', 'parked_reason', 'parked_at')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[4])
return 'queued'
"""

# KEYS: lock ; ARGV: owner
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decrypt(stored: str, cipher: WireCipher | None) -> tuple[str, str | None]:
    if not is_encrypted(stored):
        return stored, None
    if cipher is None:
        return "", f"the stored event is encrypted and {ENV} is not set"
    try:
        return cipher.decrypt(stored), None
    except UndecryptableRecord as exc:
        return "", str(exc)


@dataclass(frozen=True)
class NewEvent:
    """What :meth:`Ledger.register_many` records for one published event (``stored_wire`` encrypted)."""

    event_id: str
    destination: str
    vendor: str
    stored_wire: str
    learner_id: str
    occurred_at: str
    token: str


@dataclass
class EventRecord:
    """One event's ledger entry. ``wire`` is the event decrypted on first use (secrets included: never
    print it); ``wire_error`` says why it is empty when the stored event could not be decrypted."""

    event_id: str
    state: str
    destination: str
    vendor: str
    token: str
    attempts: int
    stored_wire: str = field(default="", repr=False)  # as stored: fernet:… ciphertext
    fields: dict[str, str] = field(default_factory=dict)
    cipher: WireCipher | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_hash(cls, event_id: str, raw: Mapping[Any, Any], cipher: WireCipher | None = None) -> EventRecord:
        f = {_s(k): _s(v) for k, v in raw.items()}
        return cls(
            event_id=event_id,
            state=f.get("state", "missing"),
            destination=f.get("destination", ""),
            vendor=f.get("vendor", ""),
            token=f.get("token", ""),
            attempts=int(f.get("attempts", "0") or 0),
            stored_wire=f.pop("wire", ""),
            fields=f,
            cipher=cipher,
        )

    @cached_property
    def _opened(self) -> tuple[str, str | None]:
        return _decrypt(self.stored_wire, self.cipher)

    @property
    def wire(self) -> str:
        return self._opened[0]

    @property
    def wire_error(self) -> str | None:
        return self._opened[1]

    def get_float(self, name: str) -> float | None:
        value = self.fields.get(name)
        return float(value) if value else None

    def json_field(self, name: str) -> Any:
        value = self.fields.get(name)
        return json.loads(value) if value else None


class Ledger:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_seconds: int, *, cipher: WireCipher | None = None,
                 dead_letter_ttl: int | None = None) -> None:
        self.r = client
        self.keys = keys
        self.ttl = ttl_seconds
        self.cipher = cipher  # decrypts ``wire`` on load (see producers.crypto)
        self.dead_letter_ttl = dead_letter_ttl  # None: dead letters never expire
        self._register = client.register_script(_REGISTER)
        self._start = client.register_script(_START)
        self._advance = client.register_script(_ADVANCE)
        self._requeue = client.register_script(_REQUEUE)
        self._release = client.register_script(_RELEASE)

    # -- reading ---------------------------------------------------------------------------------
    def load(self, event_id: str) -> EventRecord | None:
        raw = self.r.hgetall(self.keys.event(event_id))
        return EventRecord.from_hash(event_id, raw, self.cipher) if raw else None

    def load_many(self, event_ids: list[str]) -> list[EventRecord | None]:
        with self.r.pipeline(transaction=False) as pipe:
            for eid in event_ids:
                pipe.hgetall(self.keys.event(eid))
            raws = pipe.execute()
        return [EventRecord.from_hash(eid, raw, self.cipher) if raw else None
                for eid, raw in zip(event_ids, raws, strict=True)]

    def history(self, event_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.r.lrange(self.keys.attempts(event_id), 0, -1)]

    # -- the stale guard and the learner+item lease ------------------------------------------------
    def newest_applied(self, destination: str, learner_id: str, item_key: str) -> tuple[int, str] | None:
        """(occurred_at in ms, event id) of the newest event applied for this learner + item."""
        raw = self.r.get(self.keys.hwm(destination, learner_id, item_key))
        if raw is None:
            return None
        ms, _, eid = _s(raw).partition("|")
        return int(ms), eid

    def acquire(self, destination: str, learner_id: str, item_key: str, owner: str, lease: float) -> bool:
        return bool(self.r.set(self.keys.lock(destination, learner_id, item_key), owner, nx=True,
                               px=int(lease * 1000)))

    def release(self, destination: str, learner_id: str, item_key: str, owner: str) -> None:
        self._release(keys=[self.keys.lock(destination, learner_id, item_key)], args=[owner])

    # -- creation -------------------------------------------------------------------------------------
    def register_many(self, events: Sequence[NewEvent]) -> list[tuple[str, str]]:
        """Record each event unless it exists, in one transaction; (token, state) of each as found or
        created — an existing event keeps its token and state (publishing is idempotent per event id)."""
        now = f"{time.time():.6f}"
        fixed = [self.keys.stats("published"), self.keys.queued]
        with self.r.pipeline(transaction=True) as pipe:
            for start in range(0, len(events), REGISTER_CHUNK):
                chunk = events[start : start + REGISTER_CHUNK]
                self._register(
                    keys=fixed + [self.keys.event(e.event_id) for e in chunk],
                    args=[now, self.ttl, *(x for e in chunk for x in (
                        e.stored_wire, e.destination, e.vendor, e.token, e.learner_id, e.occurred_at, e.event_id))],
                    client=pipe,
                )
            replies = pipe.execute()
        flat = [_s(x) if x is not None else "" for reply in replies for x in reply]
        return list(zip(flat[0::2], flat[1::2], strict=True))

    # -- transitions ------------------------------------------------------------------------------
    def start(self, record: EventRecord, token: str) -> int:
        """Begin the next attempt; its number, or a negative number when this message must not run."""
        n, _state = self._start(
            keys=[self.keys.event(record.event_id), self.keys.inflight(record.destination), self.keys.queued],
            args=[token, f"{time.time():.6f}", record.event_id],
        )
        return int(n)

    def _finish(self, pipe: Any, record: EventRecord, attempt: dict[str, Any] | None, **fields: Any) -> None:
        now = f"{time.time():.6f}"
        ek, ak = self.keys.event(record.event_id), self.keys.attempts(record.event_id)
        pipe.hset(ek, mapping={"updated_at": now, **{k: str(v) for k, v in fields.items()}})
        if attempt is not None:
            pipe.rpush(ak, json.dumps(attempt, default=str))
        pipe.zrem(self.keys.inflight(record.destination), record.event_id)
        pipe.zrem(self.keys.queued, record.event_id)

    def succeed(self, record: EventRecord, attempt: dict[str, Any], *, learner_id: str, item_key: str,
                occurred_ms: int, result: dict[str, Any]) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            self._finish(pipe, record, attempt, state=EventState.SUCCEEDED, token="", finished_at=f"{time.time():.6f}",
                         result=json.dumps(result))
            self._advance(keys=[self.keys.hwm(record.destination, learner_id, item_key)],
                          args=[occurred_ms, record.event_id], client=pipe)
            self._expire(pipe, record.event_id)
            pipe.execute()

    def supersede(self, record: EventRecord, reason: str, attempt: dict[str, Any] | None) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            self._finish(pipe, record, attempt, state=EventState.SUPERSEDED, token="", finished_at=f"{time.time():.6f}",
                         reason=reason)
            self._expire(pipe, record.event_id)
            pipe.execute()

    def schedule_retry(self, record: EventRecord, attempt: dict[str, Any] | None, *, token: str, due: float,
                       error: dict[str, Any] | None, free: bool = False,
                       extra: Mapping[str, str] | None = None) -> None:
        """Keep the retry durable in Redis (``scheduled``), never as an in-memory Celery countdown.

        ``free``: this attempt does not count toward ``max_attempts`` (a 429; see :mod:`worker.flow`)."""
        with self.r.pipeline(transaction=True) as pipe:
            fields: dict[str, Any] = {"state": EventState.RETRYING, "token": token, "next_attempt_at": f"{due:.3f}",
                                      **(extra or {})}
            if error is not None:
                fields["last_error"] = json.dumps(error)
            self._finish(pipe, record, attempt, **fields)
            if free:
                pipe.hincrby(self.keys.event(record.event_id), "uncounted", 1)
            pipe.zadd(self.keys.scheduled, {record.event_id: due})
            pipe.zadd(self.keys.scheduled_of(record.destination), {record.event_id: due})
            self._expire(pipe, record.event_id)
            pipe.execute()

    def defer(self, record: EventRecord, due: float, extra: Mapping[str, str] | None = None) -> None:
        """Look at this event again at ``due`` (its learner+item lease was busy, or it waits for its
        rate-limit slot ``extra``); no attempt was made."""
        with self.r.pipeline(transaction=True) as pipe:
            if extra:
                pipe.hset(self.keys.event(record.event_id), mapping={k: v for k, v in extra.items()})
            pipe.zadd(self.keys.scheduled, {record.event_id: due})
            pipe.zadd(self.keys.scheduled_of(record.destination), {record.event_id: due})
            pipe.execute()

    def park(self, record: EventRecord, attempt: dict[str, Any], *, token: str, error: dict[str, Any],
             reason: str) -> None:
        """The destination is unhealthy: keep the event parked (``parked:{dest}``) after this attempt,
        which does not count toward ``max_attempts``; the flow pump drains it when the destination heals."""
        now = time.time()
        with self.r.pipeline(transaction=True) as pipe:
            self._finish(pipe, record, attempt, state=EventState.RETRYING, token=token, last_error=json.dumps(error),
                         parked_reason=reason)
            pipe.hincrby(self.keys.event(record.event_id), "uncounted", 1)
            pipe.zadd(self.keys.parked(record.destination), {record.event_id: now})
            pipe.zrem(self.keys.queued, record.event_id)  # the flow pump, not the sweeper, brings it back
            self._expire(pipe, record.event_id)
            pipe.execute()

    def dead_letter(self, record: EventRecord, attempt: dict[str, Any] | None, *, reason: str,
                    error: dict[str, Any] | None) -> float:
        now = time.time()
        with self.r.pipeline(transaction=True) as pipe:
            self._finish(pipe, record, attempt, state=EventState.DEAD_LETTERED, token="", dead_at=f"{now:.6f}",
                         reason=reason, final_error=json.dumps(error or {"message": reason}))
            pipe.zadd(self.keys.dlq, {record.event_id: now})
            pipe.zadd(self.keys.dlq_of(record.destination), {record.event_id: now})
            for key in (self.keys.event(record.event_id), self.keys.attempts(record.event_id)):
                if self.dead_letter_ttl:  # kept dead_letter_ttl_days, then gone (secrets included)
                    pipe.expire(key, self.dead_letter_ttl)
                else:  # dead_letter_ttl_days = 0: they stay until requeued or purged
                    pipe.persist(key)
            pipe.execute()
        return now

    def requeue(self, record: EventRecord, token: str) -> str:
        """Move a dead letter back to ``queued`` with fresh attempts; returns the state found."""
        event_id = record.event_id
        return _s(self._requeue(
            keys=[self.keys.event(event_id), self.keys.dlq, self.keys.attempts(event_id),
                  self.keys.dlq_of(record.destination), self.keys.queued],
            args=[token, f"{time.time():.6f}", self.ttl, event_id],
        ))

    def purge(self, record: EventRecord) -> bool:
        """Delete a dead letter for good."""
        event_id = record.event_id
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.dlq, event_id)
            pipe.zrem(self.keys.dlq_of(record.destination), event_id)
            pipe.delete(self.keys.event(event_id), self.keys.attempts(event_id))
            removed, _, _ = pipe.execute()
        return bool(removed)

    def _expire(self, pipe: Any, event_id: str) -> None:
        pipe.expire(self.keys.event(event_id), self.ttl)
        pipe.expire(self.keys.attempts(event_id), self.ttl)
