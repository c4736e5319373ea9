"""A faithful Thought Industries simulator: ``POST /incoming/v2/assignmentExternalActivity``.

* ``Authorization: Bearer <api key>`` (else 401 ``{"error": "unauthorized", "message": …}``).
* The attributes come as a JSON body, or as an HS256 JWT signed with the API key in the ``jwt`` query
  parameter (its ``iat`` within ±500 s); a bad JWT is a 401.
* ``assignmentId``/``learnerId`` must be UUIDs (400 ``{"errors": ["Invalid assignmentId or learnerId
  (both are required)"]}``); ``status`` is ``completed``|``incomplete``; ``grade`` a number;
  ``gradeFeedback`` a string; ``returnUrl`` relative. The mutation's own refusals are 400
  ``{"valid": false, "errors": [...], "assignmentSubmission": null}``.
* Success is ``302 Found`` with ``Location: <returnUrl or /learn>`` and no body. Every accepted call is
  recorded: the endpoint is **not** idempotent, so a double send shows up twice in ``activities``.
* Injected 429s answer ``{"error": "rate_limit_exceeded", "message": …, "retryAfter": N}`` with N the
  ``Retry-After`` header's seconds.

Switches (``POST /_sandbox/config``): ``{"feature_enabled": false}`` (400 ``externalActivity feature is
not enabled``); ``{"unknown_assignments": ["<uuid>", …]}`` whose activities the mutation refuses.
"""

from __future__ import annotations

import copy
import hmac
import json
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from jwt import PyJWS
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidTokenError

from sandbox.base import Request, Response, SandboxApp, demo_score

IAT_WINDOW = 500
DEFAULT_RETRY_AFTER = 60
_ERROR_NAMES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    422: "unprocessable_entity",
    429: "rate_limit_exceeded",
}


class _VendorKeyHMAC(HMACAlgorithm):
    """HS256 without PyJWT's short-key warning (the tenant's API key is what it is)."""

    def check_key_length(self, key: bytes) -> str | None:
        return None


def _verifier() -> PyJWS:
    jws = PyJWS()
    jws.unregister_algorithm("HS256")
    jws.register_algorithm("HS256", _VendorKeyHMAC(HMACAlgorithm.SHA256))
    return jws


_JWS = _verifier()


