"""The secret values gradesync holds, collected for masking by value (see :mod:`worker.redact`).

- every ``SecretStr`` of the destination being used, bound while one of its events is delivered or one
  of its grades read back (and, up to :data:`PROCESS_WIDE_UP_TO` destinations, registered process-wide
  by the worker, the ops server and the CLI as a second layer);
- the event's own ``SecretStr`` fields (``service_key`` / ``ltik`` / ``person_token``), bound while the
  event is delivered or shown.

:func:`scrub_error` is the one place where a vendor's failure is masked before it becomes a ledger
record (attempt entry, ``last_error``, ``final_error``, the dead letter's ``reason``) or a log line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

from worker import errors
from worker.events import GradeEvent
from worker.redact import redact_text, register_secrets
from worker.settings import Destination, Settings
from worker.vendors import TABLE

#: the per-event credential fields of every vendor target: each ``SecretStr`` field of a target model
EVENT_SECRET_FIELDS: tuple[str, ...] = tuple(sorted({
    name
    for model in (row.target for row in TABLE)
    for name, info in model.model_fields.items()
    if "SecretStr" in str(info.annotation)
}))


def model_secrets(model: BaseModel) -> list[str]:
    """The values of every ``SecretStr`` field of ``model``."""
    values = [getattr(model, name) for name in type(model).model_fields]
    return [v.get_secret_value() for v in values if isinstance(v, SecretStr)]


def destination_secrets(destinations: Iterable[Destination]) -> list[str]:
    return [s for d in destinations for s in model_secrets(d)]


def event_secrets(event: GradeEvent) -> list[str]:
    return model_secrets(event.target)


def wire_secrets(wire: str) -> list[str]:
    """The per-event secrets of a stored event (also when it no longer validates)."""
    try:
        data: Any = json.loads(wire)
    except ValueError:
        return []
    target = data.get("target") if isinstance(data, dict) else None
    if not isinstance(target, dict):
        return []
    return [str(target[f]) for f in EVENT_SECRET_FIELDS if isinstance(target.get(f), str)]


#: up to this many destinations, every destination's credentials are also masked in everything this process
#: redacts; above it only those of the destination in use (every masked value is searched for in every
#: string logged: 10 000 destinations of their own keys were ~70 000 values, their encodings included)
PROCESS_WIDE_UP_TO = 100


def register_destinations(settings: Settings) -> None:
    """Mask the destinations' credentials in every redaction of this process from now on (when there are
    at most :data:`PROCESS_WIDE_UP_TO`; a destination's own are bound wherever it is used)."""
    dests = settings.destinations()
    if len(dests) <= PROCESS_WIDE_UP_TO:
        register_secrets(destination_secrets(dests.values()))


def scrub_error(exc: errors.GradeSyncError) -> errors.GradeSyncError:
    """``exc`` with its message, vendor message and excerpt masked (patterns and known values), in place.

    Called where a failure becomes a record, with the event's secrets bound (:func:`worker.redact.bind_secrets`).
    """
    exc.message = redact_text(exc.message)
    exc.args = (exc.message,)
    if isinstance(exc, errors.DeliveryError):
        if exc.vendor_message:
            exc.vendor_message = redact_text(exc.vendor_message)
        if exc.excerpt:
            exc.excerpt = redact_text(exc.excerpt)
    return exc
