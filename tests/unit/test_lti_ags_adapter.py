"""LtiAgsAdapter against httpx.MockTransport: URL building, the exact score request, refresh-once, and
how each platform answer is classified."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.unit.lti_support import BASE, LINEITEM, SCORE, DictCache, Platform, context, destination, event, token_answer
from worker import errors
from worker.adapters.lti_ags import LtiAgsAdapter, scores_url
from worker.adapters.lti_lineitems import NAMESPACE

CANVAS_STALE = "Score timestamp can only be updated to a later point in time"
MOODLE = f"{BASE}/mod/lti/services.php/12/lineitems/34/lineitem?type_id=5"


@pytest.mark.parametrize(("line_item", "expected"), [
    (f"{BASE}/api/lti/courses/7/line_items/9", f"{BASE}/api/lti/courses/7/line_items/9/scores"),
    (f"{BASE}/api/lti/courses/7/line_items/9/", f"{BASE}/api/lti/courses/7/line_items/9/scores"),
    (MOODLE, f"{BASE}/mod/lti/services.php/12/lineitems/34/lineitem/scores?type_id=5"),
    (f"{BASE}/li/1?type_id=5&x=a%20b", f"{BASE}/li/1/scores?type_id=5&x=a%20b"),
    (f"{BASE}/li/1#frag", f"{BASE}/li/1/scores"),
])
def test_scores_url_goes_before_the_query(line_item: str, expected: str) -> None:
    assert scores_url(line_item) == expected


def make(platform: Platform, cache: DictCache | None = None) -> LtiAgsAdapter:
    return LtiAgsAdapter(destination(), context(platform, cache=cache))


def test_the_score_request() -> None:
    platform = Platform(httpx.Response(204))
    result = make(platform).deliver(event(target={"line_item_url": MOODLE}))
    assert (result.status, result.action) == (204, "score.post")
    (req,) = platform.requests
    assert req.method == "POST"
    assert str(req.url) == f"{BASE}/mod/lti/services.php/12/lineitems/34/lineitem/scores?type_id=5"
    assert req.headers["Content-Type"] == "application/vnd.ims.lis.v1.score+json"
    assert req.headers["Authorization"] == "Bearer tok-1"
    assert json.loads(req.content) == {
        "userId": "lti-user-42", "activityProgress": "Completed", "gradingProgress": "FullyGraded",
        "scoreGiven": 83, "scoreMaximum": 100, "comment": "Well argued", "timestamp": "2025-03-04T03:06:07.891+00:00",
    }


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_success_statuses(status: int) -> None:
    assert make(Platform(httpx.Response(status))).deliver(event()).status == status


def test_the_timestamp_is_identical_on_every_retry() -> None:
    platform = Platform(httpx.Response(503), httpx.Response(503), httpx.Response(204))
    adapter = make(platform)
    ev = event()
    for _ in range(2):
        with pytest.raises(errors.VendorUnavailable):
            adapter.deliver(ev)
    adapter.deliver(ev)
    stamps = {b["timestamp"] for b in platform.bodies()}
    assert stamps == {"2025-03-04T03:06:07.891+00:00"}


def test_a_401_refreshes_the_token_once() -> None:
    platform = Platform(httpx.Response(401), httpx.Response(204))
    assert make(platform).deliver(event()).status == 204
    assert [r.headers["Authorization"] for r in platform.requests] == ["Bearer tok-1", "Bearer tok-2"]
    assert len(platform.token_requests) == 2


@pytest.mark.parametrize(("status", "cls"), [(401, errors.AuthenticationFailed), (403, errors.Forbidden)])
def test_401_or_403_after_the_refresh_is_permanent_and_names_the_scope(
        status: int, cls: type[errors.DeliveryError]) -> None:
    platform = Platform(httpx.Response(status), tokens=[token_answer("a", scope=LINEITEM), token_answer("b",
                                                                                                        scope=LINEITEM)])
    with pytest.raises(errors.PermanentError) as info:
        make(platform).deliver(event())
    assert type(info.value) is cls
    assert SCORE in info.value.message and "granted: " + LINEITEM in info.value.message
    assert len(platform.requests) == 2 and len(platform.token_requests) == 2


@pytest.mark.parametrize(("answer", "cls"), [
    (httpx.Response(409, text="Refusing score with an earlier timestamp"), errors.Superseded),
    (httpx.Response(400, json={"errors": [{"message": CANVAS_STALE}]}), errors.Superseded),
    (httpx.Response(400, json={"detail": "Score already exists for the provided timestamp"}), errors.Superseded),
    (httpx.Response(400, text="Incorrect score received"), errors.InvalidRequest),
    (httpx.Response(422, json={"errors": [{"message": "User not found in course or is not a student"}]}),
     errors.NotFound),
    (httpx.Response(404), errors.NotFound),
    (httpx.Response(415), errors.InvalidRequest),
    (httpx.Response(429, headers={"Retry-After": "12"}), errors.RateLimited),
    (httpx.Response(502), errors.VendorUnavailable),
    (httpx.Response(302, headers={"Location": "/login"}), errors.UnexpectedResponse),
])
def test_classification(answer: httpx.Response, cls: type[errors.DeliveryError]) -> None:
    with pytest.raises(errors.DeliveryError) as info:
        make(Platform(answer)).deliver(event())
    assert type(info.value) is cls
    if answer.status_code == 429:
        assert info.value.retry_after == 12.0
    if answer.status_code == 422:
        assert info.value.vendor_message == "User not found in course or is not a student"


def test_a_line_item_on_another_host_is_refused_before_any_token_is_sent() -> None:
    platform = Platform()
    with pytest.raises(errors.InvalidRequest, match="origin"):
        make(platform).deliver(event(target={"line_item_url": "https://evil.example/api/lti/line_items/1"}))
    assert platform.requests == [] and platform.token_requests == []


def test_a_cached_line_item_that_is_gone_is_resolved_again() -> None:
    cache = DictCache()
    container = f"{BASE}/api/lti/courses/7/line_items"
    new_item = f"{container}/99"
    platform = Platform(
        httpx.Response(404),  # the cached line item was deleted
        httpx.Response(200, json=[{"id": new_item, "resourceLinkId": "rl-1", "label": "A", "scoreMaximum": 10}]),
        httpx.Response(200, json={}),
    )
    adapter = make(platform, cache)
    ev = event(target={"lineitems_url": container, "resource_link_id": "rl-1"})
    cache.set_json(NAMESPACE, adapter.line_items.cache_key(ev.target), f"{container}/1", 60)  # type: ignore[arg-type]
    assert adapter.deliver(ev).detail == new_item
    assert [str(r.url) for r in platform.requests] == [
        f"{container}/1/scores", f"{container}?resource_link_id=rl-1", f"{new_item}/scores"]
    assert cache.get_json(NAMESPACE, adapter.line_items.cache_key(ev.target)) == new_item  # type: ignore[arg-type]


def test_a_destination_without_the_score_scope_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match=r"must include https://purl\.imsglobal\.org/spec/lti-ags/scope/score"):
        destination(scopes=(LINEITEM,))


CANVAS_EXT = "https://canvas.instructure.com/lti/submission"


def test_the_canvas_submission_extension_only_when_the_target_asks() -> None:
    platform = Platform(httpx.Response(200, json={}))
    adapter = make(platform)
    line_item = f"{BASE}/api/lti/courses/7/line_items/9"
    adapter.deliver(event(target={"line_item_url": line_item}))
    adapter.deliver(event(target={"line_item_url": line_item, "canvas_submission": True}))
    adapter.deliver(event(target={"line_item_url": line_item, "canvas_submission": True, "regrade": True,
                                  "submitted_at": "2025-03-01T10:00:00.5-05:00"}))
    plain, first, regrade = platform.bodies()
    assert CANVAS_EXT not in plain
    assert first[CANVAS_EXT] == {"submitted_at": "2025-03-04T03:06:07.891+00:00"}  # the event's occurred_at
    assert regrade[CANVAS_EXT] == {"submitted_at": "2025-03-01T15:00:00.500+00:00", "new_submission": False}
    assert regrade["timestamp"] == "2025-03-04T03:06:07.891+00:00"  # the score's own timestamp is unchanged
