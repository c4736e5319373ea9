"""A throttle is recognised by its shape at the HTTP boundary, whatever the status, on every destination:
429 with or without Retry-After, 403 "Rate Limit Exceeded" or ``X-Rate-Limit-Remaining: 0``, 503 with
Retry-After. Each becomes RateLimited (the flow-control path: no attempt spent, no token refresh)."""

from __future__ import annotations

import httpx
import pytest

from tests.unit import test_edlink_adapter as ed
from tests.unit import test_learningstudio_adapter as ls
from tests.unit import test_ltiaas_adapter as lt
from tests.unit import test_thoughtindustries_adapter as ti
from tests.unit.lti_support import Platform, context, destination, event
from worker import errors
from worker.adapters.http import error_for_status, is_throttle
from worker.adapters.lti_ags import LtiAgsAdapter
from worker.flow.decide import Outcome
from worker.flow.gate import outcome_of

#: self-hosted Canvas (canvas-lms app/middleware/request_throttle.rb), byte for byte
CANVAS_403 = httpx.Response(403, headers={"Content-Type": "text/plain; charset=utf-8", "X-Rate-Limit-Remaining": "0.0"},
                            content=b"403 Forbidden (Rate Limit Exceeded)\n")
#: hosted Canvas since 2025-10-06: 429, the same kind of text body, no Retry-After
CANVAS_429 = httpx.Response(429, headers={"Content-Type": "text/plain; charset=utf-8", "X-Rate-Limit-Remaining": "0.0"},
                            content=b"429 Too Many Requests (Rate Limit Exceeded)\n")
#: D2L Brightspace: 429 with Retry-After; the X-Rate-Limit-* headers are absent on the 429
D2L_429 = httpx.Response(429, headers={"Retry-After": "17"})
#: Thought Industries: 429 + Retry-After + a JSON body with retryAfter
TI_429 = httpx.Response(429, headers={"Retry-After": "32"},
                        json={"error": "rate_limit_exceeded", "message": "Too many requests", "retryAfter": 32})
OVERLOAD_503 = httpx.Response(503, headers={"Retry-After": "5"}, text="Service Unavailable")

THROTTLES = {"canvas403": CANVAS_403, "canvas429": CANVAS_429, "d2l429": D2L_429, "ti429": TI_429,
             "503+retry-after": OVERLOAD_503,
             "403 remaining 0": httpx.Response(403, headers={"X-Rate-Limit-Remaining": "0"}, text="Forbidden"),
             "bare 429": httpx.Response(429)}
NOT_THROTTLES = {
    "403 scope": httpx.Response(403, json={"errors": [{"message": "Access token lacks scope score"}]}),
    "403 with budget left": httpx.Response(403, headers={"X-Rate-Limit-Remaining": "312.5"}, text="Forbidden"),
    "503 without Retry-After": httpx.Response(503, text="Service Unavailable"),
    "500 rate words": httpx.Response(500, text="Rate Limit Exceeded"),
}


@pytest.mark.parametrize("name", THROTTLES)
def test_each_throttle_shape_becomes_rate_limited(name: str) -> None:
    answer = THROTTLES[name]
    assert is_throttle(answer.status_code, answer.headers, answer.text)
    error = error_for_status(answer, route="score.post", cls=errors.Forbidden)  # the shape wins over cls
    assert type(error) is errors.RateLimited
    assert outcome_of(error) is Outcome.THROTTLED


@pytest.mark.parametrize("name", NOT_THROTTLES)
def test_lookalikes_are_not_throttles(name: str) -> None:
    answer = NOT_THROTTLES[name]
    assert not is_throttle(answer.status_code, answer.headers, answer.text)
    assert not isinstance(error_for_status(answer, route="r"), errors.RateLimited)


def test_retry_after_is_kept_and_absent_when_not_sent() -> None:
    assert error_for_status(D2L_429, route="r").retry_after == 17.0
    assert error_for_status(OVERLOAD_503, route="r").retry_after == 5.0
    assert error_for_status(CANVAS_403, route="r").retry_after is None
    assert "throttled" in error_for_status(CANVAS_403, route="r").message


@pytest.mark.parametrize("answer", [CANVAS_403, CANVAS_429, D2L_429], ids=["canvas403", "canvas429", "d2l"])
def test_lti_ags_throttle_never_refreshes_the_token(answer: httpx.Response) -> None:
    platform = Platform(answer)
    adapter = LtiAgsAdapter(destination(), context(platform))
    with pytest.raises(errors.RateLimited):
        adapter.deliver(event())
    assert len(platform.requests) == 1 and len(platform.token_requests) == 1


def test_lti_ags_a_throttled_token_endpoint_is_a_throttle() -> None:
    platform = Platform(tokens=[CANVAS_403])
    with pytest.raises(errors.RateLimited):
        LtiAgsAdapter(destination(), context(platform)).deliver(event())
    assert platform.requests == []


@pytest.mark.parametrize("answer", [CANVAS_403, CANVAS_429, TI_429, OVERLOAD_503], ids=["403", "429", "ti", "503"])
def test_the_vendor_adapters_recognise_the_shapes(answer: httpx.Response) -> None:
    assert isinstance(lt.deliver_error(answer), errors.RateLimited)
    assert isinstance(ti.deliver_error(answer), errors.RateLimited)
    assert isinstance(ed.deliver_error(answer), errors.RateLimited)
    fake = ls.FakeLearningStudio()
    fake.on("item", answer)
    with pytest.raises(errors.RateLimited):
        ls.adapter_for(fake).deliver(ls.event())


def test_ltiaas_proxying_a_canvas_403_throttle() -> None:
    body = {"status": 400, "error": "Bad Request",
            "details": {"message": "403 Forbidden (Rate Limit Exceeded)", "externalError": True,
                        "externalStatus": 403}}
    assert isinstance(lt.deliver_error(httpx.Response(400, json=body)), errors.RateLimited)
