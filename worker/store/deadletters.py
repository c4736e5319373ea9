"""The dead-letter queue: list and filter, show, requeue (rate-capped), purge, export, and the audit
log of every operator action. Shared by `gradesync dlq`, the HTTP API and the dashboard.

Dead letters are ledger records in state ``dead_lettered`` (whole event kept, secrets included and
encrypted, so they can be requeued) indexed by the ``dlq`` sorted sets. They expire
``dead_letter_ttl_days`` after they were dead-lettered (0: never); the index entries of expired ones are
pruned whenever the queue is read (an index score is the dead-letter time, so this is one
``ZREMRANGEBYSCORE``). A requeue resets the attempt
count, keeps the event (and its original ``occurred_at``) unchanged, and goes through the stale guard
like any delivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from worker.dispatch import Delivery, Dispatcher, new_token
from worker.store import EventRecord, Store
from worker.store.ledger import EventState

AUDIT_MAXLEN = 10_000


@dataclass(frozen=True)
class DLQFilter:
    destination: str | None = None
    vendor: str | None = None
    error: str | None = None  # case-insensitive substring of the reason / error / vendor message
    learner: str | None = None
    since: float | None = None  # dead-lettered at or after (epoch seconds)

    def matches(self, rec: EventRecord) -> bool:
        if rec.state != EventState.DEAD_LETTERED:
            return False
        if self.destination and rec.destination != self.destination:
            return False
        if self.vendor and rec.vendor != self.vendor:
            return False
        if self.learner and rec.fields.get("learner_id") != self.learner:
            return False
        if self.since is not None and (rec.get_float("dead_at") or 0) < self.since:
            return False
        if self.error:
            haystack = " ".join((rec.fields.get("reason", ""), rec.fields.get("final_error", ""))).lower()
            if self.error.lower() not in haystack:
                return False
        return True

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class DeadLetter:
    event_id: str
    destination: str
    vendor: str
    learner_id: str | None
    dead_at: float
    attempts: int
    reason: str
    error: dict[str, Any]
    requeues: int

    @classmethod
    def from_record(cls, rec: EventRecord) -> DeadLetter:
        return cls(
            event_id=rec.event_id,
            destination=rec.destination,
            vendor=rec.vendor,
            learner_id=rec.fields.get("learner_id"),
            dead_at=rec.get_float("dead_at") or 0.0,
            attempts=rec.attempts,
            reason=rec.fields.get("reason", ""),
            error=rec.json_field("final_error") or {},
            requeues=int(rec.fields.get("requeues", "0") or 0),
        )


@dataclass
class ActionReport:
    action: str
    matched: int = 0
    done: int = 0
    dry_run: bool = False
    event_ids: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # event id -> why


class DeadLetterQueue:
    def __init__(self, store: Store, dispatcher: Dispatcher | None = None) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.r = store.redis
        self.keys = store.keys

    # -- reading ---------------------------------------------------------------------------------
    def _index(self, destination: str | None) -> str:
        """The index to read, pruned of dead letters whose record has expired."""
        key = self.keys.dlq_of(destination) if destination else self.keys.dlq
        ttl = self.store.ledger.dead_letter_ttl
        if ttl:
            cutoff = time.time() - ttl
            with self.r.pipeline(transaction=False) as pipe:
                for k in {key, self.keys.dlq}:
                    pipe.zremrangebyscore(k, "-inf", f"({cutoff}")
                pipe.execute()
        return key

    def count(self, destination: str | None = None) -> int:
        return int(self.r.zcard(self._index(destination)))

    def oldest_at(self, destination: str | None = None) -> float | None:
        key = self._index(destination)
        first = self.r.zrange(key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def records(self, flt: DLQFilter = DLQFilter(), *, newest_first: bool = True,
                chunk: int = 500) -> Iterator[EventRecord]:
        """Every dead letter matching ``flt`` (read in pipelined chunks)."""
        key = self._index(flt.destination)
        start = 0
        while True:
            end = start + chunk - 1
            if newest_first:
                raw = self.r.zrevrangebyscore(key, "+inf", flt.since if flt.since is not None else "-inf",
                                              start=start, num=chunk)
            else:
                raw = self.r.zrangebyscore(key, flt.since if flt.since is not None else "-inf", "+inf",
                                           start=start, num=chunk)
            ids = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
            if not ids:
                return
            for rec in self.store.ledger.load_many(ids):
                if rec is not None and flt.matches(rec):
                    yield rec
            if len(ids) < chunk:
                return
            start = end + 1

    def get(self, event_id: str) -> EventRecord | None:
        rec = self.store.ledger.load(event_id)
        return rec if rec is not None and rec.state == EventState.DEAD_LETTERED else None

    def _select(self, event_ids: Iterable[str] | None, flt: DLQFilter) -> tuple[list[EventRecord], dict[str, str]]:
        if event_ids is None:
            return list(self.records(flt, newest_first=False)), {}
        ids = list(dict.fromkeys(event_ids))
        chosen: list[EventRecord] = []
        skipped: dict[str, str] = {}
        for eid, rec in zip(ids, self.store.ledger.load_many(ids), strict=True):
            if rec is None:
                skipped[eid] = "unknown event"
            elif rec.state != EventState.DEAD_LETTERED:
                skipped[eid] = f"not dead-lettered (state {rec.state})"
            elif not flt.matches(rec):
                skipped[eid] = "does not match the filters"
            else:
                chosen.append(rec)
        return chosen, skipped

    # -- operator actions ----------------------------------------------------------------------------
    def requeue(self, event_ids: Iterable[str] | None = None, flt: DLQFilter = DLQFilter(), *, dry_run: bool = False,
                rate: float | None = None, actor: str = "cli",
                progress: Callable[[int, int], None] | None = None, audit: bool = True) -> ActionReport:
        """Requeue the given dead letters (or all matching ``flt``) at most ``rate`` per second."""
        chosen, skipped = self._select(event_ids, flt)
        report = ActionReport("requeue", matched=len(chosen), dry_run=dry_run, skipped=skipped)
        if not dry_run:
            if self.dispatcher is None:
                raise RuntimeError("requeue needs a dispatcher to queue messages")
            started = time.monotonic()
            for i, rec in enumerate(chosen):
                if rate:
                    wait = started + i / rate - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                token = new_token()
                state = self.store.ledger.requeue(rec, token)
                if state != EventState.QUEUED:
                    report.skipped[rec.event_id] = f"not dead-lettered (state {state})"
                    continue
                self.dispatcher.send(Delivery(rec.event_id, rec.destination, token))
                report.done += 1
                report.event_ids.append(rec.event_id)
                if progress:
                    progress(i + 1, len(chosen))
        else:
            report.event_ids = [r.event_id for r in chosen]
        if audit:
            self.audit_write("requeue", actor=actor, report=report, flt=flt, explicit=event_ids is not None)
        return report

    def purge(self, event_ids: Iterable[str] | None = None, flt: DLQFilter = DLQFilter(), *,
              actor: str = "cli", dry_run: bool = False, audit: bool = True) -> ActionReport:
        """Delete dead letters for good (``audit=False`` only for a confirmation preview)."""
        chosen, skipped = self._select(event_ids, flt)
        report = ActionReport("purge", matched=len(chosen), dry_run=dry_run, skipped=skipped)
        for rec in chosen:
            report.event_ids.append(rec.event_id)
            if not dry_run and self.store.ledger.purge(rec):
                report.done += 1
        if audit:
            self.audit_write("purge", actor=actor, report=report, flt=flt, explicit=event_ids is not None)
        return report

    # -- audit -------------------------------------------------------------------------------------
    def audit_write(self, action: str, *, actor: str, report: ActionReport, flt: DLQFilter, explicit: bool) -> None:
        entry = {
            "at": f"{time.time():.3f}",
            "actor": actor,
            "action": action,
            "dry_run": "1" if report.dry_run else "0",
            "matched": str(report.matched),
            "count": str(report.done),
            "selection": "ids" if explicit else "filter",
            "filters": json.dumps(flt.describe()),
            "event_ids": json.dumps(report.event_ids[:50]),
        }
        self.r.xadd(self.keys.audit, entry, maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        out = []
        for entry_id, raw in self.r.xrevrange(self.keys.audit, count=limit) or []:
            f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                 for k, v in (raw or {}).items()}
            out.append({
                "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                "at": float(f["at"]),
                "actor": f.get("actor"),
                "action": f.get("action"),
                "dry_run": f.get("dry_run") == "1",
                "matched": int(f.get("matched", 0)),
                "count": int(f.get("count", 0)),
                "selection": f.get("selection"),
                "filters": json.loads(f.get("filters", "{}")),
                "event_ids": json.loads(f.get("event_ids", "[]")),
                # a destination's pause / resume (worker.ops.flow_status) also says which and why
                **({"destination": f["destination"], "reason": f.get("reason", "")} if "destination" in f else {}),
            })
        return out

    def list(self, flt: DLQFilter = DLQFilter(), *, limit: int = 50, offset: int = 0) -> tuple[list[DeadLetter], int]:
        """One page of matching dead letters (newest first) and the total that match."""
        if flt.vendor is None and flt.error is None and flt.learner is None:
            # only destination / since: the sorted set counts and pages without reading records
            key = self._index(flt.destination)
            low: float | str = flt.since if flt.since is not None else "-inf"
            total = int(self.r.zcount(key, low, "+inf"))
            raw = self.r.zrevrangebyscore(key, "+inf", low, start=offset, num=limit)
            ids = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
            records = self.store.ledger.load_many(ids)
            return [DeadLetter.from_record(r) for r in records if r is not None and flt.matches(r)], total
        page: list[DeadLetter] = []
        total = 0
        for rec in self.records(flt):
            if offset <= total < offset + limit:
                page.append(DeadLetter.from_record(rec))
            total += 1
        return page, total