def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class ThoughtIndustriesSandbox(SandboxApp):
    vendor = "thoughtindustries"
    DEMO_CREDENTIALS: ClassVar[dict[str, str]] = {"api_key": "demo-ti-api-key"}
    DEMO_DESTINATION = "demo-ti"

    @classmethod
    def demo_event(cls, i: int, urls: Mapping[str, str]) -> dict[str, Any]:
        return {**demo_score(i), "learner_id": str(uuid.uuid4()),
                "target": {"assignment_id": "123e4567-e89b-12d3-a456-426614174000"}}

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.activities: list[dict[str, Any]] = []
        self.feature_enabled = True
        self.unknown_assignments: set[str] = set()
        super().__init__()

    # -- SandboxApp ------------------------------------------------------------------------------
    def register(self) -> None:
        self.route("POST", r"/incoming/v2/assignmentExternalActivity")(self._activity)

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "activities": copy.deepcopy(self.activities),
                "feature_enabled": self.feature_enabled,
                "unknown_assignments": sorted(self.unknown_assignments),
            }

    def clear(self) -> None:
        with self.lock:
            self.activities.clear()
            self.feature_enabled = True
            self.unknown_assignments.clear()

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - {"feature_enabled", "unknown_assignments"}
        if unknown:
            raise ValueError(f"unknown thoughtindustries sandbox switch(es): {', '.join(sorted(unknown))}")
        with self.lock:
            if "feature_enabled" in spec:
                if not isinstance(spec["feature_enabled"], bool):
                    raise ValueError("feature_enabled must be true or false")
                self.feature_enabled = spec["feature_enabled"]
            if "unknown_assignments" in spec:
                self.unknown_assignments = {str(a) for a in spec["unknown_assignments"] or []}
            return {
                "feature_enabled": self.feature_enabled,
                "unknown_assignments": sorted(self.unknown_assignments),
            }

    def error_body(self, status: int, message: str) -> Any:
        if status == 400:
            return {"errors": [message]}
        if status == 429:
            return {
                "error": "rate_limit_exceeded",
                "message": "Rate limit exceeded. Please retry later.",
                "retryAfter": DEFAULT_RETRY_AFTER,
            }
        name = _ERROR_NAMES.get(status, "internal_server_error" if status >= 500 else "error")
        return {"error": name, "message": message}

    def handle(self, req: Request) -> Response | object:
        result = super().handle(req)
        # an injected 429: the body's retryAfter says what the Retry-After header says
        if isinstance(result, Response) and result.status == 429 and isinstance(result.body, dict):
            header = result.headers.get("Retry-After")
            if header and "retryAfter" in result.body:
                try:
                    seconds: float = float(header)
                except ValueError:
                    return result
                value = int(seconds) if seconds.is_integer() else seconds
                result = Response(result.status, {**result.body, "retryAfter": value}, result.headers)
        return result

    # -- helpers ---------------------------------------------------------------------------------
    def _refuse(self, status: int, message: str) -> Response:
        return Response(status, self.error_body(status, message))

    def _authorized(self, req: Request) -> bool:
        scheme, _, token = (req.header("authorization") or "").strip().partition(" ")
        key = self.api_key.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key)

    def _claims(self, token: str) -> dict[str, Any] | Response:
        """The verified JWT's attributes, or the refusal."""
        try:
            claims = json.loads(_JWS.decode(token, self.api_key, algorithms=["HS256"]))
        except (InvalidTokenError, ValueError):
            return self._refuse(401, "Invalid jwt signature")
        if not isinstance(claims, dict):
            return self._refuse(401, "Invalid jwt payload")
        iat = claims.pop("iat", None)
        if not isinstance(iat, (int, float)) or isinstance(iat, bool) or abs(time.time() - iat) > IAT_WINDOW:
            return self._refuse(401, "jwt iat is missing or outside the allowed window")
        return claims

    def _attributes(self, req: Request) -> tuple[dict[str, Any] | Response, str]:
        """(the attributes or the refusal, how they came)."""
        token = req.param("jwt")
        if token is not None:
            return self._claims(token), "jwt"
        if "json" not in (req.header("content-type") or "").lower():
            return {}, "json"  # like express.json(): no JSON content type, no attributes
        try:
            body = json.loads(req.body.decode("utf-8")) if req.body else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._refuse(400, "Request body is not valid JSON"), "json"
        if not isinstance(body, dict):
            return self._refuse(400, "Request body must be a JSON object"), "json"
        return body, "json"

    @staticmethod
    def _mutation_error(*messages: str) -> Response:
        return Response(400, {"valid": False, "errors": list(messages), "assignmentSubmission": None})

    # -- route -----------------------------------------------------------------------------------
    def _activity(self, req: Request, m: re.Match[str]) -> Response:
        if not self._authorized(req):
            return self._refuse(401, "Invalid or missing API key")
        attrs, via = self._attributes(req)
        if isinstance(attrs, Response):
            return attrs
        with self.lock:
            if not self.feature_enabled:
                return self._refuse(400, "externalActivity feature is not enabled")
        if not (_is_uuid(attrs.get("assignmentId")) and _is_uuid(attrs.get("learnerId"))):
            return self._refuse(400, "Invalid assignmentId or learnerId (both are required)")
        problems: list[str] = []
        if attrs.get("status") not in ("completed", "incomplete"):
            problems.append("status must be one of completed, incomplete")
        grade = attrs.get("grade")
        if grade is not None and (not isinstance(grade, (int, float)) or isinstance(grade, bool)):
            problems.append("grade must be a number")
        if attrs.get("gradeFeedback") is not None and not isinstance(attrs["gradeFeedback"], str):
            problems.append("gradeFeedback must be a string")
        return_url = attrs.get("returnUrl")
        if return_url is not None and (
            not isinstance(return_url, str) or not return_url.startswith("/") or return_url.startswith("//")
        ):
            problems.append("returnUrl must be a relative URL")
        if problems:
            return self._mutation_error(*problems)
        assignment = str(uuid.UUID(attrs["assignmentId"]))
        with self.lock:
            if assignment in self.unknown_assignments:
                return self._mutation_error("Assignment submission could not be recorded")
            self.activities.append(
                {
                    "id": str(uuid.uuid4()),
                    "assignmentId": attrs["assignmentId"],
                    "learnerId": attrs["learnerId"],
                    "status": attrs["status"],
                    "grade": grade,
                    "gradeFeedback": attrs.get("gradeFeedback"),
                    "returnUrl": return_url,
                    "via": via,
                    "receivedAt": time.time(),
                }
            )
        return Response(302, None, {"Location": return_url or "/learn"})
