"""Reading a grade back: what the audit (:mod:`worker.audit`) needs from one LMS vendor.

A reader is built once per destination (like an adapter, with one pooled HTTP client) and answers
:meth:`Reader.read_grade` for one delivered event: the grade the gradebook holds now for the event's
learner and item (:class:`Found`), ``None`` when there is none, or it raises — :class:`Unreadable` when
the vendor documents no read for it, a :class:`~worker.errors.DeliveryError` subclass when the read
failed (mapped at the HTTP boundary exactly as deliveries are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from worker import errors
from worker.adapters.base import AdapterContext
from worker.events import GradeEvent
from worker.settings import Destination


class Unreadable(errors.GradeSyncError):
    """The vendor documents no read of this grade."""


@dataclass(frozen=True)
class Found:
    """What the gradebook holds now. ``score`` is on the scale of ``maximum`` (None: no maximum returned,
    the score is in the delivered scale); ``comment_returned``: the vendor's read includes the comment
    (Blackboard's results do not)."""

    score: float | None
    maximum: float | None = None
    comment: str | None = None
    comment_returned: bool = False
    #: vendor details worth showing (a timestamp, a state, a grade id); never a secret
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score": self.score, "maximum": self.maximum}
        if self.comment_returned:
            out["comment"] = self.comment
        out.update(self.detail)
        return out


class Reader(Protocol):
    """One vendor's read of a delivered grade."""

    vendor: ClassVar[str]

    def read_grade(self, event: GradeEvent) -> Found | None:
        """The grade held now for the event's learner and item (None: none), or raise."""
        ...

    def close(self) -> None: ...


class ReaderFactory(Protocol):
    def __call__(self, destination: Destination, ctx: AdapterContext) -> Reader: ...


def number(value: object) -> float | None:
    """A JSON number as float (None for null, a boolean or anything else)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
