"""LtiaasAdapter against httpx.MockTransport: the exact request, and every answer's classification."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.ltiaas import LtiaasAdapter
from worker.events import GradeEvent
from worker.vendors.edlink import EdlinkDestination
from worker.vendors.ltiaas import LtiaasDestination

API_KEY = "lt-api-key-0123"
SERVICE_KEY = "svc-key-4567"
LTIK = "ltik-token-89ab"
LINE_ITEM = "https://lms.example.com/api/lti/courses/7/line_items/9?type_id=1&x=a b"
ENCODED = "https%3A%2F%2Flms.example.com%2Fapi%2Flti%2Fcourses%2F7%2Fline_items%2F9%3Ftype_id%3D1%26x%3Da%20b"
VENDORS = {"vendors": {"lt": "ltiaas"}}
LTIK_401 = {
    "status": 401,
    "error": "Unauthorized",
    "details": {
        "message": "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER",
        "description": "Invalid or expired ltik.",
    },
}

Handler = Callable[[httpx.Request], httpx.Response]


def make_event(**overrides: Any) -> GradeEvent:
    data: dict[str, Any] = {
        "event_id": "6f1c2a4e-0d1b-4c55-9a0e-2f7b8d3c1e11",
        "destination": "lt",
        "learner_id": "lti-user-42",
        "occurred_at": "2025-03-04T05:06:07.891234+02:00",
        "score_given": 83,
        "score_maximum": 100,
        "comment": "Well argued",
        "target": {"line_item_id": LINE_ITEM, "service_key": SERVICE_KEY},
    }
    data.update(overrides)
    return GradeEvent.model_validate(data, context=VENDORS)


class Recorder:
    """A MockTransport handler answering from a list, recording every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers) or [httpx.Response(204)]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_adapter(
    handler: Handler, *, base_url: str = "https://acme.ltiaas.com", api_key: str | None = API_KEY
) -> tuple[LtiaasAdapter, list[tuple[str, str, int | None]]]:
    dest = LtiaasDestination(
        name="lt",
        vendor="ltiaas",
        base_url=base_url,
        api_key_env="LT_KEY",
        api_key=SecretStr(api_key) if api_key else None,
    )
    seen: list[tuple[str, str, int | None]] = []
    ctx = AdapterContext(
        http=make_client(dest, transport=httpx.MockTransport(handler)),
        observe=lambda method, route, status, _s: seen.append((method, route, status)),
    )
    return LtiaasAdapter(dest, ctx), seen


def deliver_error(answer: httpx.Response, event: GradeEvent | None = None) -> errors.DeliveryError:
    adapter, _ = make_adapter(Recorder(answer))
    with pytest.raises(errors.DeliveryError) as info:
        adapter.deliver(event or make_event())
    return info.value


# -- the request ------------------------------------------------------------------------------------
def test_request_line_headers_and_body() -> None:
    rec = Recorder(httpx.Response(204))
    adapter, seen = make_adapter(rec)
    result = adapter.deliver(make_event())
    assert result.status == 204
    assert result.action == "score.post"
    (req,) = rec.requests
    assert req.method == "POST"
    assert req.url.raw_path == f"/api/lineitems/{ENCODED}/scores".encode()
    assert str(req.url) == f"https://acme.ltiaas.com/api/lineitems/{ENCODED}/scores"
    assert req.headers["Authorization"] == f"SERVICE-AUTH-V1 {API_KEY}:{SERVICE_KEY}"
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.content) == {
        "userId": "lti-user-42",
        "activityProgress": "Completed",
        "gradingProgress": "FullyGraded",
        "scoreGiven": 83,
        "scoreMaximum": 100,
        "comment": "Well argued",
        "timestamp": "2025-03-04T03:06:07.891+00:00",
    }
    assert seen == [("POST", "score.post", 204)]


def test_ltik_authorization() -> None:
    rec = Recorder()
    adapter, _ = make_adapter(rec)
    adapter.deliver(make_event(target={"line_item_id": LINE_ITEM, "ltik": LTIK}))
    assert rec.requests[0].headers["Authorization"] == f"LTIK-AUTH-V2 {API_KEY}:{LTIK}"


def test_line_item_is_one_path_segment_under_a_base_path() -> None:
    rec = Recorder()
    adapter, _ = make_adapter(rec, base_url="https://proxy.example.com/ltiaas/")
    adapter.deliver(make_event())
    raw = rec.requests[0].url.raw_path.decode()
    assert raw == f"/ltiaas/api/lineitems/{ENCODED}/scores"
    segment = raw.split("/")[4]
    assert "/" not in segment and "%2F" in segment and "?" not in raw


