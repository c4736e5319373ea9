"""The audit's verdict on one gradebook cell: what was delivered against what the vendor holds now.

Pure and table-tested (``tests/unit/test_audit_compare.py``). Scores are compared as fractions of their
maximum when both sides have one (an LTI result's ``resultScore``/``resultMaximum``, LearningStudio's
points on ``pointsPossible``: the scale may differ from the delivered ``score_maximum``), else as given.
A comment is compared only when the vendor's read returns comments (Blackboard's results do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from worker.events import GradeEvent
from worker.readback.base import Found


class Verdict(StrEnum):
    MATCH = "match"
    DRIFTED = "drifted"
    MISSING = "missing"
    UNREADABLE = "unreadable"
    ERROR = "error"


VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)
#: fractions this close are equal (LearningStudio rounds rescaled points to 2 decimals)
RELATIVE_TOLERANCE = 1e-3
ABSOLUTE_TOLERANCE = 0.006


@dataclass(frozen=True)
class Delivered:
    score: float | None
    maximum: float | None
    comment: str | None

    @classmethod
    def of(cls, event: GradeEvent) -> Delivered:
        return cls(event.score_given, event.score_maximum, event.comment)

    def as_json(self) -> dict[str, Any]:
        return {"score": self.score, "maximum": self.maximum, "comment": self.comment}


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str = ""


def _close(a: float, b: float, scale: float = 1.0) -> bool:
    return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE * scale)


def _scores_differ(delivered: Delivered, found: Found) -> str:
    assert delivered.score is not None and found.score is not None
    if delivered.maximum and found.maximum:
        mine, theirs = delivered.score / delivered.maximum, found.score / found.maximum
        if not _close(mine, theirs, 1.0 / max(found.maximum, 1.0)):
            return (f"score {found.score:g}/{found.maximum:g} held, {delivered.score:g}/{delivered.maximum:g} "
                    "delivered")
        return ""
    if not _close(delivered.score, found.score):
        return f"score {found.score:g} held, {delivered.score:g} delivered"
    return ""


def _norm(comment: str | None) -> str:
    return (comment or "").strip()


def compare(delivered: Delivered, found: Found | None) -> Outcome:
    """``match``, ``drifted`` or ``missing`` (``unreadable`` and ``error`` come from the read itself)."""
    if found is None:
        return Outcome(Verdict.MISSING, "no grade held")
    if found.score is None:
        if delivered.score is not None:
            return Outcome(Verdict.MISSING, "the grade was cleared")
    elif delivered.score is None:
        return Outcome(Verdict.DRIFTED, f"score {found.score:g} held, none delivered")
    else:
        why = _scores_differ(delivered, found)
        if why:
            return Outcome(Verdict.DRIFTED, why)
    if found.comment_returned and _norm(found.comment) != _norm(delivered.comment):
        if delivered.score is None and found.score is None and not _norm(found.comment):
            return Outcome(Verdict.MISSING, "the comment was cleared")
        return Outcome(Verdict.DRIFTED, "the comment differs")
    if found.score is None and delivered.score is None and not found.comment_returned:
        return Outcome(Verdict.MATCH, "nothing to compare but the cell exists")
    return Outcome(Verdict.MATCH)
