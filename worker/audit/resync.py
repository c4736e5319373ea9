"""Resync: republish a cell's last delivered event as a new event, for the cells an audit found
``missing`` (and, only when asked explicitly, ``drifted``: a teacher's override wins by default).

The new event is the old one with a fresh ``event_id`` and a fresh ``occurred_at`` (a platform refuses a
timestamp older than the one of the clearing), marked ``metadata.gradesync_resync_of``. The action is
recorded in the cell's history (an ``operator_action`` entry on the old event's history) and in the
operator audit log (``action: resync``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from worker.audit.compare import Verdict
from worker.audit.jobs import AuditJobs
from worker.events import GradeEvent
from worker.settings import Settings
from worker.store import Store
from worker.store.deadletters import AUDIT_MAXLEN

RESYNCABLE = (Verdict.MISSING.value, Verdict.DRIFTED.value)


class Publishes(Protocol):
    def publish_many(self, items: Any) -> list[str]: ...


@dataclass
class ResyncReport:
    verdicts: list[str]
    republished: dict[str, str] = field(default_factory=dict)  # old event id -> new event id
    skipped: dict[str, str] = field(default_factory=dict)  # old event id -> why

    def as_json(self) -> dict[str, Any]:
        return {"verdicts": self.verdicts, "republished": self.republished, "skipped": self.skipped}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def log_action(store: Store, action: str, *, actor: str, filters: dict[str, Any], matched: int = 0,
               count: int = 0, event_ids: list[str] | None = None) -> None:
    """One line of the operator audit log (``gradesync dlq audit``, ``GET /v1/audit``, the dashboard)."""
    store.redis.xadd(store.keys.audit, {
        "at": f"{time.time():.3f}", "actor": actor, "action": action, "dry_run": "0", "matched": str(matched),
        "count": str(count), "selection": "audit", "filters": json.dumps(filters),
        "event_ids": json.dumps((event_ids or [])[:50])}, maxlen=AUDIT_MAXLEN, approximate=True)


def resync(settings: Settings, store: Store, publisher: Publishes, job_id: str, verdicts: tuple[str, ...], *,
           actor: str) -> ResyncReport:
    """Republish the last event of each cell of the job whose verdict is in ``verdicts``."""
    unknown = [v for v in verdicts if v not in RESYNCABLE]
    if unknown:
        raise ValueError(f"only {' and '.join(RESYNCABLE)} cells can be resynced, not {', '.join(unknown)}")
    jobs = AuditJobs(store.redis, store.keys)
    report = ResyncReport(sorted(set(verdicts)))
    vendors = settings.vendors()
    for cell in jobs.results(job_id, verdicts=tuple(verdicts)):
        old_id = str(cell.get("event_id") or "")
        record = store.ledger.load(old_id) if old_id else None
        if record is None or not record.wire:
            report.skipped[old_id] = "the event expired from the ledger"
            continue
        item = GradeEvent.from_wire(record.wire, vendors=vendors).item_key()
        newest = store.redis.get(store.keys.hwm(record.destination, cell["learner_id"], item))
        if newest is not None and _s(newest).partition("|")[2] != old_id:
            report.skipped[old_id] = "the cell was delivered again since the audit"
            continue
        data = json.loads(record.wire)
        data.pop("event_id", None)
        data["occurred_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        data["metadata"] = {**(data.get("metadata") or {}), "gradesync_resync_of": old_id, "gradesync_audit": job_id}
        (new_id,) = publisher.publish_many([data])
        report.republished[old_id] = new_id
        now = time.time()
        store.ledger.note(old_id, {"operator_action": "resync", "actor": actor, "at": now, "audit": job_id,
                                   "verdict": cell["verdict"], "new_event_id": new_id})
    if report.republished or report.skipped:
        log_action(store, "resync", actor=actor, filters={"audit": job_id, "verdicts": report.verdicts},
                   matched=len(report.republished) + len(report.skipped), count=len(report.republished),
                   event_ids=list(report.republished))
    return report
