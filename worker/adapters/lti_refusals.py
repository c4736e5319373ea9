"""The ``lti_ags`` error table: every documented refusal of a score by a real platform, what it becomes in
:mod:`worker.errors`, and what an operator must do about it (``DeliveryError.action``, which ends the
dead letter's reason). Sources: ``/work/shared/reference/lms-behaviour.md`` (canvas-lms
``app/controllers/lti/ims/scores_controller.rb``, Moodle ``gradebookservices/…/scores.php``, D2L docs).

A refusal is matched on its status and the platform's own words: the error body's message, else the
reason phrase (Moodle puts its message in the status line, e.g. ``403 Line item does not exist.``; over
HTTP/2 there is none, so a table row never *needs* the words when the status alone decides).

Throttles (any status) and stale-timestamp refusals (409; 400 naming the timestamp) are decided before
this table: :func:`worker.adapters.http.throttled`, :func:`worker.adapters.ags.is_stale_refusal`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from worker import errors
from worker.adapters.ags import is_stale_refusal
from worker.adapters.http import error_class_for, error_for_status, throttled
from worker.adapters.lti_lineitems import message_of

ROUTE = "score.post"

RELINK = ("re-link the item: the line item was deleted or is not this tool's — point the event's target at "
          "the current line item (or at its lineitems URL and resource link, to find or create it again), then "
          "requeue the dead letter")


@dataclass(frozen=True)
class Refusal:
    """One row: answers with one of ``statuses`` whose words match ``words`` become ``cls`` + ``action``."""

    name: str
    statuses: tuple[int, ...]
    words: re.Pattern[str] | None
    cls: type[errors.DeliveryError]
    action: str


def _w(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


#: first match wins; a row without words matches on the status alone
TABLE: tuple[Refusal, ...] = (
    Refusal("unpublished", (400, 403, 422), _w(r"unpublished"), errors.NotReady,
            "publish the assignment in the LMS (the score is retried for a few hours, then dead-lettered), "
            "then requeue the dead letter"),
    Refusal("concluded", (403, 404, 422), _w(r"concluded|soft.?concluded|course.*(ended|is over|closed)"),
            errors.Forbidden,
            "the course has concluded: re-open it (or extend its end date) in the LMS and requeue the dead "
            "letter, or discard it if the grade no longer matters"),
    Refusal("not_a_student", (400, 403, 404, 422),
            _w(r"not found in course|is not a student|not enrolled|user could not be found|"
               r"user in requested score does not exist|not gradable"), errors.NotFound,
            "enrol the learner as a student in the course (or fix the learner's LTI user id), then requeue "
            "the dead letter"),
    Refusal("score_maximum", (400, 422), _w(r"scoremaximum"), errors.InvalidRequest,
            "send a score_maximum (>= 0) with every score_given: fix the producer, then republish the grade"),
    Refusal("attempts", (422,), _w(r"maximum number of allowed attempts"), errors.InvalidRequest,
            "allow more attempts on the assignment in the LMS (or send regrades with the Canvas submission "
            "extension: new_submission false), then requeue the dead letter"),
    Refusal("moodle_incorrect_score", (400,), _w(r"incorrect score received"), errors.InvalidRequest,
            "Moodle refused the score as sent: check the learner can be graded in the course (role) and the "
            "score's fields, then requeue the dead letter"),
    Refusal("line_item_gone", (403, 404), _w(r"line ?item (does not exist|not found|.*(deleted|inactive))"),
            errors.NotFound, RELINK),
    Refusal("not_found", (404,), None, errors.NotFound, RELINK),
)


def words_of(response: httpx.Response) -> str:
    """The platform's own words: the error body's message and the reason phrase."""
    return " ".join(filter(None, (message_of(response), response.reason_phrase)))


def match(status: int, words: str) -> Refusal | None:
    """The table's row for an answer (pure: table-tested)."""
    for row in TABLE:
        if status in row.statuses and (row.words is None or row.words.search(words)):
            return row
    return None


def is_line_item_gone(response: httpx.Response) -> bool:
    """A 404, or Moodle's 403 ``Line item does not exist.``: the (cached) line item URL is no longer good."""
    if response.status_code == 404:
        return True
    row = match(response.status_code, words_of(response)) if response.status_code == 403 else None
    return row is not None and row.name == "line_item_gone"


def not_a_token_problem(response: httpx.Response) -> bool:
    """A 401/403 that a fresh token would not change: a throttle (self-hosted Canvas answers 403), or a
    403 the table explains (a line item that is not this tool's, a concluded course, an unpublished
    assignment)."""
    if throttled(response):
        return True
    return response.status_code == 403 and match(403, words_of(response)) is not None


def classify(response: httpx.Response) -> errors.DeliveryError:
    """The project error for a non-success answer of the scores endpoint (401/403 token refusals are
    handled before, by the adapter)."""
    status = response.status_code
    message = message_of(response)
    if throttled(response):
        return error_for_status(response, route=ROUTE, vendor_message=message)
    if is_stale_refusal(status, message or ""):
        return error_for_status(response, route=ROUTE, vendor_message=message, cls=errors.Superseded)
    if status < 400:
        return error_for_status(response, route=ROUTE, vendor_message=message, cls=errors.UnexpectedResponse)
    row = match(status, words_of(response))
    if row is None:
        return error_for_status(response, route=ROUTE, vendor_message=message, cls=error_class_for(status))
    error = error_for_status(response, route=ROUTE, vendor_message=message or response.reason_phrase or None,
                             cls=row.cls)
    error.action = row.action
    return error
