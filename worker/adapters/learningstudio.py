"""Pearson LearningStudio: one student's grade on the gradebook item of an LTI content item.

Pearson's recommended flow, every request signed with OAuth 1.0a CMAC-AES in ``X-Authorization``:

1. ``GET /courses/{course}/items/{item}/gradebookItem`` → the gradebook item's GUID and
   ``pointsPossible`` (cached for a day in the shared cache, so all workers share one lookup);
2. ``GET /users/{learner}/courses/{course}/gradebookItems/{guid}/grade`` → 404 means no grade yet,
   200 a grade (possibly blank: deleted by the instructor, still there);
3. ``POST`` that URL to create the grade (201), or ``PUT`` it to update the grade (204).

POST is not idempotent: after a POST without an answer (timeout, dropped connection) the grade is read
again, and updated with PUT if the lost POST created it. A 401 is retried once, freshly signed (new
nonce and timestamp: a clock skew or a nonce collision), before it counts as permanent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import structlog

from worker import errors
from worker.adapters import http, oauth1_cmac
from worker.adapters.base import AdapterContext, DeliveryResult
from worker.adapters.http import error_for_status, json_number, json_or_none, send
from worker.events import GradeEvent
from worker.redact import redact
from worker.settings import Destination
from worker.vendors.learningstudio import LearningStudioDestination, LearningStudioTarget

log = structlog.get_logger(__name__)

ITEM_ROUTE = "ls.gradebook_item.get"
GRADE_GET_ROUTE = "ls.grade.get"
GRADE_POST_ROUTE = "ls.grade.post"
GRADE_PUT_ROUTE = "ls.grade.put"

#: the shared cache of course+item -> {id, pointsPossible}
CACHE_NAMESPACE = "ls-gradebook-item"
CACHE_TTL_SECONDS = 86_400
SUCCESS = frozenset({200, 201, 204})
#: keys of a JSON error body that may hold Pearson's "message text", in order of preference
_MESSAGE_KEYS = ("message", "error_description", "errorMessage", "error", "description", "detail", "errors")
_MESSAGE_LIMIT = 300


def path_segment(value: str) -> str:
    """One percent-encoded path segment, whatever the id contains (``.``/``..`` too)."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    return http.path_segment(value)


def item_path(target: LearningStudioTarget) -> str:
    return f"/courses/{path_segment(target.course_id)}/items/{path_segment(target.item_id)}/gradebookItem"


def grade_path(learner_id: str, course_id: str, gradebook_item_id: str) -> str:
    return (
        f"/users/{path_segment(learner_id)}/courses/{path_segment(course_id)}"
        f"/gradebookItems/{path_segment(gradebook_item_id)}/grade"
    )


def _message_of(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        for key in _MESSAGE_KEYS:
            found = _message_of(value.get(key))
            if found:
                return found
    if isinstance(value, list):
        parts = [m for m in (_message_of(v) for v in value) if m]
        return "; ".join(parts) or None
    return None


def vendor_message(response: httpx.Response, *, secret: str = "") -> str | None:
    """Pearson's error "message text": from a JSON body (``message``/``error``/…) or the plain text."""
    body = json_or_none(response)
    if isinstance(body, (dict, list, str)):
        text = _message_of(body)
    else:
        text = _message_of(" ".join(response.text.split()))
    if text is None:
        return None
    text = str(redact(text, extra_secrets=(secret,)))
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


@dataclass(frozen=True)
class GradebookItem:
    id: str
    points_possible: float | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "pointsPossible": self.points_possible}

    @classmethod
    def from_json(cls, value: object) -> GradebookItem | None:
        if not isinstance(value, dict):
            return None
        guid, points = value.get("id"), value.get("pointsPossible")
        if not isinstance(guid, (str, int)) or isinstance(guid, bool) or str(guid) == "":
            return None
        if not isinstance(points, (int, float)) or isinstance(points, bool):
            points = None
        return cls(str(guid), float(points) if points is not None else None)


