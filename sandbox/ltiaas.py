"""A faithful LTIAAS simulator: ``POST /api/lineitems/:lineItemID/scores`` (and ``GET`` of the scores).

Strict like the real service:

* ``Authorization`` must be ``LTIK-AUTH-V2 <api key>:<ltik>`` or ``SERVICE-AUTH-V1 <api key>:<service
  key>``; ``Bearer`` is refused for scores. Refusals are LTIAAS's exact 401 body.
* ``:lineItemID`` is the line item URL ``encodeURIComponent``-ed into ONE path segment: a raw ``/`` in
  it does not match the route (404). The decoded id must be an ``http(s)`` URL; one containing
  ``/unknown`` is a line item the LMS does not know (404).
* The body is an AGS score (``userId``, ``activityProgress``, ``gradingProgress``, ``scoreGiven`` ≥ 0
  with ``scoreMaximum`` > 0, ``comment``, ``timestamp`` ISO 8601 with a timezone; server time when
  absent). The latest score per (line item, user) is kept; a timestamp **not newer** than the stored one
  is refused with 409 (as Moodle does), so a stale retry can never overwrite a newer grade.
* Success is ``204 No Content``.

``state()["scores"]`` lists the latest score of each (line item, user): ``{lineItem, userId, scoreGiven,
scoreMaximum, comment, activityProgress, gradingProgress, timestamp, receivedAt, auth}``.

Switches (``POST /_sandbox/config``): ``{"external_error": {"status": 503, "http_status": 502,
"times": 1, "message": "..."}}`` makes the next score POST(s) fail as an error of the LMS proxied by
LTIAAS (``details.externalError: true``, ``externalStatus``); ``http_status`` defaults to ``status``.
``{"external_error": null}`` clears it. ``{"api_keys": ["…", …]}``: more API keys accepted besides the
demo one (each tenant with its own LTIAAS account, as in the tenants bench).
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from sandbox.base import Request, Response, SandboxApp, demo_score

ACTIVITY_PROGRESS = ("Initialized", "Initiated", "Started", "InProgress", "Submitted", "Completed")
GRADING_PROGRESS = ("FullyGraded", "Pending", "PendingManual", "Failed", "NotReady")

_LTIK_401 = ("INVALID_LTIK_AUTH_AUTHORIZATION_HEADER", "Invalid or expired ltik.")
_SERVICE_401 = ("INVALID_SERVICE_AUTH_AUTHORIZATION_HEADER", "Invalid or expired service key.")
_BEARER_401 = (
    "UNSUPPORTED_AUTHENTICATION_METHOD",
    "This endpoint accepts LTIK-AUTH-V2 or SERVICE-AUTH-V1 authentication, not Bearer.",
)
_NUMBER = (int, float)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _parse_timestamp(value: object) -> datetime | None:
    """An ISO 8601 date-time with a timezone, else None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class LtiaasSandbox(SandboxApp):
    vendor = "ltiaas"
    DEMO_CREDENTIALS: ClassVar[dict[str, str]] = {
        "api_key": "demo-ltiaas-api-key", "service_key": "demo-service-key", "ltik": "demo-ltik"}
    DEMO_DESTINATION = "demo-ltiaas"

    @classmethod
    def demo_event(cls, i: int, urls: Mapping[str, str]) -> dict[str, Any]:
        return {**demo_score(i), "learner_id": f"lti-user-{i}",
                "target": {"line_item_id": "https://lms.example/api/lti/courses/7/line_items/1",
                           "service_key": cls.DEMO_CREDENTIALS["service_key"]}}

    def __init__(self, api_key: str, service_key: str, ltik: str) -> None:
        self.api_key = api_key
        self.service_key = service_key
        self.ltik = ltik
        #: line item URL -> user id -> the stored score
        self.scores: dict[str, dict[str, dict[str, Any]]] = {}
        self.accepted = 0
        self.refused_stale = 0
        self.external_error: dict[str, Any] | None = None
        #: more accepted API keys: one LTIAAS account per tenant (``configure(api_keys=[...])``)
        self.tenant_keys: frozenset[str] = frozenset()
        super().__init__()

    # -- SandboxApp ------------------------------------------------------------------------------
    def register(self) -> None:
        self.route("POST", r"/api/lineitems/(?P<id>[^/]+)/scores")(self._post_score)
        self.route("GET", r"/api/lineitems/(?P<id>[^/]+)/scores")(self._get_scores)

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "scores": [
                    {"lineItem": line_item, **json.loads(json.dumps(record))}
                    for line_item, users in sorted(self.scores.items())
                    for _, record in sorted(users.items())
                ],
                "accepted": self.accepted,
                "refused_stale": self.refused_stale,
                "external_error": self.external_error,
            }

    def clear(self) -> None:
        with self.lock:
            self.scores.clear()
            self.accepted = 0
            self.refused_stale = 0
            self.external_error = None

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - {"external_error", "api_keys"}
        if unknown:
            raise ValueError(f"unknown ltiaas sandbox switch(es): {', '.join(sorted(unknown))}")
        if "api_keys" in spec:
            keys = spec["api_keys"]
            if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
                raise ValueError("api_keys must be a list of non-empty strings")
            with self.lock:
                self.tenant_keys = frozenset(keys)
        if "external_error" in spec:
            ext = spec["external_error"]
            if ext is None:
                with self.lock:
                    self.external_error = None
            else:
                if not isinstance(ext, dict) or not isinstance(ext.get("status"), int):
                    raise ValueError("external_error needs an integer 'status' (the LMS's status)")
                status = int(ext["status"])
                entry = {
                    "status": status,
                    "http_status": int(ext.get("http_status") or status),
                    "times": int(ext.get("times", 1)),
                    "message": str(ext.get("message", "The LMS refused the request.")),
                }
                with self.lock:
                    self.external_error = entry
        return {"external_error": self.external_error, "api_keys": len(self.tenant_keys)}

    def error_body(self, status: int, message: str) -> Any:
        return {"status": status, "error": _reason(status), "details": {"message": message}}

    # -- helpers ---------------------------------------------------------------------------------
    def _error(self, status: int, message: str, description: str | None = None, **extra: Any) -> Response:
        details: dict[str, Any] = {"message": message}
        if description is not None:
            details["description"] = description
        details.update(extra)
        return Response(status, {"status": status, "error": _reason(status), "details": details})

    def _authenticate(self, req: Request) -> tuple[str, Response | None]:
        """(scheme, refusal or None)."""
        header = (req.header("authorization") or "").strip()
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.upper()
        if scheme == "BEARER":
            return scheme, self._error(401, *_BEARER_401)
        if scheme not in ("LTIK-AUTH-V2", "SERVICE-AUTH-V1"):
            return scheme, self._error(401, *_LTIK_401)
        key, sep, token = credentials.strip().partition(":")
        messages = _LTIK_401 if scheme == "LTIK-AUTH-V2" else _SERVICE_401
        if not sep or not (hmac.compare_digest(key.encode(), self.api_key.encode()) or key in self.tenant_keys):
            return scheme, self._error(401, messages[0], "Invalid API key")
        expected = self.ltik if scheme == "LTIK-AUTH-V2" else self.service_key
        if not hmac.compare_digest(token.encode(), expected.encode()):
            return scheme, self._error(401, *messages)
        return scheme, None

    def _line_item(self, raw_id: str) -> tuple[str, Response | None]:
        line_item = unquote(raw_id)
        parts = urlsplit(line_item)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return line_item, self._error(
                400, "INVALID_LINEITEM_ID", "The line item ID must be the URL-encoded line item URL."
            )
        if "/unknown" in line_item:
            return line_item, self._error(404, "LINEITEM_NOT_FOUND", "Line item not found.")
        return line_item, None

    @staticmethod
    def _body(req: Request) -> Any:
        """The JSON body, like express.json(): ignored unless the content type is JSON."""
        if "json" not in (req.header("content-type") or "").lower():
            return {}
        try:
            return json.loads(req.body.decode("utf-8")) if req.body else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None

    @staticmethod
    def _validate(body: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        if not isinstance(body.get("userId"), str) or not body["userId"]:
            problems.append("userId is required")
        if body.get("activityProgress") not in ACTIVITY_PROGRESS:
            problems.append(f"activityProgress must be one of {', '.join(ACTIVITY_PROGRESS)}")
        if body.get("gradingProgress") not in GRADING_PROGRESS:
            problems.append(f"gradingProgress must be one of {', '.join(GRADING_PROGRESS)}")
        given, maximum = body.get("scoreGiven"), body.get("scoreMaximum")
        if given is not None and (not _is_number(given) or given < 0):
            problems.append("scoreGiven must be a number >= 0")
        if maximum is not None and (not _is_number(maximum) or maximum <= 0):
            problems.append("scoreMaximum must be a number > 0")
        if given is not None and maximum is None:
            problems.append("scoreMaximum is required when scoreGiven is present")
        if body.get("comment") is not None and not isinstance(body["comment"], str):
            problems.append("comment must be a string")
        if "timestamp" in body and _parse_timestamp(body["timestamp"]) is None:
            problems.append("timestamp must be an ISO 8601 date-time with a timezone")
        return problems

    # -- routes ----------------------------------------------------------------------------------
    def _post_score(self, req: Request, m: re.Match[str]) -> Response:
        scheme, refusal = self._authenticate(req)
        if refusal is not None:
            return refusal
        line_item, problem = self._line_item(m["id"])
        if problem is not None:
            return problem
        body = self._body(req)
        if not isinstance(body, dict):
            return self._error(400, "INVALID_REQUEST_BODY", "The request body must be a JSON object.")
        problems = self._validate(body)
        if problems:
            return self._error(400, "VALIDATION_ERROR", "; ".join(problems), bodyReceived=body)
        now = datetime.now(UTC)
        stamp = _parse_timestamp(body.get("timestamp")) or now
        with self.lock:
            ext = self.external_error
            if ext is not None:
                ext["times"] -= 1
                if ext["times"] <= 0:
                    self.external_error = None
                return self._error(
                    ext["http_status"],
                    "EXTERNAL_REQUEST_FAILED",
                    ext["message"],
                    externalError=True,
                    externalUrl=f"{line_item}/scores",
                    externalStatus=ext["status"],
                )
            user = body["userId"]
            current = self.scores.get(line_item, {}).get(user)
            if current is not None and stamp <= datetime.fromisoformat(current["timestamp"]):
                self.refused_stale += 1
                return self._error(409, "Refusing score with an earlier timestamp")
            record = {k: body.get(k) for k in ("userId", "scoreGiven", "scoreMaximum", "comment")}
            record.update(
                activityProgress=body["activityProgress"],
                gradingProgress=body["gradingProgress"],
                timestamp=body.get("timestamp") or now.isoformat(timespec="milliseconds"),
                receivedAt=now.isoformat(timespec="milliseconds"),
                auth=scheme,
            )
            self.scores.setdefault(line_item, {})[user] = record
            self.accepted += 1
        return Response(204)

    def _get_scores(self, req: Request, m: re.Match[str]) -> Response:
        _, refusal = self._authenticate(req)
        if refusal is not None:
            return refusal
        line_item, problem = self._line_item(m["id"])
        if problem is not None:
            return problem
        user = req.param("userId")
        with self.lock:
            records = [r for u, r in self.scores.get(line_item, {}).items() if user in (None, u)]
            scores = [
                {
                    "id": f"{line_item}/scores/{r['userId']}",
                    "userId": r["userId"],
                    "scoreOf": line_item,
                    "timestamp": r["timestamp"],
                    "resultScore": r["scoreGiven"],
                    "resultMaximum": r["scoreMaximum"],
                    "comment": r["comment"],
                }
                for r in records
            ]
        return Response(200, {"scores": scores})
