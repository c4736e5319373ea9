"""Thought Industries: record an assignment's external activity.

``POST /incoming/v2/assignmentExternalActivity`` with ``Authorization: Bearer <api key>`` and the
attributes as a JSON body (``mode = "json"``) or as an HS256 JWT signed with the API key in the ``jwt``
query parameter (``mode = "jwt"``, no body).

Success is a **302** to ``returnUrl`` (or ``/learn``), never followed: following it would land on an
HTML page (or a login page) answering 200, which is why a 200 is *not* success here. Failures: 400
``{"errors": [...]}`` (permanent), 429 with ``Retry-After`` and a body ``retryAfter``, 5xx.

The endpoint is not idempotent (every accepted call records another activity): deduplication is the
caller's job, per event id.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import httpx
from jwt import PyJWS
from jwt.algorithms import HMACAlgorithm

from worker import errors
from worker.adapters.base import DeliveryResult
from worker.adapters.http import (
    HttpAdapter,
    compact_json,
    error_for_status,
    json_number,
    json_or_none,
    parse_retry_after,
    send,
)
from worker.events import ActivityProgress, GradeEvent
from worker.redact import redact_text
from worker.vendors.thoughtindustries import ThoughtIndustriesDestination, ThoughtIndustriesTarget

PATH = "/incoming/v2/assignmentExternalActivity"
ROUTE = "activity.post"
_COMPLETED = {ActivityProgress.SUBMITTED, ActivityProgress.COMPLETED}


class _VendorKeyHMAC(HMACAlgorithm):
    """HS256 without PyJWT's short-key warning: the key is the vendor's API key, not ours to choose."""

    def check_key_length(self, key: bytes) -> str | None:
        return None


def _signer() -> PyJWS:
    jws = PyJWS()
    jws.unregister_algorithm("HS256")
    jws.register_algorithm("HS256", _VendorKeyHMAC(HMACAlgorithm.SHA256))
    return jws


_JWS = _signer()


def sign_hs256(claims: dict[str, Any], key: str) -> str:
    """A compact HS256 JWT of ``claims`` (``{"alg": "HS256", "typ": "JWT"}``)."""
    payload = compact_json(claims)
    return _JWS.encode(payload, key, algorithm="HS256")


def activity_attributes(event: GradeEvent) -> dict[str, Any]:
    """The activity's attributes, in the documented order."""
    target = event.target
    if not isinstance(target, ThoughtIndustriesTarget):
        raise errors.ConfigurationError(f"event {event.event_id} has no Thought Industries assignment target")
    attrs: dict[str, Any] = {
        "status": "completed" if event.activity_progress in _COMPLETED else "incomplete",
        "assignmentId": str(target.assignment_id),
        "learnerId": event.learner_id,
    }
    if event.score_given is not None and event.score_maximum:
        attrs["grade"] = json_number(round(event.score_given / event.score_maximum * 100, 2))
    if event.comment is not None:
        attrs["gradeFeedback"] = event.comment
    return attrs


def _vendor_message(body: object) -> str | None:
    """The ``errors`` list joined, else ``message``/``error``; redacted."""
    if not isinstance(body, dict):
        return None
    items = body.get("errors")
    if isinstance(items, list) and items:
        text = "; ".join(
            str(i.get("message", i)) if isinstance(i, dict) else str(i) for i in items if i is not None
        )
    elif isinstance(items, str) and items:
        text = items
    else:
        text = str(body.get("message") or body.get("error") or "")
    return redact_text(text) or None


class ThoughtIndustriesAdapter(HttpAdapter[ThoughtIndustriesDestination]):
    """Deliver grade events as Thought Industries assignment external activities."""

    vendor: ClassVar[str] = "thoughtindustries"
    destination_type = ThoughtIndustriesDestination

    def build_request(self, event: GradeEvent, *, now: float | None = None) -> httpx.Request:
        key = self.credential("api_key")
        attrs = activity_attributes(event)
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        if self.destination.mode == "jwt":
            claims = {**attrs, "iat": int(time.time() if now is None else now)}
            token = sign_hs256(claims, key)
            return self.ctx.http.build_request("POST", PATH, params={"jwt": token}, headers=headers)
        headers["Content-Type"] = "application/json"
        return self.ctx.http.build_request("POST", PATH, content=compact_json(attrs), headers=headers)

    def deliver(self, event: GradeEvent) -> DeliveryResult:
        request = self.build_request(event)
        response = send(self.ctx.http, request, route=ROUTE, observe=self.ctx.observe)
        status = response.status_code
        if status == 302:
            return DeliveryResult(status=302, action=ROUTE, detail=response.headers.get("Location", ""))
        body = json_or_none(response)
        message = _vendor_message(body)
        if status < 400:  # a 200 is the page a followed redirect (or a login) would show: not success
            raise error_for_status(
                response,
                route=ROUTE,
                vendor_message=message or f"expected 302 Found, got {status}",
                cls=errors.UnexpectedResponse,
            )
        error = error_for_status(response, route=ROUTE, vendor_message=message)
        if status == 429 and error.retry_after is None and isinstance(body, dict):
            hint = body.get("retryAfter")  # the body's hint, when the header is absent
            if isinstance(hint, (int, float, str)) and not isinstance(hint, bool):
                error.retry_after = parse_retry_after(str(hint))
        raise error
