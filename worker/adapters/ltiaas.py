"""LTIAAS: LTI Advantage AGS scores through the LTIAAS REST API.

One request per event: ``POST /api/lineitems/{line item URL, encodeURIComponent-ed}/scores`` with
``SERVICE-AUTH-V1 <api key>:<service key>`` (or ``LTIK-AUTH-V2 <api key>:<ltik>``) and the AGS score.
The score's ``timestamp`` is the event's ``occurred_at`` (ms, UTC), identical on every retry, so a late
retry can never overwrite a newer grade: the platform refuses it and we report :class:`Superseded`.

Errors come as ``{status, error, details: {message, description?, externalError?, externalStatus?…}}``.
When LTIAAS proxies an error of the LMS (``details.externalError``), the LMS's status decides whether it
is worth retrying; otherwise the HTTP status does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from worker import errors
from worker.adapters.ags import is_stale_refusal, score_body
from worker.adapters.base import DeliveryResult
from worker.adapters.http import (
    HttpAdapter,
    compact_json,
    error_class_for,
    error_for_status,
    is_throttle,
    json_or_none,
    path_segment,
    send,
)
from worker.events import GradeEvent
from worker.redact import redact_text
from worker.vendors.ltiaas import LtiaasDestination, LtiaasTarget

ROUTE = "score.post"

def score_path(line_item_url: str) -> str:
    """The scores path: the whole line item URL as ONE path segment (``encodeURIComponent``)."""
    return f"/api/lineitems/{path_segment(line_item_url)}/scores"


def _details(body: object) -> dict[str, Any]:
    if isinstance(body, dict) and isinstance(body.get("details"), dict):
        return dict(body["details"])
    return {}


def _vendor_message(body: object) -> str | None:
    """``details.message: details.description`` (else the top-level ``error``), redacted."""
    details = _details(body)
    text = ": ".join(str(details[k]) for k in ("message", "description") if details.get(k) not in (None, ""))
    if not text and isinstance(body, dict) and body.get("error"):
        text = str(body["error"])
    if details.get("externalError") is True:
        upstream = _upstream_status(details)
        text = f"{text} (LMS error{f' HTTP {upstream}' if upstream else ''})".strip()
    return redact_text(text) or None


def _upstream_status(details: dict[str, Any]) -> int | None:
    """The LMS's own status of a proxied error, when the body gives one."""
    for key in ("externalStatus", "externalStatusCode", "statusCode", "status"):
        value = details.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
        if isinstance(value, str) and value.isdigit() and 100 <= int(value) <= 599:
            return int(value)
    return None


def classify(response: httpx.Response) -> errors.DeliveryError:
    """The project error for a non-2xx answer of the scores endpoint."""
    status = response.status_code
    body = json_or_none(response)
    message = _vendor_message(body)
    details = _details(body)
    effective = status
    if details.get("externalError") is True:
        effective = _upstream_status(details) or status
    text = " ".join(str(details.get(k) or "") for k in ("message", "description"))
    if isinstance(body, dict) and not text.strip():
        text = str(body.get("error") or "")
    if effective != status and is_throttle(effective, response.headers, text):  # the LMS throttled LTIAAS
        return error_for_status(response, route=ROUTE, vendor_message=message, cls=errors.RateLimited)
    if is_stale_refusal(effective, text):
        return error_for_status(response, route=ROUTE, vendor_message=message, cls=errors.Superseded)
    if 300 <= status < 400 or status < 200:
        return error_for_status(response, route=ROUTE, vendor_message=message, cls=errors.UnexpectedResponse)
    return error_for_status(response, route=ROUTE, vendor_message=message, cls=error_class_for(effective))


class LtiaasAdapter(HttpAdapter[LtiaasDestination]):
    """Deliver grade events as AGS scores through LTIAAS."""

    vendor: ClassVar[str] = "ltiaas"
    destination_type = LtiaasDestination

    def _authorization(self, target: LtiaasTarget) -> str:
        api_key = self.credential("api_key")
        if target.service_key is not None:
            return f"SERVICE-AUTH-V1 {api_key}:{target.service_key.get_secret_value()}"
        if target.ltik is not None:
            return f"LTIK-AUTH-V2 {api_key}:{target.ltik.get_secret_value()}"
        raise errors.ConfigurationError("the event's target has neither a service_key nor an ltik")

    def build_request(self, event: GradeEvent) -> httpx.Request:
        target = event.target
        if not isinstance(target, LtiaasTarget):
            raise errors.ConfigurationError(f"event {event.event_id} does not target an ltiaas line item")
        return self.ctx.http.build_request(
            "POST",
            score_path(target.line_item_id),
            content=compact_json(score_body(event)),
            headers={
                "Authorization": self._authorization(target),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )

    def deliver(self, event: GradeEvent) -> DeliveryResult:
        request = self.build_request(event)
        response = send(self.ctx.http, request, route=ROUTE, observe=self.ctx.observe)
        if 200 <= response.status_code < 300:  # 204 documented; AGS: any 2xx is success
            line_item = event.target.item_key()
            return DeliveryResult(status=response.status_code, action=ROUTE, detail=redact_text(line_item))
        raise classify(response)