def test_zero_score_is_sent() -> None:
    rec = Recorder()
    adapter, _ = make_adapter(rec)
    adapter.deliver(make_event(score_given=0, score_maximum=10))
    body = json.loads(rec.requests[0].content)
    assert body["scoreGiven"] == 0 and "scoreGiven" in body
    assert body["scoreMaximum"] == 10


def test_no_score_omits_score_fields_and_no_comment_omits_comment() -> None:
    rec = Recorder()
    adapter, _ = make_adapter(rec)
    adapter.deliver(
        make_event(
            score_given=None,
            score_maximum=None,
            comment=None,
            activity_progress="Started",
            grading_progress="NotReady",
        )
    )
    assert json.loads(rec.requests[0].content) == {
        "userId": "lti-user-42",
        "activityProgress": "Started",
        "gradingProgress": "NotReady",
        "timestamp": "2025-03-04T03:06:07.891+00:00",
    }


def test_fractional_score_is_kept() -> None:
    rec = Recorder()
    adapter, _ = make_adapter(rec)
    adapter.deliver(make_event(score_given=0.335, score_maximum=1))
    body = json.loads(rec.requests[0].content)
    assert body["scoreGiven"] == 0.335 and body["scoreMaximum"] == 1


def test_timestamp_is_identical_on_every_retry() -> None:
    rec = Recorder(httpx.Response(503), httpx.Response(204))
    adapter, _ = make_adapter(rec)
    event = make_event()
    with pytest.raises(errors.VendorUnavailable):
        adapter.deliver(event)
    adapter.deliver(event)
    stamps = [json.loads(r.content)["timestamp"] for r in rec.requests]
    assert stamps == [event.occurred_at_iso, event.occurred_at_iso]


def test_default_occurred_at_is_stable_across_attempts() -> None:
    rec = Recorder(httpx.Response(502), httpx.Response(204))
    adapter, _ = make_adapter(rec)
    data = make_event().model_dump(mode="json", exclude={"occurred_at"}, context={"reveal_secrets": True})
    event = GradeEvent.model_validate(data, context=VENDORS)
    with pytest.raises(errors.VendorUnavailable):
        adapter.deliver(event)
    adapter.deliver(GradeEvent.from_wire(event.to_wire(), vendors=VENDORS["vendors"]))
    first, second = (json.loads(r.content)["timestamp"] for r in rec.requests)
    assert first == second == event.occurred_at_iso


# -- success ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer", [httpx.Response(204), httpx.Response(200, json={"resultUrl": "x"}), httpx.Response(201)]
)
def test_any_2xx_is_success(answer: httpx.Response) -> None:
    adapter, _ = make_adapter(Recorder(answer))
    result = adapter.deliver(make_event())
    assert result.status == answer.status_code
    assert result.detail == LINE_ITEM


# -- refusals -----------------------------------------------------------------------------------------
def test_401_is_permanent_with_the_vendor_message_and_no_secret() -> None:
    err = deliver_error(httpx.Response(401, json=LTIK_401))
    assert type(err) is errors.AuthenticationFailed
    assert err.status == 401
    assert err.vendor_message == "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER: Invalid or expired ltik."
    for text in (str(err), err.describe(), json.dumps(err.as_record())):
        assert API_KEY not in text and SERVICE_KEY not in text


def test_invalid_api_key_description() -> None:
    details = {"message": "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER", "description": "Invalid API key"}
    body = {"status": 401, "error": "Unauthorized", "details": details}
    err = deliver_error(httpx.Response(401, json=body))
    assert isinstance(err, errors.AuthenticationFailed)
    assert err.vendor_message is not None and "Invalid API key" in err.vendor_message


def test_409_is_superseded() -> None:
    details = {"message": "Refusing score with an earlier timestamp"}
    body = {"status": 409, "error": "Conflict", "details": details}
    err = deliver_error(httpx.Response(409, json=body))
    assert type(err) is errors.Superseded
    assert err.vendor_message == "Refusing score with an earlier timestamp"


@pytest.mark.parametrize(
    "message",
    [
        "Score timestamp can only be updated to a later point in time",
        "Score already exists for the provided timestamp",
        "Refusing score with an earlier timestamp",
    ],
)
def test_400_naming_a_stale_timestamp_is_superseded(message: str) -> None:
    body = {"status": 400, "error": "Bad Request", "details": {"message": message}}
    assert type(deliver_error(httpx.Response(400, json=body))) is errors.Superseded


