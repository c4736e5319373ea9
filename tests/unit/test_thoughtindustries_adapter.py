"""ThoughtIndustriesAdapter against httpx.MockTransport: body and JWT modes, 302 success, refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Literal

import httpx
import pytest
from pydantic import SecretStr

from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.thoughtindustries import ThoughtIndustriesAdapter
from worker.events import GradeEvent
from worker.vendors.thoughtindustries import ThoughtIndustriesDestination

API_KEY = "ti_test_key_0123"
ASSIGNMENT = "123e4567-e89b-12d3-a456-426614174000"
LEARNER = "223e4567-e89b-12d3-a456-426614174000"
PATH = "/incoming/v2/assignmentExternalActivity"
VENDORS = {"vendors": {"ti": "thoughtindustries"}}


def make_event(**overrides: Any) -> GradeEvent:
    data: dict[str, Any] = {
        "destination": "ti",
        "learner_id": LEARNER,
        "score_given": 19,
        "score_maximum": 20,
        "comment": "Nice work",
        "target": {"assignment_id": ASSIGNMENT},
    }
    data.update(overrides)
    return GradeEvent.model_validate(data, context=VENDORS)


class Recorder:
    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers) or [httpx.Response(302, headers={"Location": "/learn"})]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_adapter(rec: Recorder, mode: Literal["json", "jwt"] = "json") -> ThoughtIndustriesAdapter:
    dest = ThoughtIndustriesDestination(
        name="ti",
        vendor="thoughtindustries",
        base_url="https://acme.thoughtindustries.com",
        api_key_env="TI_KEY",
        api_key=SecretStr(API_KEY),
        mode=mode,
    )
    client = make_client(dest, transport=httpx.MockTransport(rec))
    return ThoughtIndustriesAdapter(dest, AdapterContext(http=client))


def deliver_error(answer: httpx.Response) -> errors.DeliveryError:
    with pytest.raises(errors.DeliveryError) as info:
        make_adapter(Recorder(answer)).deliver(make_event())
    return info.value


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_hs256(token: str, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Independent HS256 check (not through the adapter's own signer)."""
    header, payload, signature = token.split(".")
    expected = hmac.new(key.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(b64url_decode(signature), expected), "bad signature"
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload))


# -- json mode ----------------------------------------------------------------------------------------
def test_json_request_exactly() -> None:
    rec = Recorder()
    result = make_adapter(rec).deliver(make_event())
    (req,) = rec.requests
    assert req.method == "POST"
    assert req.url.raw_path == PATH.encode()
    assert req.url.host == "acme.thoughtindustries.com"
    assert req.headers["Authorization"] == f"Bearer {API_KEY}"
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.content) == {
        "status": "completed",
        "assignmentId": ASSIGNMENT,
        "learnerId": LEARNER,
        "grade": 95,
        "gradeFeedback": "Nice work",
    }
    assert result.status == 302
    assert result.action == "activity.post"
    assert result.detail == "/learn"


@pytest.mark.parametrize(
    ("progress", "status"),
    [
        ("Initialized", "incomplete"),
        ("Started", "incomplete"),
        ("InProgress", "incomplete"),
        ("Submitted", "completed"),
        ("Completed", "completed"),
    ],
)
def test_status_mapping(progress: str, status: str) -> None:
    rec = Recorder()
    make_adapter(rec).deliver(make_event(activity_progress=progress))
    assert json.loads(rec.requests[0].content)["status"] == status


@pytest.mark.parametrize(
    ("given", "maximum", "grade"),
    [(2, 3, 66.67), (1, 3, 33.33), (0, 10, 0), (10, 10, 100), (12, 10, 120), (0.5, 8, 6.25), (7, 9, 77.78)],
)
def test_grade_is_a_percent_rounded_to_two_decimals(given: float, maximum: float, grade: float) -> None:
    rec = Recorder()
    make_adapter(rec).deliver(make_event(score_given=given, score_maximum=maximum))
    body = json.loads(rec.requests[0].content)
    assert "grade" in body and body["grade"] == grade


def test_no_score_and_no_comment_omit_grade_and_feedback() -> None:
    rec = Recorder()
    make_adapter(rec).deliver(
        make_event(score_given=None, score_maximum=None, comment=None, activity_progress="InProgress")
    )
    assert json.loads(rec.requests[0].content) == {
        "status": "incomplete",
        "assignmentId": ASSIGNMENT,
        "learnerId": LEARNER,
    }


# -- jwt mode -----------------------------------------------------------------------------------------
def test_jwt_mode_signs_the_attributes_with_the_api_key() -> None:
    rec = Recorder()
    before = int(time.time())
    result = make_adapter(rec, mode="jwt").deliver(make_event())
    after = int(time.time())
    (req,) = rec.requests
    assert req.method == "POST"
    assert req.url.path == PATH
    assert list(req.url.params.keys()) == ["jwt"]
    assert req.content == b""
    assert "Content-Type" not in req.headers
    assert req.headers["Authorization"] == f"Bearer {API_KEY}"
    header, claims = verify_hs256(req.url.params["jwt"], API_KEY)
    assert header == {"alg": "HS256", "typ": "JWT"}
    iat = claims.pop("iat")
    assert before <= iat <= after
    assert claims == {
        "status": "completed",
        "assignmentId": ASSIGNMENT,
        "learnerId": LEARNER,
        "grade": 95,
        "gradeFeedback": "Nice work",
    }
    assert result.status == 302


