"""EdlinkAdapter against httpx.MockTransport: submit and grade requests, envelopes, $errors, $warnings."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.edlink import EdlinkAdapter
from worker.events import GradeEvent
from worker.vendors.edlink import EdlinkDestination

INTEGRATION = "int-token-0123456789"
PERSON = "person-token-abcdef"
EVENT_ID = "3d8e1f0a-5b2c-4e7d-9a61-0c4b2d9e8f77"
CLASS_ID = "0a1b2c3d-0000-4000-8000-00000000c1a5"
ASSIGNMENT_ID = "0a1b2c3d-0000-4000-8000-0000000a5516"
LEARNER = "0a1b2c3d-0000-4000-8000-0000000000e1"
REQ_SUBMIT = "11111111-1111-4111-8111-111111111111"
REQ_GRADE = "22222222-2222-4222-8222-222222222222"
VENDORS = {"vendors": {"ed": "edlink"}}
SUBMIT_PATH = f"/api/v2/my/classes/{CLASS_ID}/assignments/{ASSIGNMENT_ID}/submit?$idempotency={EVENT_ID}"
GRADE_PATH = f"/api/v2/graph/classes/{CLASS_ID}/assignments/{ASSIGNMENT_ID}/submissions/{LEARNER}"
SEED_FILE = {"type": "file", "title": "overwritten.txt", "data": [104, 101, 108, 108, 111, 10]}


def make_event(*, person_token: str | None = PERSON, **overrides: Any) -> GradeEvent:
    target: dict[str, Any] = {"class_id": CLASS_ID, "assignment_id": ASSIGNMENT_ID}
    if person_token is not None:
        target["person_token"] = person_token
    data: dict[str, Any] = {
        "event_id": EVENT_ID,
        "destination": "ed",
        "learner_id": LEARNER,
        "score_given": 22,
        "score_maximum": 25,
        "comment": "Good job!",
        "target": target,
        "attachments": [SEED_FILE],
    }
    data.update(overrides)
    return GradeEvent.model_validate(data, context=VENDORS)


def envelope(request_id: str, data: Any = None, **extra: Any) -> httpx.Response:
    body = {"$request": request_id, "$data": data if data is not None else {"id": "sub-1", "state": "x"}}
    body.update(extra)
    return httpx.Response(200, json=body)


def failure(status: int, *pairs: tuple[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "$request": "33333333-3333-4333-8333-333333333333",
        "$errors": [{"code": c, "message": m} for c, m in pairs],
    }
    return httpx.Response(status, json=body, headers=headers)


class Recorder:
    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_adapter(
    handler: Callable[[httpx.Request], httpx.Response], integration: str | None = INTEGRATION
) -> EdlinkAdapter:
    dest = EdlinkDestination(
        name="ed",
        vendor="edlink",
        base_url="https://ed.link",
        integration_token_env="ED_TOKEN",
        integration_token=SecretStr(integration) if integration else None,
    )
    return EdlinkAdapter(dest, AdapterContext(http=make_client(dest, transport=httpx.MockTransport(handler))))


def deliver_error(*answers: httpx.Response, event: GradeEvent | None = None) -> errors.DeliveryError:
    adapter = make_adapter(Recorder(*answers))
    with pytest.raises(errors.DeliveryError) as info:
        adapter.deliver(event or make_event(attachments=[]))
    return info.value


# -- requests -----------------------------------------------------------------------------------------
def test_submit_then_grade_exact_requests() -> None:
    rec = Recorder(envelope(REQ_SUBMIT), envelope(REQ_GRADE))
    result = make_adapter(rec).deliver(
        make_event(
            attachments=[
                SEED_FILE,
                {"type": "link", "url": "https://docs.example.com/essay", "title": "Essay"},
                {"type": "text", "text": "my answer"},
            ]
        )
    )
    submit, grade = rec.requests
    assert submit.method == "POST"
    assert submit.url.raw_path.decode() == SUBMIT_PATH
    assert submit.url.host == "ed.link"
    assert submit.headers["Authorization"] == f"Bearer {PERSON}"
    assert submit.headers["Content-Type"] == "application/json"
    assert json.loads(submit.content) == {
        "attachments": [
            {"type": "file", "title": "overwritten.txt", "size": 6, "data": [104, 101, 108, 108, 111, 10]},
            {"type": "link", "url": "https://docs.example.com/essay", "title": "Essay"},
            {"type": "text", "text": "my answer"},
        ]
    }
    assert grade.method == "PATCH"
    assert grade.url.raw_path.decode() == GRADE_PATH
    assert grade.headers["Authorization"] == f"Bearer {INTEGRATION}"
    assert json.loads(grade.content) == {"grade_points": 22, "grade_comment": "Good job!"}
    assert result.action == "submit+grade"
    assert result.status == 200
    assert REQ_SUBMIT in result.detail and REQ_GRADE in result.detail


def test_grade_only_without_person_token() -> None:
    rec = Recorder(envelope(REQ_GRADE))
    result = make_adapter(rec).deliver(make_event(person_token=None, attachments=[]))
    (req,) = rec.requests
    assert req.method == "PATCH" and req.url.raw_path.decode() == GRADE_PATH
    assert result.action == "grade"
    assert result.detail == f"grade={REQ_GRADE}"


def test_attachments_without_person_token_are_not_submitted() -> None:
    rec = Recorder(envelope(REQ_GRADE))
    with structlog.testing.capture_logs() as logs:
        result = make_adapter(rec).deliver(make_event(person_token=None))
    assert [r.method for r in rec.requests] == ["PATCH"]
    assert result.action == "grade"
    assert any(e["event"] == "edlink.attachments_ignored" for e in logs)


def test_submit_only_without_score() -> None:
    rec = Recorder(envelope(REQ_SUBMIT))
    result = make_adapter(rec).deliver(make_event(score_given=None, score_maximum=None, comment="ignored"))
    (req,) = rec.requests
    assert req.method == "POST" and req.url.raw_path.decode() == SUBMIT_PATH
    assert result.action == "submit"
    assert result.detail == f"submit={REQ_SUBMIT}"


def test_zero_score_is_sent_and_absent_comment_omitted() -> None:
    rec = Recorder(envelope(REQ_GRADE))
    make_adapter(rec).deliver(make_event(score_given=0, comment=None, attachments=[]))
    assert json.loads(rec.requests[0].content) == {"grade_points": 0}


def test_fractional_points_are_sent_as_is() -> None:
    rec = Recorder(envelope(REQ_GRADE))
    make_adapter(rec).deliver(make_event(score_given=7.25, score_maximum=10, attachments=[]))
    assert json.loads(rec.requests[0].content)["grade_points"] == 7.25


@pytest.mark.parametrize(
    "event",
    [
        make_event(score_given=None, score_maximum=None, attachments=[]),
        make_event(score_given=None, score_maximum=None, person_token=None),  # attachments, no token
    ],
)
def test_nothing_to_send_is_a_permanent_invalid_request(event: GradeEvent) -> None:
    rec = Recorder()
    with pytest.raises(errors.InvalidRequest, match="nothing to send"):
        make_adapter(rec).deliver(event)
    assert rec.requests == []


def test_ids_are_quoted_as_single_segments() -> None:
    rec = Recorder(envelope(REQ_SUBMIT), envelope(REQ_GRADE))
    event = make_event(
        learner_id="a/b c", target={"class_id": "c/1", "assignment_id": "a?1", "person_token": PERSON}
    )
    make_adapter(rec).deliver(event)
    assert rec.requests[0].url.raw_path.decode() == (
        f"/api/v2/my/classes/c%2F1/assignments/a%3F1/submit?$idempotency={EVENT_ID}"
    )
    assert rec.requests[1].url.raw_path.decode() == (
        "/api/v2/graph/classes/c%2F1/assignments/a%3F1/submissions/a%2Fb%20c"
    )


def test_idempotency_key_is_the_event_id_on_every_retry() -> None:
    unavailable = failure(503, ("SERVICE_UNAVAILABLE", "try later"))
    rec = Recorder(unavailable, envelope(REQ_SUBMIT), envelope(REQ_GRADE))
    adapter = make_adapter(rec)
    event = make_event()
    with pytest.raises(errors.VendorUnavailable):
        adapter.deliver(event)
    adapter.deliver(event)
    submits = [r for r in rec.requests if r.method == "POST"]
    assert len(submits) == 2
    assert {r.url.params["$idempotency"] for r in submits} == {EVENT_ID}


def test_missing_integration_token_fails_before_anything_is_sent() -> None:
    rec = Recorder()
    with pytest.raises(errors.ConfigurationError, match=r"\$ED_TOKEN"):
        make_adapter(rec, integration=None).deliver(make_event())
    assert rec.requests == []


def test_submit_only_needs_no_integration_token() -> None:
    rec = Recorder(envelope(REQ_SUBMIT))
    result = make_adapter(rec, integration=None).deliver(make_event(score_given=None, score_maximum=None))
    assert result.action == "submit"


# -- answers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.InvalidRequest),
        (401, errors.AuthenticationFailed),
        (403, errors.Forbidden),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (422, errors.InvalidRequest),
        (500, errors.VendorUnavailable),
        (502, errors.VendorUnavailable),
        (503, errors.VendorUnavailable),
    ],
)
def test_status_mapping_and_errors_message(status: int, cls: type[errors.DeliveryError]) -> None:
    err = deliver_error(
        failure(
            status,
            ("BAD_REQUEST", "grade_points must be a number"),
            ("BAD_REQUEST", "grade_comment too long"),
        )
    )
    assert type(err) is cls
    assert err.status == status
    assert err.vendor_message == (
        "BAD_REQUEST: grade_points must be a number; BAD_REQUEST: grade_comment too long"
    )


def test_401_never_shows_a_token() -> None:
    echoed = {"code": "UNAUTHORIZED", "message": f"Bearer {INTEGRATION} is invalid"}
    body = {"$request": "r", "$errors": [echoed]}
    err = deliver_error(httpx.Response(401, json=body))
    assert isinstance(err, errors.AuthenticationFailed)
    for text in (str(err), err.describe(), json.dumps(err.as_record())):
        assert INTEGRATION not in text and PERSON not in text


def test_old_code_description_errors_are_tolerated() -> None:
    body = {"$request": "r", "$code": "NOT_FOUND", "$description": "The class does not exist."}
    err = deliver_error(httpx.Response(404, json=body))
    assert type(err) is errors.NotFound
    assert err.vendor_message == "NOT_FOUND: The class does not exist."


def test_429_honours_retry_after() -> None:
    err = deliver_error(failure(429, ("RATE_LIMITED", "slow down"), headers={"Retry-After": "12"}))
    assert type(err) is errors.RateLimited
    assert err.retry_after == 12.0


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"$request": "r"}),
        httpx.Response(200, json={"$request": "r", "$data": None}),
        httpx.Response(200, text="<html>maintenance</html>"),
        httpx.Response(204),
    ],
)
def test_2xx_without_data_is_unexpected(answer: httpx.Response) -> None:
    assert type(deliver_error(answer)) is errors.UnexpectedResponse


def test_2xx_with_errors_but_no_data_is_unexpected_with_the_message() -> None:
    body = {"$request": "r", "$errors": [{"code": "X", "message": "odd"}]}
    err = deliver_error(httpx.Response(200, json=body))
    assert type(err) is errors.UnexpectedResponse
    assert err.vendor_message == "X: odd"


def test_redirect_is_unexpected() -> None:
    err = deliver_error(httpx.Response(302, headers={"Location": "/login"}))
    assert type(err) is errors.UnexpectedResponse


def test_warnings_are_logged_without_tokens() -> None:
    warnings = [
        {"code": "ATTACHMENT_CONVERTED", "message": "link became text"},
        {"code": "GRADE_ROUNDED", "message": "rounded to 22"},
    ]
    rec = Recorder(envelope(REQ_SUBMIT, **{"$warnings": warnings}), envelope(REQ_GRADE))
    with structlog.testing.capture_logs() as logs:
        result = make_adapter(rec).deliver(make_event())
    assert result.action == "submit+grade"
    (entry,) = [e for e in logs if e["event"] == "edlink.warnings"]
    assert entry["log_level"] == "warning"
    assert entry["codes"] == ["ATTACHMENT_CONVERTED", "GRADE_ROUNDED"]
    assert entry["warnings"] == warnings
    assert entry["request_id"] == REQ_SUBMIT
    assert PERSON not in repr(logs) and INTEGRATION not in repr(logs)


def test_failed_submit_stops_before_grading() -> None:
    rec = Recorder(failure(409, ("CONFLICT", "already submitted")))
    with pytest.raises(errors.Conflict):
        make_adapter(rec).deliver(make_event())
    assert [r.method for r in rec.requests] == ["POST"]


def test_failed_grade_after_submit_raises_the_grade_error() -> None:
    rec = Recorder(envelope(REQ_SUBMIT), failure(500, ("INTERNAL", "boom")))
    with pytest.raises(errors.VendorUnavailable) as info:
        make_adapter(rec).deliver(make_event())
    assert info.value.message.startswith("submission.grade")
    assert [r.method for r in rec.requests] == ["POST", "PATCH"]


@pytest.mark.parametrize(
    ("exc", "cls"),
    [(httpx.ConnectError("x"), errors.NetworkError), (httpx.ReadTimeout("x"), errors.VendorTimeout)],
)
def test_transport_errors(exc: Exception, cls: type[errors.DeliveryError]) -> None:
    adapter = make_adapter(Recorder(exc))
    with pytest.raises(cls):
        adapter.deliver(make_event())