@pytest.mark.parametrize(
    "details",
    [
        {"message": "Incorrect score received"},
        {
            "message": "VALIDATION_ERROR",
            "description": "timestamp must be an ISO 8601 date-time",
            "bodyReceived": {"userId": "u"},
        },
    ],
)
def test_other_400s_are_invalid_requests(details: dict[str, Any]) -> None:
    err = deliver_error(httpx.Response(400, json={"status": 400, "error": "Bad Request", "details": details}))
    assert type(err) is errors.InvalidRequest
    assert err.vendor_message is not None and details["message"] in err.vendor_message


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (403, errors.Forbidden),
        (404, errors.NotFound),
        (422, errors.InvalidRequest),
        (500, errors.VendorUnavailable),
        (502, errors.VendorUnavailable),
        (503, errors.VendorUnavailable),
    ],
)
def test_status_mapping(status: int, cls: type[errors.DeliveryError]) -> None:
    body = {"status": status, "error": "x", "details": {"message": "LINEITEM_NOT_FOUND"}}
    err = deliver_error(httpx.Response(status, json=body))
    assert type(err) is cls
    assert err.status == status


def test_429_honours_retry_after() -> None:
    err = deliver_error(
        httpx.Response(
            429,
            headers={"Retry-After": "30"},
            json={"status": 429, "error": "Too Many Requests", "details": {}},
        )
    )
    assert type(err) is errors.RateLimited
    assert err.retry_after == 30.0


def test_non_json_5xx_is_retryable() -> None:
    err = deliver_error(httpx.Response(502, text="<html>Bad gateway</html>"))
    assert type(err) is errors.VendorUnavailable
    assert err.vendor_message is None
    assert err.excerpt == "<html>Bad gateway</html>"


def test_redirect_is_not_followed_and_is_unexpected() -> None:
    rec = Recorder(httpx.Response(302, headers={"Location": "https://acme.ltiaas.com/login"}))
    adapter, _ = make_adapter(rec)
    with pytest.raises(errors.UnexpectedResponse):
        adapter.deliver(make_event())
    assert len(rec.requests) == 1


# -- LMS errors proxied by LTIAAS ----------------------------------------------------------------------
def _external(http_status: int, upstream: int | None) -> httpx.Response:
    details: dict[str, Any] = {
        "message": "EXTERNAL_REQUEST_FAILED",
        "description": "LMS said no",
        "externalError": True,
        "externalUrl": LINE_ITEM + "/scores",
    }
    if upstream is not None:
        details["externalStatus"] = upstream
    return httpx.Response(http_status, json={"status": http_status, "error": "x", "details": details})


@pytest.mark.parametrize(
    ("http_status", "upstream", "cls"),
    [
        (400, 503, errors.VendorUnavailable),  # the LMS is down: retry, whatever LTIAAS answered
        (500, 500, errors.VendorUnavailable),
        (400, 429, errors.RateLimited),
        (500, 404, errors.NotFound),  # the LMS refuses for good: do not retry a 500
        (502, 400, errors.InvalidRequest),
        (500, 403, errors.Forbidden),
        (500, 409, errors.Superseded),  # the LMS holds a newer score
        (502, None, errors.VendorUnavailable),  # no upstream status: the HTTP status decides
        (403, None, errors.Forbidden),
    ],
)
def test_external_errors_are_classified_by_the_lms_status(
    http_status: int, upstream: int | None, cls: type[errors.DeliveryError]
) -> None:
    err = deliver_error(_external(http_status, upstream))
    assert type(err) is cls
    assert err.status == http_status
    assert err.vendor_message is not None and "LMS said no" in err.vendor_message


def test_external_flag_false_is_ignored() -> None:
    body = {
        "status": 500,
        "error": "x",
        "details": {"message": "boom", "externalError": False, "externalStatus": 404},
    }
    assert type(deliver_error(httpx.Response(500, json=body))) is errors.VendorUnavailable


# -- transport failures and configuration -------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectError("refused"), errors.NetworkError),
        (httpx.RemoteProtocolError("dropped"), errors.NetworkError),
        (httpx.ReadTimeout("slow"), errors.VendorTimeout),
    ],
)
def test_transport_errors(exc: Exception, cls: type[errors.DeliveryError]) -> None:
    adapter, seen = make_adapter(Recorder(exc))
    with pytest.raises(cls):
        adapter.deliver(make_event())
    assert seen == [("POST", "score.post", None)]


def test_missing_api_key_is_a_configuration_error_and_sends_nothing() -> None:
    rec = Recorder()
    adapter, _ = make_adapter(rec, api_key=None)
    with pytest.raises(errors.ConfigurationError, match=r"\$LT_KEY"):
        adapter.deliver(make_event())
    assert rec.requests == []


def test_wrong_destination_type() -> None:
    dest = EdlinkDestination(
        name="ed", vendor="edlink", base_url="https://ed.link", integration_token_env="E"
    )
    with pytest.raises(errors.ConfigurationError):
        LtiaasAdapter(dest, AdapterContext(http=make_client(dest)))


def test_close_closes_the_client() -> None:
    adapter, _ = make_adapter(Recorder())
    adapter.close()
    assert adapter.ctx.http.is_closed
