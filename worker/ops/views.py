"""Read-only views of ledger records for operators (CLI, HTTP API, dashboard). Secrets never appear:
the event is shown in its redacted form, vendor excerpts were masked when recorded, and the whole view
is masked again by value (the destinations' credentials and this event's own secrets) — so a record
stored before by-value masking existed is shown clean too."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from worker.events import GradeEvent
from worker.known_secrets import wire_secrets
from worker.redact import redact
from worker.store import EventRecord, Store


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def redacted_event(record: EventRecord, vendors: dict[str, str] | None = None) -> dict[str, Any]:
    """The event as published, secrets masked (falls back to a scrubbed raw form if it no longer validates)."""
    if record.wire_error is not None:
        return {"unavailable": record.wire_error}
    try:
        return GradeEvent.from_wire(record.wire, vendors=vendors or {record.destination: record.vendor}).redacted()
    except ValidationError:
        import json

        cleaned: dict[str, Any] = redact(json.loads(record.wire))
        return cleaned


def event_view(store: Store, record: EventRecord, *, with_history: bool = True) -> dict[str, Any]:
    f = record
    view: dict[str, Any] = {
        "event_id": f.event_id,
        "state": f.state,
        "destination": f.destination,
        "vendor": f.vendor,
        "learner_id": f.fields.get("learner_id"),
        "occurred_at": f.fields.get("occurred_at"),
        "attempts": f.attempts,
        "requeues": int(f.fields.get("requeues", "0") or 0),
        "created_at": iso(f.get_float("created_at")),
        "updated_at": iso(f.get_float("updated_at")),
        "finished_at": iso(f.get_float("finished_at")),
        "next_attempt_at": iso(f.get_float("next_attempt_at")),
        "dead_lettered_at": iso(f.get_float("dead_at")),
        "reason": f.fields.get("reason"),
        "last_error": f.json_field("last_error"),
        "final_error": f.json_field("final_error"),
        "result": f.json_field("result"),
        "event": redacted_event(record),
    }
    if with_history:
        history = store.ledger.history(record.event_id)
        for h in history:
            for key in ("started_at", "finished_at"):
                if isinstance(h.get(key), (int, float)):
                    h[key] = iso(float(h[key]))
        view["history"] = history
    masked: dict[str, Any] = redact({k: v for k, v in view.items() if v is not None},
                                    extra_secrets=tuple(wire_secrets(record.wire)))
    return masked