def test_jwt_is_not_signed_with_another_key() -> None:
    rec = Recorder()
    make_adapter(rec, mode="jwt").deliver(make_event())
    with pytest.raises(AssertionError, match="bad signature"):
        verify_hs256(rec.requests[0].url.params["jwt"], "another-key")


# -- success and not-success ----------------------------------------------------------------------------
def test_302_is_success_with_the_location_and_is_not_followed() -> None:
    rec = Recorder(
        httpx.Response(302, headers={"Location": "https://acme.thoughtindustries.com/learn/x"}),
        httpx.Response(200, text="<html>should never be fetched</html>"),
    )
    result = make_adapter(rec).deliver(make_event())
    assert result.detail == "https://acme.thoughtindustries.com/learn/x"
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(
            200,
            text="<html><form action='/login'>Sign in</form></html>",
            headers={"Content-Type": "text/html"},
        ),
        httpx.Response(200, json={"ok": True}),
        httpx.Response(204),
        httpx.Response(301, headers={"Location": "/learn"}),
        httpx.Response(303, headers={"Location": "/login"}),
    ],
)
def test_other_2xx_3xx_are_unexpected(answer: httpx.Response) -> None:
    err = deliver_error(answer)
    assert type(err) is errors.UnexpectedResponse
    assert err.status == answer.status_code


# -- refusals -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"errors": ["externalActivity feature is not enabled"]}, "externalActivity feature is not enabled"),
        (
            {"errors": ["Invalid assignmentId or learnerId (both are required)"]},
            "Invalid assignmentId or learnerId (both are required)",
        ),
        (
            {
                "valid": False,
                "errors": ["Assignment submission could not be recorded", "grade must be a number"],
                "assignmentSubmission": None,
            },
            "Assignment submission could not be recorded; grade must be a number",
        ),
    ],
)
def test_400_errors_are_permanent_with_the_messages(body: dict[str, Any], message: str) -> None:
    err = deliver_error(httpx.Response(400, json=body))
    assert type(err) is errors.InvalidRequest
    assert isinstance(err, errors.PermanentError)
    assert err.vendor_message == message


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (401, errors.AuthenticationFailed),
        (403, errors.Forbidden),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (422, errors.InvalidRequest),
        (500, errors.VendorUnavailable),
        (502, errors.VendorUnavailable),
        (503, errors.VendorUnavailable),
        (504, errors.VendorUnavailable),
    ],
)
def test_status_classes(status: int, cls: type[errors.DeliveryError]) -> None:
    err = deliver_error(httpx.Response(status, json={"error": "x", "message": "the vendor's words"}))
    assert type(err) is cls
    assert err.vendor_message == "the vendor's words"


def test_401_keeps_the_key_out_of_the_error() -> None:
    body = {"error": "unauthorized", "message": f"Bearer {API_KEY} bad"}
    err = deliver_error(httpx.Response(401, json=body))
    for text in (str(err), err.describe(), json.dumps(err.as_record())):
        assert API_KEY not in text


def test_429_retry_after_header() -> None:
    body = {"error": "rate_limit_exceeded", "message": "Too many requests", "retryAfter": 99}
    err = deliver_error(httpx.Response(429, json=body, headers={"Retry-After": "32"}))
    assert type(err) is errors.RateLimited
    assert err.retry_after == 32.0  # the header wins
    assert err.vendor_message == "Too many requests"


def test_429_retry_after_from_the_body_when_the_header_is_absent() -> None:
    body = {"error": "rate_limit_exceeded", "message": "Too many requests", "retryAfter": 17}
    err = deliver_error(httpx.Response(429, json=body))
    assert type(err) is errors.RateLimited
    assert err.retry_after == 17.0


def test_429_without_any_hint() -> None:
    err = deliver_error(httpx.Response(429, text="slow down"))
    assert type(err) is errors.RateLimited
    assert err.retry_after is None


@pytest.mark.parametrize(
    ("exc", "cls"),
    [(httpx.ConnectError("x"), errors.NetworkError), (httpx.ReadTimeout("x"), errors.VendorTimeout)],
)
def test_transport_errors(exc: Exception, cls: type[errors.DeliveryError]) -> None:
    with pytest.raises(cls):
        make_adapter(Recorder(exc)).deliver(make_event())


def test_missing_api_key() -> None:
    dest = ThoughtIndustriesDestination(
        name="ti", vendor="thoughtindustries", base_url="https://x.example", api_key_env="TI_KEY"
    )
    rec = Recorder()
    client = make_client(dest, transport=httpx.MockTransport(rec))
    adapter = ThoughtIndustriesAdapter(dest, AdapterContext(http=client))
    with pytest.raises(errors.ConfigurationError, match=r"\$TI_KEY"):
        adapter.deliver(make_event())
    assert rec.requests == []
