"""The IMS LTI Assignment and Grade Services score, shared by every adapter that posts AGS scores
(through a hosted LTI service or straight to the platform).

The score's ``timestamp`` is the event's ``occurred_at`` (ms, UTC), identical on every retry, so a late
retry can never overwrite a newer grade: platforms refuse an older timestamp, with a 409 (Moodle) or a
400 whose text says how the timestamps compare (Canvas, Open edX) — :func:`is_stale_refusal`.
"""

from __future__ import annotations

import re
from typing import Any

from worker.adapters.http import json_number
from worker.events import GradeEvent

#: a 400 naming the timestamp is a stale-score refusal when it also says how the timestamps compare
STALE_WORDS = re.compile(
    r"earlier|later|older|newer|already|stale|before|after|exist|order|supersed|recent|greater|less|conflict",
    re.IGNORECASE,
)


def score_body(event: GradeEvent) -> dict[str, Any]:
    """The AGS score of the event, in the wire's key order."""
    body: dict[str, Any] = {
        "userId": event.learner_id,
        "activityProgress": event.activity_progress.value,
        "gradingProgress": event.grading_progress.value,
    }
    if event.score_given is not None and event.score_maximum is not None:
        body["scoreGiven"] = json_number(event.score_given)
        body["scoreMaximum"] = json_number(event.score_maximum)
    if event.comment is not None:
        body["comment"] = event.comment
    body["timestamp"] = event.occurred_at_iso
    return body


def is_stale_refusal(status: int, text: str) -> bool:
    """A 409, or a 400 whose message names the timestamp and says how the timestamps compare."""
    return status == 409 or (status == 400 and "timestamp" in text.lower() and bool(STALE_WORDS.search(text)))
