"""Audit jobs in Redis: the job hash, the cells it reads, its results, and the lease of the process that
runs it (key names from :class:`worker.keys.Keys`: ``audits…``).

A job's progress is a cursor per destination (``done:{dest}``) written in the same transaction as the
cell's result and its verdict count, so a job resumed after its process died (its lease expired) goes on
from the first cell without a result: no cell is read twice into the results, none is skipped.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from worker.audit.compare import VERDICTS
from worker.keys import Keys

#: how long a job and its results are kept (seconds)
JOB_TTL = 30 * 86_400
#: seconds a runner's lease lasts without renewal (renewed every few seconds while it runs)
LEASE = 30
ACTIVE = ("pending", "running")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class AuditRequest:
    destinations: list[str]
    since: float
    actor: str
    #: verdicts to republish when the audit ends (``missing``, ``drifted``)
    resync: tuple[str, ...] = ()


@dataclass
class JobView:
    id: str
    state: str
    destinations: list[str]
    since: float
    actor: str
    created_at: float
    finished_at: float | None
    resync: list[str]
    total: int
    done: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    holding: dict[str, str] = field(default_factory=dict)
    error: str = ""
    enumerated: list[str] = field(default_factory=list)
    resync_report: dict[str, Any] | None = None

    @property
    def summary(self) -> dict[str, int]:
        return {v: sum(c.get(v, 0) for c in self.counts.values()) for v in VERDICTS}

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "destinations": self.destinations, "since": self.since,
                "actor": self.actor, "created_at": self.created_at, "finished_at": self.finished_at,
                "resync": self.resync, "total": self.total, "done": self.done, "counts": self.counts,
                "summary": self.summary, "holding": {k: v for k, v in self.holding.items() if v},
                "error": self.error or None, "resync_report": self.resync_report}


class AuditJobs:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    # -- jobs ----------------------------------------------------------------------------------------
    def create(self, req: AuditRequest) -> str:
        job_id = secrets.token_hex(8)
        now = time.time()
        key = self.keys.audit_job(job_id)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"id": job_id, "state": "pending", "destinations": json.dumps(req.destinations),
                                    "since": f"{req.since:.3f}", "actor": req.actor, "created_at": f"{now:.3f}",
                                    "resync": json.dumps(list(req.resync))})
            pipe.expire(key, JOB_TTL)
            pipe.zadd(self.keys.audits, {job_id: now})
            pipe.execute()
        return job_id

    def get(self, job_id: str) -> JobView | None:
        raw = {_s(k): _s(v) for k, v in self.r.hgetall(self.keys.audit_job(job_id)).items()}
        if not raw:
            return None
        dests: list[str] = json.loads(raw.get("destinations", "[]"))
        counts = {d: {v: int(raw.get(f"n:{d}:{v}", 0)) for v in VERDICTS} for d in dests}
        finished = raw.get("finished_at")
        return JobView(
            id=job_id, state=raw.get("state", "pending"), destinations=dests, since=float(raw.get("since", 0)),
            actor=raw.get("actor", ""), created_at=float(raw.get("created_at", 0)),
            finished_at=float(finished) if finished else None, resync=json.loads(raw.get("resync", "[]")),
            total=sum(int(raw.get(f"total:{d}", 0)) for d in dests),
            done=sum(int(raw.get(f"done:{d}", 0)) for d in dests), counts=counts,
            holding={d: raw.get(f"holding:{d}", "") for d in dests}, error=raw.get("error", ""),
            enumerated=[d for d in dests if raw.get(f"enumerated:{d}") == "1"],
            resync_report=json.loads(raw["resync_report"]) if raw.get("resync_report") else None,
        )

    def recent(self, limit: int = 20) -> list[JobView]:
        ids = [_s(x) for x in self.r.zrevrange(self.keys.audits, 0, limit - 1)]
        return [v for v in (self.get(i) for i in ids) if v is not None]

    def set_fields(self, job_id: str, **fields: str) -> None:
        self.r.hset(self.keys.audit_job(job_id), mapping=dict(fields.items()))

    def field(self, job_id: str, name: str) -> str | None:
        value = self.r.hget(self.keys.audit_job(job_id), name)
        return None if value is None else _s(value)

    def finish(self, job_id: str, state: str, error: str = "") -> None:
        view = self.get(job_id)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.audit_job(job_id), mapping={"state": state, "finished_at": f"{time.time():.3f}",
                                                            "error": error})
            if state == "done" and view is not None:
                pipe.hset(self.keys.audits_last, mapping={d: job_id for d in view.destinations})
            pipe.execute()

    def last_per_destination(self) -> dict[str, JobView]:
        raw = {_s(k): _s(v) for k, v in self.r.hgetall(self.keys.audits_last).items()}
        views = {jid: self.get(jid) for jid in set(raw.values())}
        return {d: v for d, jid in raw.items() if (v := views.get(jid)) is not None}

    def unfinished(self) -> list[str]:
        """Jobs not finished whose runner holds no lease (its process died): to be resumed."""
        out = []
        for jid in (_s(x) for x in self.r.zrevrange(self.keys.audits, 0, 200)):
            state = self.field(jid, "state")
            if state in ACTIVE and not self.r.exists(self.keys.audit_job(jid, "lock")):
                out.append(jid)
        return out

    # -- cells and results ----------------------------------------------------------------------------
    def reset_cells(self, job_id: str, destination: str) -> None:
        self.r.delete(self.keys.audit_job(job_id, "cells", destination))

    def add_cells(self, job_id: str, destination: str, hwm_keys: list[str]) -> None:
        if hwm_keys:
            key = self.keys.audit_job(job_id, "cells", destination)
            with self.r.pipeline(transaction=False) as pipe:
                pipe.rpush(key, *hwm_keys)
                pipe.expire(key, JOB_TTL)
                pipe.execute()

    def enumerated(self, job_id: str, destination: str) -> int:
        total = int(self.r.llen(self.keys.audit_job(job_id, "cells", destination)))
        self.set_fields(job_id, **{f"enumerated:{destination}": "1", f"total:{destination}": str(total)})
        return total

    def cells(self, job_id: str, destination: str, start: int, count: int) -> list[str]:
        key = self.keys.audit_job(job_id, "cells", destination)
        return [_s(x) for x in self.r.lrange(key, start, start + count - 1)]

    def record(self, job_id: str, destination: str, cursor: int, result: dict[str, Any]) -> None:
        """One cell's result (also in its verdict's list, so the drifted and missing cells of a 100 000-cell
        audit are read without the matches), its verdict count and the destination's cursor, in one
        transaction."""
        key, verdict = self.keys.audit_job(job_id), result["verdict"]
        line = json.dumps(result)
        with self.r.pipeline(transaction=True) as pipe:
            for rkey in (self.keys.audit_job(job_id, "results"), self.keys.audit_job(job_id, "results", verdict)):
                pipe.rpush(rkey, line)
                pipe.expire(rkey, JOB_TTL)
            pipe.hincrby(key, f"n:{destination}:{verdict}", 1)
            pipe.hset(key, f"done:{destination}", str(cursor))
            pipe.execute()

    def results(self, job_id: str, *, offset: int = 0, limit: int | None = None,
                verdicts: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The cells read, in cursor order; with ``verdicts``, those verdicts' cells (one verdict after the
        other, each in cursor order)."""
        keys = ([self.keys.audit_job(job_id, "results", v) for v in dict.fromkeys(verdicts)] if verdicts
                else [self.keys.audit_job(job_id, "results")])
        out: list[dict[str, Any]] = []
        skip = offset
        for rkey in keys:
            if limit is not None and len(out) >= limit:
                break
            size = int(self.r.llen(rkey))
            if skip >= size:
                skip -= size
                continue
            end = -1 if limit is None else skip + (limit - len(out)) - 1
            out += [json.loads(x) for x in self.r.lrange(rkey, skip, end)]
            skip = 0
        return out

    # -- the runner's lease --------------------------------------------------------------------------
    def claim(self, job_id: str, owner: str) -> bool:
        return bool(self.r.set(self.keys.audit_job(job_id, "lock"), owner, nx=True, px=LEASE * 1000))

    def renew(self, job_id: str, owner: str) -> bool:
        return bool(self._renew(keys=[self.keys.audit_job(job_id, "lock")], args=[owner, LEASE * 1000]))

    def held(self, job_id: str) -> bool:
        """Does a live process run the job now?"""
        return bool(self.r.exists(self.keys.audit_job(job_id, "lock")))

    def release(self, job_id: str, owner: str) -> None:
        self._release(keys=[self.keys.audit_job(job_id, "lock")], args=[owner])
