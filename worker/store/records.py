"""An event's record as the ledger keeps it: its states (:class:`EventState`), the record read back
(:class:`EventRecord`, decrypted on first use) and what the publisher registers (:class:`NewEvent`).

Reading only: every write to a record is a named operation of :class:`worker.store.ledger.Ledger`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from worker.crypto import ENV, UndecryptableRecord, WireCipher, is_encrypted


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
#: the states of an event waiting for a message (the stranded-event sweeper may give it a new one)
WAITING = (EventState.QUEUED, EventState.RETRYING)
#: the states an event ends in (until a dead letter is requeued)
TERMINAL = (EventState.SUCCEEDED, EventState.SUPERSEDED, EventState.DEAD_LETTERED)


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
