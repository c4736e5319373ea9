"""Dead-letter operations as the HTTP API and the dashboard take them: request bodies, filter parsing,
the JSON shapes of dead letters, reports and audit entries. Every string that leaves here is redacted
(the ledger already holds redacted excerpts; this is the second line of defence)."""

from __future__ import annotations

import getpass
import math
import re
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from worker.ops.overview import OpsContext
from worker.ops.views import iso
from worker.redact import redact, redact_text
from worker.safetext import printable
from worker.settings import Settings
from worker.store.deadletters import ActionReport, DeadLetter, DLQFilter

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_IDS = 10_000


def parse_since(value: str | float | None, *, now: float | None = None) -> float | None:
    """Epoch seconds from epoch seconds, an ISO 8601 time with a timezone, or ``30m``/``2h``/``7d`` ago.

    Raises :class:`ValueError` with a message fit for the caller.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("since: must be a time, not a boolean")
    if isinstance(value, (int, float)):
        return _finite_since(float(value))
    text = value.strip()
    m = _RELATIVE.match(text)
    if m:
        return _finite_since((now or time.time()) - float(m.group(1)) * _UNIT[m.group(2)])
    try:
        return _finite_since(float(text))
    except ValueError as exc:
        if "since:" in str(exc):
            raise
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("since: use an ISO 8601 time (e.g. 2024-05-01T12:00:00Z), epoch seconds, "
                         "or 30m / 2h / 7d") from None
    if dt.tzinfo is None:
        raise ValueError("since: an ISO 8601 time needs a timezone (e.g. Z or +02:00)")
    try:
        return _finite_since(dt.timestamp())
    except OverflowError:
        raise ValueError("since: out of range") from None


#: epoch seconds beyond +/- this (about year 5138) are not a time anyone means
_MAX_EPOCH = 1e11


def _finite_since(value: float) -> float:
    if not math.isfinite(value) or abs(value) > _MAX_EPOCH:
        raise ValueError("since: must be a finite time (NaN, infinity and out-of-range values are refused)")
    return value


def cli_actor() -> str:
    """``cli:<OS user>``: who acted from the command line, as the audit log records it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        user = "unknown"
    return f"cli:{printable(user)}"


def normalize_id(value: str) -> str | None:
    """The canonical form of an event id (a UUID), or None when it is not one."""
    try:
        return str(UUID(value))
    except ValueError:
        return None


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destination: str | None = Field(None, max_length=100)
    vendor: str | None = Field(None, max_length=50)
    error: str | None = Field(None, max_length=500, description="case-insensitive substring of the error")
    learner: str | None = Field(None, max_length=255)
    since: str | float | None = Field(None, description="ISO 8601, epoch seconds, or 30m / 2h / 7d ago")

    @field_validator("since", mode="before")
    @classmethod
    def _valid_since(cls, value: Any) -> Any:
        parse_since(value)  # NaN, infinity, booleans and absurd times are refused here, as a 422
        return value

    def is_empty(self) -> bool:
        return all(v in (None, "") for v in self.model_dump().values())

    def to_filter(self) -> DLQFilter:
        return DLQFilter(destination=self.destination or None, vendor=self.vendor or None,
                         error=self.error or None, learner=self.learner or None,
                         since=parse_since(self.since))


class SelectionBody(BaseModel):
    """Which dead letters: ``event_ids``, every one matching ``filter``, or ``all`` (optionally filtered)."""

    model_config = ConfigDict(extra="forbid")

    event_ids: list[UUID] | None = Field(None, max_length=MAX_IDS)
    filter: FilterBody | None = None
    all: bool = Field(False, description="every dead letter (matching `filter` when given)")
    dry_run: bool = Field(False, description="only report what would be done")

    @model_validator(mode="after")
    def _one_selection(self) -> SelectionBody:
        if self.event_ids is not None:
            if self.all or (self.filter is not None and not self.filter.is_empty()):
                raise ValueError("give event_ids, or a filter / all, not both")
            if not self.event_ids:
                raise ValueError("event_ids is empty")
        elif not self.all and (self.filter is None or self.filter.is_empty()):
            raise ValueError('give event_ids, a non-empty filter, or "all": true')
        if self.filter is not None:
            try:
                self.filter.to_filter()
            except ValueError as exc:
                raise ValueError(f"filter.{exc}") from None
        return self

    def ids(self) -> list[str] | None:
        return None if self.event_ids is None else [str(e) for e in self.event_ids]

    def flt(self) -> DLQFilter:
        return self.filter.to_filter() if self.filter is not None else DLQFilter()


class RequeueBody(SelectionBody):
    rate: float | None = Field(None, gt=0, le=10_000,
                               description="events per second (default: the destination's requeue_rate)")


class PurgeBody(SelectionBody):
    confirm: bool = Field(False, description="must be true to purge for good (dashboard only)")


def default_rate(settings: Settings, flt: DLQFilter) -> float:
    dests = settings.destinations()
    chosen = [dests[flt.destination]] if flt.destination is not None and flt.destination in dests \
        else list(dests.values())
    return min((d.requeue_rate for d in chosen), default=10.0)


def requeue(ctx: OpsContext, body: RequeueBody, actor: str) -> ActionReport:
    flt = body.flt()
    rate = body.rate or default_rate(ctx.settings, flt)
    # the dashboard's dry runs are confirmation previews, not operator actions: not audited
    preview = body.dry_run and actor == "dashboard"
    return ctx.dlq.requeue(body.ids(), flt, dry_run=body.dry_run, rate=rate, actor=actor, audit=not preview)


def purge(ctx: OpsContext, body: SelectionBody, actor: str) -> ActionReport:
    preview = body.dry_run and actor == "dashboard"
    return ctx.dlq.purge(body.ids(), body.flt(), actor=actor, dry_run=body.dry_run, audit=not preview)


# -- JSON shapes ----------------------------------------------------------------------------------------
def dead_letter_json(d: DeadLetter, now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    return {
        "event_id": d.event_id,
        "destination": d.destination,
        "vendor": d.vendor,
        "learner_id": d.learner_id,
        "dead_lettered_at": iso(d.dead_at),
        "dead_at": d.dead_at,
        "age_seconds": round(max(0.0, now - d.dead_at), 1),
        "attempts": d.attempts,
        "requeues": d.requeues,
        "reason": redact_text(d.reason),
        "error": redact(d.error),
    }


def page_json(items: list[DeadLetter], total: int, limit: int, offset: int) -> dict[str, Any]:
    now = time.time()
    return {"items": [dead_letter_json(d, now) for d in items], "total": total, "limit": limit,
            "offset": offset}


def report_json(report: ActionReport) -> dict[str, Any]:
    data = asdict(report)
    data["skipped"] = {k: redact_text(v) for k, v in report.skipped.items()}
    return data


def audit_json(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"items": [{**redact(e), "at_iso": iso(e["at"])} for e in entries]}
