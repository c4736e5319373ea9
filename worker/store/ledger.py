"""The one owner of an event's record in Redis: every write to it (the hash, its attempt list and the
indexes its state moves through) is a named operation of :class:`Ledger`, and every one of them is a
script of :mod:`worker.store.scripts` or one transaction here.

States (:class:`~worker.store.records.EventState`):
``queued → in_progress → (succeeded | superseded | retrying → in_progress … | dead_lettered)``;
``dead_lettered → queued`` on requeue. A delivery message runs only while the ledger holds its dispatch
token, so duplicate or re-delivered messages never run an attempt twice.

======================  ===========================================  =========================
operation               who calls it                                 how
======================  ===========================================  =========================
``register_many``       the publisher                                ``REGISTER``
``claim``               a delivery, before the vendor call           ``CLAIM`` (the hot path)
``start``               a delivery admitted by flow control          ``START``
``succeed``             a delivery, after a success                  ``SUCCEED``
``supersede``           a delivery (stale guard, retry decision)     transaction
``schedule_retry``      a delivery (retry decision)                  transaction
``defer``               a delivery (lease busy, over share, slot)    transaction
``park`` / ``hold``     flow control (after / instead of an attempt) transaction
``dead_letter``         a delivery                                   transaction
``hand_back``           a delivery while the worker shuts down       ``HAND_BACK``
``reissue``             the stranded-event sweeper                   ``REISSUE``
``requeue`` / ``purge`` operators (dlq CLI, API, dashboard)          ``REQUEUE`` / transaction
``swap_wire``           ``gradesync keys rotate``                    ``SWAP_WIRE``
======================  ===========================================  =========================

Why the success and the claim are scripts (they were a dozen round trips): a delivery's own Redis work
is two round trips, and each costs little in Redis but a lot of Python in redis-py under the one
interpreter lock of a worker process; at a few hundred events a second per process that was half of the
worker's CPU. One script per step does the same work atomically (so also without windows between steps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from worker.crypto import WireCipher
from worker.flow.decide import SENT_WINDOW
from worker.keys import Keys
from worker.store import scripts
from worker.store.records import RUNNABLE, TERMINAL, WAITING, EventRecord, EventState, NewEvent, _s
from worker.store.stats import MINUTE_TTL, processed_field

__all__ = ["RUNNABLE", "TERMINAL", "WAITING", "Claim", "EventRecord", "EventState", "Ledger", "NewEvent"]

#: events per register script call (a call runs alone in Redis: a bounded batch keeps it short)
REGISTER_CHUNK = 500


def _number(text: str) -> float:
    """A flow-hash number as :class:`worker.flow.decide.FlowState` reads it (absent or unreadable: 0)."""
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Claim:
    """What :meth:`Ledger.claim` found: ``code`` is ``skipped`` (not this message's turn: duplicate,
    re-delivered or already finished), ``busy`` (another worker holds the lease), ``stale`` (a newer event
    was applied: ``newest``), ``flow`` (lease held; the general flow-control path decides) or ``started``
    (lease held, attempt ``attempt`` begun; ``clean``: the destination had no failures counted)."""

    code: str
    attempt: int = 0
    newest: str = ""
    clean: bool = False


class Ledger:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_seconds: int, *, cipher: WireCipher | None = None,
                 dead_letter_ttl: int | None = None) -> None:
        self.r = client
        self.keys = keys
        self.ttl = ttl_seconds
        self.cipher = cipher  # decrypts ``wire`` on load (see worker.crypto)
        self.dead_letter_ttl = dead_letter_ttl  # None: dead letters never expire
        self._register = client.register_script(scripts.REGISTER)
        self._claim = client.register_script(scripts.CLAIM)
        self._start = client.register_script(scripts.START)
        self._succeed = client.register_script(scripts.SUCCEED)
        self._requeue = client.register_script(scripts.REQUEUE)
        self._hand_back = client.register_script(scripts.HAND_BACK)
        self._reissue = client.register_script(scripts.REISSUE)
        self._swap_wire = client.register_script(scripts.SWAP_WIRE)
        self._release = client.register_script(scripts.RELEASE)

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
                    args=[now, self.ttl, EventState.QUEUED, *(x for e in chunk for x in (
                        e.stored_wire, e.destination, e.vendor, e.token, e.learner_id, e.occurred_at, e.event_id))],
                    client=pipe,
                )
            replies = pipe.execute()
        flat = [_s(x) if x is not None else "" for reply in replies for x in reply]
        return list(zip(flat[0::2], flat[1::2], strict=True))

    # -- transitions ------------------------------------------------------------------------------
    def claim(self, record: EventRecord, token: str, *, lock: str, hwm: str, owner: str, lease: float,
              occurred_ms: int, fast: bool) -> Claim:
        """Check the token, take the lease ``lock``, apply the stale guard ``hwm`` and — when ``fast``
        (the destination has no configured rate) and its flow state is clean — count the request and start
        the attempt. Otherwise it stops after the stale guard with the lease held (code ``flow``) and the
        caller takes the general path (:meth:`worker.flow.gate.FlowControl.before`, then :meth:`start`)."""
        k, eid = self.keys, record.event_id
        code, n, extra = self._claim(
            keys=[k.event(eid), lock, hwm, k.flow(record.destination), k.inflight(record.destination), k.queued],
            args=[token, f"{time.time():.6f}", owner, int(lease * 1000), occurred_ms, eid, "1" if fast else "0",
                  SENT_WINDOW, EventState.IN_PROGRESS, *RUNNABLE],
        )
        code = _s(code)
        if code == "stale":
            return Claim(code, newest=_s(extra))
        if code == "started":
            return Claim(code, attempt=int(n), clean=not _number(_s(extra)))
        return Claim(code)

    def start(self, record: EventRecord, token: str) -> int:
        """Begin the next attempt; its number, or a negative number when this message must not run."""
        n, _state = self._start(
            keys=[self.keys.event(record.event_id), self.keys.inflight(record.destination), self.keys.queued],
            args=[token, f"{time.time():.6f}", record.event_id, EventState.IN_PROGRESS, *RUNNABLE],
        )
        return int(n)

    def succeed(self, record: EventRecord, attempt: dict[str, Any], *, result: dict[str, Any], lock: str,
                hwm: str, owner: str, occurred_ms: int) -> None:
        """Record a successful attempt, advance the stale guard, count it, and release the lease."""
        k, eid = self.keys, record.event_id
        now = time.time()
        done = EventState.SUCCEEDED
        self._succeed(
            keys=[k.event(eid), k.attempts(eid), k.inflight(record.destination), k.queued, hwm, lock,
                  k.stats("processed"), k.minute(record.destination, done, int(now // 60)), k.stats("active")],
            args=[f"{now:.6f}", json.dumps(attempt, default=str), json.dumps(result), occurred_ms, eid, owner,
                  self.ttl, processed_field(record.destination, record.vendor, done), MINUTE_TTL, done,
                  record.destination],
        )

    def _finish(self, pipe: Any, record: EventRecord, attempt: dict[str, Any] | None, **fields: Any) -> None:
        now = f"{time.time():.6f}"
        ek, ak = self.keys.event(record.event_id), self.keys.attempts(record.event_id)
        pipe.hset(ek, mapping={"updated_at": now, **{k: str(v) for k, v in fields.items()}})
        if attempt is not None:
            pipe.rpush(ak, json.dumps(attempt, default=str))
        pipe.zrem(self.keys.inflight(record.destination), record.event_id)
        pipe.zrem(self.keys.queued, record.event_id)

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
            pipe.sadd(self.keys.parking, record.destination)  # the flow pump's index
            pipe.zrem(self.keys.queued, record.event_id)  # the flow pump, not the sweeper, brings it back
            self._expire(pipe, record.event_id)
            pipe.execute()

    def hold(self, destination: str, event_id: str, *, now: float | None = None, reason: str = "") -> None:
        """Park an event that made no attempt (paused, breaker open): its token stays valid for the drain
        (:meth:`worker.flow.store.FlowStore.drain`)."""
        when = time.time() if now is None else now
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.parked(destination), {event_id: when}, nx=True)
            pipe.sadd(self.keys.parking, destination)  # the flow pump's index
            pipe.zrem(self.keys.queued, event_id)  # durably parked: not for the stranded-event sweeper
            pipe.hset(self.keys.event(event_id), mapping={"parked_reason": reason, "parked_at": f"{when:.3f}"})
            pipe.execute()

    def hand_back(self, event_id: str, destination: str, token: str, new_token: str, *, started: bool) -> bool:
        """Shutting down (:mod:`worker.shutdown`): if ``token`` is still the event's, give it back to the
        retry schedule due now under ``new_token``; ``started``: un-count the attempt, which sent nothing."""
        now = f"{time.time():.6f}"
        done = self._hand_back(
            keys=[self.keys.event(event_id), self.keys.inflight(destination), self.keys.scheduled],
            args=[token, new_token, now, event_id, "1" if started else "0", EventState.RETRYING, *RUNNABLE])
        return bool(done)

    def reissue(self, event_id: str, new_token: str, now: float) -> str | None:
        """A stranded event (:mod:`worker.sweeper`): if it still waits for a message, give it ``new_token``
        and return its destination; None when it started, finished or is scheduled meanwhile."""
        k = self.keys
        found = self._reissue(keys=[k.event(event_id), k.queued, k.scheduled, k.dispatching],
                              args=[new_token, f"{now:.6f}", event_id, *WAITING])
        return _s(found) if found else None

    def swap_wire(self, event_id: str, read: str, fresh: str) -> bool:
        """Key rotation: store ``fresh`` (re-encrypted) if the stored event is still ``read``."""
        return bool(self._swap_wire(keys=[self.keys.event(event_id)], args=[read, fresh]))

    def note(self, event_id: str, entry: Mapping[str, Any]) -> None:
        """An operator action in an event's history (not an attempt: an audit's resync of the cell)."""
        self.r.rpush(self.keys.attempts(event_id), json.dumps(entry))

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
            args=[token, f"{time.time():.6f}", self.ttl, event_id, EventState.DEAD_LETTERED, EventState.QUEUED],
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