def grade_body(event: GradeEvent, item: GradebookItem) -> dict[str, Any]:
    """``{"grade": {points, letterGrade, comments}}`` with only what the event has.

    ``points`` is ``score_given`` rescaled to the item's ``pointsPossible`` when the event's maximum
    differs, rounded to 2 decimals.
    """
    grade: dict[str, Any] = {}
    if event.score_given is not None:
        points = event.score_given
        possible, maximum = item.points_possible, event.score_maximum
        if possible is not None and possible > 0 and maximum is not None and maximum != possible:
            points = points * possible / maximum
        points = round(points, 2)
        grade["points"] = json_number(points)
    if event.letter_grade is not None:
        grade["letterGrade"] = event.letter_grade
    if event.comment is not None:
        grade["comments"] = event.comment
    return {"grade": grade}


def _grade_id(response: httpx.Response) -> str | None:
    body = json_or_none(response)
    grade = body.get("grade") if isinstance(body, dict) else None
    if isinstance(grade, dict) and grade.get("id") not in (None, ""):
        return str(grade["id"])
    return None


class LearningStudioAdapter(http.HttpAdapter[LearningStudioDestination]):
    """Delivers grades to one LearningStudio destination (thread-safe: no mutable state)."""

    vendor: ClassVar[str] = "learningstudio"
    destination_type = LearningStudioDestination

    def __init__(self, destination: Destination, ctx: AdapterContext) -> None:
        super().__init__(destination, ctx)
        try:
            self._secret = self._shared_secret()
        except errors.ConfigurationError:
            ctx.http.close()  # nothing keeps an adapter that failed to build
            raise

    def _shared_secret(self) -> str:
        """The shared secret, usable as an AES key (the settings refuse other lengths when reading the
        file; this guards a destination built without them)."""
        secret = self.credential("shared_secret")
        try:
            oauth1_cmac.secret_key(secret)
        except errors.ConfigurationError as exc:
            raise errors.ConfigurationError(f"destination {self.destination.name!r}: {exc.message}") from None
        return secret

    # -- the flow ---------------------------------------------------------------------------------
    def deliver(self, event: GradeEvent) -> DeliveryResult:
        target = event.target
        if not isinstance(target, LearningStudioTarget):
            raise errors.ConfigurationError(f"event for {event.destination!r} has a {target.vendor} target")
        if event.score_given is None and event.letter_grade is None and event.comment is None:
            raise errors.InvalidRequest("the event has no score, letter grade or comment to send")
        item, cached = self._gradebook_item(target)
        try:
            return self._deliver_to(event, target, item)
        except errors.NotFound:
            if not cached:
                raise
            # the cached GUID may be stale (the item was deleted and re-added): look it up once more
            self.ctx.cache.delete(CACHE_NAMESPACE, self._cache_key(target))
            log.info("ls.gradebook_item_stale", course_id=target.course_id, item_id=target.item_id)
            item, _ = self._gradebook_item(target)
            return self._deliver_to(event, target, item)

    def _deliver_to(
        self, event: GradeEvent, target: LearningStudioTarget, item: GradebookItem
    ) -> DeliveryResult:
        path = grade_path(event.learner_id, target.course_id, item.id)
        body = grade_body(event, item)
        existing = self._read_grade(path)
        if existing is None:
            return self._create(path, body)
        return self._update(path, body, existing)

    def _cache_key(self, target: LearningStudioTarget) -> str:
        return f"{self.destination.name}:{target.course_id}:{target.item_id}"

    def _gradebook_item(self, target: LearningStudioTarget) -> tuple[GradebookItem, bool]:
        """The item's GUID and points possible, and whether they came from the cache."""
        key = self._cache_key(target)
        cached = GradebookItem.from_json(self.ctx.cache.get_json(CACHE_NAMESPACE, key))
        if cached is not None:
            return cached, True
        response = self._exchange("GET", item_path(target), ITEM_ROUTE)
        if response.status_code != 200:
            raise self._error(response, ITEM_ROUTE)
        body = json_or_none(response)
        item = GradebookItem.from_json(body.get("gradebookItem") if isinstance(body, dict) else None)
        if item is None:
            raise self._error(response, ITEM_ROUTE, cls=errors.UnexpectedResponse)
        self.ctx.cache.set_json(CACHE_NAMESPACE, key, item.as_json(), CACHE_TTL_SECONDS)
        return item, False

    def _read_grade(self, path: str) -> str | None:
        """The current grade's id (``""`` when it has none), or None when there is no grade (404)."""
        response = self._exchange("GET", path, GRADE_GET_ROUTE)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._error(response, GRADE_GET_ROUTE)
        body = json_or_none(response)
        if not isinstance(body, dict) or not isinstance(body.get("grade"), dict):
            raise self._error(response, GRADE_GET_ROUTE, cls=errors.UnexpectedResponse)
        return _grade_id(response) or ""

    def _create(
        self, path: str, body: dict[str, Any], *, lost: errors.RetryableError | None = None
    ) -> DeliveryResult:
        try:
            response = self._exchange("POST", path, GRADE_POST_ROUTE, body)
        except (errors.VendorTimeout, errors.NetworkError) as exc:
            if lost is not None:
                raise  # the second POST is lost too: retry the whole delivery later
            # the POST may have created the grade: read it again rather than POST blindly
            log.info("ls.post_lost", error=type(exc).__name__)
            existing = self._read_grade(path)
            if existing is not None:
                return self._update(path, body, existing)
            return self._create(path, body, lost=exc)
        if response.status_code in SUCCESS:
            grade_id = _grade_id(response)
            location = response.headers.get("Location", "")
            detail = f"grade {grade_id}" if grade_id else location
            return DeliveryResult(response.status_code, "grade.post", detail)
        error = self._error(response, GRADE_POST_ROUTE)
        if response.status_code in (400, 409) and "already exist" in (error.vendor_message or "").lower():
            # created meanwhile (a lost POST landing late, or another worker): update it instead
            existing = self._read_grade(path)
            if existing is not None:
                return self._update(path, body, existing)
        raise error

    def _update(self, path: str, body: dict[str, Any], grade_id: str) -> DeliveryResult:
        response = self._exchange("PUT", path, GRADE_PUT_ROUTE, body)
        if response.status_code not in SUCCESS:
            raise self._error(response, GRADE_PUT_ROUTE)
        grade_id = _grade_id(response) or grade_id
        return DeliveryResult(response.status_code, "grade.put", f"grade {grade_id}" if grade_id else "")

    # -- HTTP --------------------------------------------------------------------------------------
    def _exchange(
        self, method: str, path: str, route: str, payload: dict[str, Any] | None = None
    ) -> httpx.Response:
        """Send a signed request; a 401 is retried once with a fresh signature (new nonce, timestamp)."""
        content = None if payload is None else http.compact_json(payload, ensure_ascii=True)
        response = self._send_signed(method, path, route, content)
        if response.status_code == 401:
            log.info("ls.unauthorized_resigning", route=route)
            response = self._send_signed(method, path, route, content)
        return response

    def _send_signed(self, method: str, path: str, route: str, content: bytes | None) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        request = self.ctx.http.build_request(method, path, content=content, headers=headers)
        request.headers["X-Authorization"] = oauth1_cmac.sign(
            method,
            str(request.url),
            content,
            consumer_key=self.destination.consumer_key,
            application_id=self.destination.application_id,
            secret=self._secret,
        )
        return send(self.ctx.http, request, route=route, observe=self.ctx.observe)

    def _error(
        self, response: httpx.Response, route: str, *, cls: type[errors.DeliveryError] | None = None
    ) -> errors.DeliveryError:
        message = vendor_message(response, secret=self._secret)
        error = error_for_status(response, route=route, vendor_message=message, cls=cls)
        if error.excerpt:  # error_for_status masks secret-looking text, not our shared secret echoed back
            error.excerpt = str(redact(error.excerpt, extra_secrets=(self._secret,)))
        return error
