"""Edlink API v2: a learner's submission (User API) and its grade (Graph API).

An event is delivered in up to two requests:

1. **submit**, when the target carries the learner's ``person_token`` and the event has attachments:
   ``POST /api/v2/my/classes/{class}/assignments/{assignment}/submit?$idempotency=<event_id>``. The
   idempotency key is the event id, so a retry (even after a lost answer) replays the first response
   instead of adding a second attempt.
2. **grade**, when the event carries a score: ``PATCH /api/v2/graph/classes/{class}/assignments/
   {assignment}/submissions/{learner_id}`` with the integration token (naturally idempotent).

Answers are ``{"$request", "$data", "$warnings"?}``; failures ``{"$request", "$errors": [{code,
message}]}`` (older docs: ``$code``/``$description``). The HTTP status decides first.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
import structlog

from worker import errors
from worker.adapters.base import DeliveryResult
from worker.adapters.http import (
    HttpAdapter,
    compact_json,
    error_for_status,
    json_number,
    json_or_none,
    path_segment,
    send,
)
from worker.events import FileAttachment, GradeEvent, LinkAttachment, TextAttachment
from worker.redact import redact_text
from worker.vendors.edlink import EdlinkDestination, EdlinkTarget

log = structlog.get_logger(__name__)

SUBMIT_ROUTE = "submission.submit"
GRADE_ROUTE = "submission.grade"


def attachment_body(attachment: LinkAttachment | TextAttachment | FileAttachment) -> dict[str, Any]:
    """One attachment as Edlink's Attempt expects it."""
    if isinstance(attachment, LinkAttachment):
        out: dict[str, Any] = {"type": "link", "url": attachment.url}
    elif isinstance(attachment, TextAttachment):
        out = {"type": "text", "text": attachment.text}
    else:
        data = list(attachment.data)
        return {"type": "file", "title": attachment.title, "size": attachment.size, "data": data}
    if attachment.title is not None:
        out["title"] = attachment.title
    return out


def grade_body(event: GradeEvent) -> dict[str, Any]:
    """The Graph PATCH body: only the fields the event has."""
    body: dict[str, Any] = {}
    if event.score_given is not None:
        body["grade_points"] = json_number(event.score_given)
    if event.comment is not None:
        body["grade_comment"] = event.comment
    return body


def errors_message(body: object) -> str | None:
    """``code: message; …`` from ``$errors`` (or the older ``$code``/``$description``), redacted."""
    if not isinstance(body, dict):
        return None
    parts: list[str] = []
    items = body.get("$errors")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                code, text = item.get("code"), item.get("message")
                parts.append(": ".join(str(p) for p in (code, text) if p not in (None, "")))
            elif item is not None:
                parts.append(str(item))
    if not any(parts):
        code, text = body.get("$code"), body.get("$description")
        parts = [": ".join(str(p) for p in (code, text) if p not in (None, ""))]
    joined = "; ".join(p for p in parts if p)
    return redact_text(joined) if joined else None


def _log_warnings(body: object, route: str) -> None:
    if not isinstance(body, dict):
        return
    warnings = body.get("$warnings")
    if not warnings:
        return
    items = warnings if isinstance(warnings, list) else [warnings]
    clean = [
        {"code": w.get("code"), "message": redact_text(str(w.get("message", "")))}
        if isinstance(w, dict)
        else {"code": None, "message": redact_text(str(w))}
        for w in items
    ]
    log.warning(
        "edlink.warnings",
        route=route,
        request_id=body.get("$request"),
        codes=[w["code"] for w in clean],
        warnings=clean,
    )


class EdlinkAdapter(HttpAdapter[EdlinkDestination]):
    """Deliver grade events (and the learner's submission) to Edlink."""

    vendor: ClassVar[str] = "edlink"
    destination_type = EdlinkDestination

    # -- requests --------------------------------------------------------------------------------
    def submit_request(self, event: GradeEvent, target: EdlinkTarget) -> httpx.Request:
        assert target.person_token is not None
        path = (
            f"/api/v2/my/classes/{path_segment(target.class_id)}/assignments/{path_segment(target.assignment_id)}"
            f"/submit?$idempotency={event.event_id}"
        )
        body = {"attachments": [attachment_body(a) for a in event.attachments]}
        return self._request("POST", path, body, target.person_token.get_secret_value())

    def grade_request(self, event: GradeEvent, target: EdlinkTarget) -> httpx.Request:
        token = self.credential("integration_token")
        path = (
            f"/api/v2/graph/classes/{path_segment(target.class_id)}/assignments/{path_segment(target.assignment_id)}"
            f"/submissions/{path_segment(event.learner_id)}"
        )
        return self._request("PATCH", path, grade_body(event), token)

    def _request(self, method: str, path: str, body: dict[str, Any], token: str) -> httpx.Request:
        content = compact_json(body)
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        return self.ctx.http.build_request(method, path, content=content, headers=headers)

    def _call(self, request: httpx.Request, route: str) -> tuple[int, str]:
        """Send; return (status, ``$request`` id) on success, raise the project error otherwise."""
        response = send(self.ctx.http, request, route=route, observe=self.ctx.observe)
        body = json_or_none(response)
        _log_warnings(body, route)
        status = response.status_code
        message = errors_message(body)
        if 200 <= status < 300:
            if not isinstance(body, dict) or body.get("$data") is None:
                raise error_for_status(
                    response,
                    route=route,
                    vendor_message=message or "2xx answer without $data",
                    cls=errors.UnexpectedResponse,
                )
            return status, str(body.get("$request") or "")
        cls = errors.UnexpectedResponse if status < 400 else None
        raise error_for_status(response, route=route, vendor_message=message, cls=cls)

    # -- the Adapter protocol --------------------------------------------------------------------
    def deliver(self, event: GradeEvent) -> DeliveryResult:
        target = event.target
        if not isinstance(target, EdlinkTarget):
            raise errors.ConfigurationError(f"event {event.event_id} does not target an edlink assignment")
        submit = bool(event.attachments) and target.person_token is not None
        grade = event.score_given is not None
        if event.attachments and target.person_token is None:
            log.warning(
                "edlink.attachments_ignored",
                event_id=str(event.event_id),
                reason="the target has no person_token: a submission needs the learner's own token",
            )
        if not submit and not grade:
            raise errors.InvalidRequest(
                "nothing to send to Edlink: the event has no score, and no attachments submittable "
                "with a person_token"
            )
        # both requests are built first: a missing credential fails before anything is sent
        calls: list[tuple[str, httpx.Request, str]] = []
        if submit:
            calls.append(("submit", self.submit_request(event, target), SUBMIT_ROUTE))
        if grade:
            calls.append(("grade", self.grade_request(event, target), GRADE_ROUTE))
        done: list[str] = []
        status = 0
        for name, request, route in calls:
            status, request_id = self._call(request, route)
            done.append(f"{name}={request_id}")
        action = "submit+grade" if submit and grade else "submit" if submit else "grade"
        return DeliveryResult(status=status, action=action, detail=" ".join(done))
