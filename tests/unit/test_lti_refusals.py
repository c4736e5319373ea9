"""The lti_ags error table, row by row, with each platform's own answer (status, headers, body) as
documented in /work/shared/reference/lms-behaviour.md; and what the adapter does with it (a token refresh
or not, a line item looked up again or not)."""

from __future__ import annotations

import httpx
import pytest

from tests.unit.lti_support import BASE, DictCache, Platform, context, destination, event
from worker import errors
from worker.adapters.lti_ags import LtiAgsAdapter
from worker.adapters.lti_lineitems import NAMESPACE
from worker.adapters.lti_refusals import RELINK, classify, match
from worker.retry import Action, RetryPolicy, decide

TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def canvas(status: int, message: str) -> httpx.Response:
    """Canvas's Lti::IMS render_error: ``{"errors": {"type": …, "message": …}}``."""
    kind = {400: "bad_request", 404: "not_found", 422: "unprocessable_entity"}[status]
    return httpx.Response(status, json={"errors": {"type": kind, "message": message}})


def moodle(status: int, reason: str) -> httpx.Response:
    """Moodle sends its message as the status line's reason phrase, with an empty body."""
    return httpx.Response(status, extensions={"reason_phrase": reason.encode()})


UNPUBLISHED = httpx.Response(422, json={"errors": [
    {"field": "grade", "message": "cannot be changed at this time: This assignment is still unpublished"}]})

#: (answer, class, words the action must contain or None for no action)
ROWS: dict[str, tuple[httpx.Response, type[errors.DeliveryError], str | None]] = {
    "canvas 422 no maximum": (canvas(422, "ScoreMaximum not supplied when ScoreGiven present."),
                              errors.InvalidRequest, "score_maximum"),
    "canvas 422 negative maximum": (canvas(422, "ScoreMaximum must be greater than or equal to 0"),
                                    errors.InvalidRequest, "score_maximum"),
    "canvas 422 not a student": (canvas(422, "User not found in course or is not a student"),
                                 errors.NotFound, "enrol the learner"),
    "canvas 422 unpublished": (UNPUBLISHED, errors.NotReady, "publish the assignment"),
    "canvas 422 concluded": (canvas(422, "This course has concluded. AGS requests will no longer be accepted for "
                                         "this course."), errors.Forbidden, "re-open"),
    "canvas 404 concluded": (canvas(404, "This course has concluded. AGS requests will no longer be accepted for "
                                         "this course."), errors.Forbidden, "re-open"),
    "canvas 404 deleted line item": (canvas(404, "The specified resource does not exist."), errors.NotFound,
                                     "re-link the item"),
    "canvas 422 attempts": (canvas(422, "The maximum number of allowed attempts has been reached for this "
                                        "submission"), errors.InvalidRequest, "allow more attempts"),
    "canvas 400 stale": (canvas(400, "Provided timestamp of 2025-03-04T03:06:07.891+00:00 before last updated "
                                     "timestamp of 2025-03-04T03:09:00.000+00:00"), errors.Superseded, None),
    "moodle 400 incorrect score": (moodle(400, "Incorrect score received"), errors.InvalidRequest,
                                   "can be graded"),
    "moodle 400 incorrect score (body)": (httpx.Response(400, headers=TEXT, text="Incorrect score received"),
                                          errors.InvalidRequest, "can be graded"),
    "moodle 403 not this tool's line item": (moodle(403, "Line item does not exist."), errors.NotFound,
                                             "re-link the item"),
    "moodle 404 grade item": (moodle(404, "Not Found: Grade item 12 doesn't exist."), errors.NotFound,
                              "re-link the item"),
    "moodle 409 stale": (moodle(409, "Refusing score with an earlier timestamp"), errors.Superseded, None),
    "d2l 429": (httpx.Response(429, headers={"Retry-After": "23"}), errors.RateLimited, None),
    "canvas 403 throttle": (httpx.Response(403, headers={**TEXT, "X-Rate-Limit-Remaining": "0.0"},
                                           content=b"403 Forbidden (Rate Limit Exceeded)\n"), errors.RateLimited, None),
    "a 4xx nobody documented": (httpx.Response(418, text="I'm a teapot"), errors.InvalidRequest, None),
}


@pytest.mark.parametrize("name", ROWS)
def test_classify(name: str) -> None:
    answer, cls, action = ROWS[name]
    error = classify(answer)
    assert type(error) is cls
    if action is None:
        assert error.action is None
    else:
        assert error.action is not None and action in error.action
        assert error.describe().endswith(f"to do: {error.action}")


def test_match_is_a_pure_table() -> None:
    assert match(422, "This assignment is still unpublished").name == "unpublished"  # type: ignore[union-attr]
    assert match(403, "Access token lacks scope https://purl.imsglobal.org/spec/lti-ags/scope/lineitem") is None
    assert match(404, "").cls is errors.NotFound  # type: ignore[union-attr]  # HTTP/2: no words, status decides
    assert match(500, "unpublished") is None


def test_unpublished_is_retried_long_then_dead_lettered_naming_the_fix() -> None:
    error = classify(UNPUBLISHED)
    policy = RetryPolicy(max_attempts=4)
    first = decide(error, 1, policy, lambda: 1.0)
    assert first.action is Action.RETRY and first.delay >= 3600.0
    last = decide(error, 4, policy)
    assert last.action is Action.DEAD_LETTER
    assert "still unpublished" in last.reason and "publish the assignment" in last.reason


def adapter(platform: Platform, cache: DictCache | None = None) -> LtiAgsAdapter:
    return LtiAgsAdapter(destination(), context(platform, cache=cache))


def test_canvas_401_access_token_expired_refreshes_once() -> None:
    expired = httpx.Response(401, json={"errors": [{"message": "Access token expired"}]},
                             headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    platform = Platform(expired, httpx.Response(200, json={}))
    assert adapter(platform).deliver(event()).status == 200
    assert [r.headers["Authorization"] for r in platform.requests] == ["Bearer tok-1", "Bearer tok-2"]


def test_canvas_jwt_expired_twice_is_permanent_after_one_refresh() -> None:
    expired = httpx.Response(401, json={"errors": [{"message": "Invalid access token field/s: the JWT has expired"}]})
    platform = Platform(expired)
    with pytest.raises(errors.AuthenticationFailed):
        adapter(platform).deliver(event())
    assert len(platform.token_requests) == 2


def test_moodle_403_line_item_does_not_exist_is_not_a_token_problem() -> None:
    platform = Platform(moodle(403, "Line item does not exist."))
    with pytest.raises(errors.NotFound) as info:
        adapter(platform).deliver(event())
    assert len(platform.token_requests) == 1 and len(platform.requests) == 1
    assert info.value.action == RELINK


def test_moodle_403_on_a_cached_line_item_resolves_it_again() -> None:
    cache = DictCache()
    container = f"{BASE}/mod/lti/services.php/7/lineitems?type_id=1"
    new_item = f"{BASE}/mod/lti/services.php/7/lineitems/99/lineitem?type_id=1"
    platform = Platform(moodle(403, "Line item does not exist."),
                        httpx.Response(200, json=[{"id": new_item, "resourceLinkId": "rl-1", "label": "A",
                                                   "scoreMaximum": 10}]),
                        httpx.Response(204))
    a = adapter(platform, cache)
    ev = event(target={"lineitems_url": container, "resource_link_id": "rl-1"})
    cache.set_json(NAMESPACE, a.line_items.cache_key(ev.target), f"{BASE}/mod/lti/services.php/7/lineitems/1/"  # type: ignore[arg-type]
                   "lineitem?type_id=1", 60)
    assert a.deliver(ev).detail == new_item
    assert len(platform.token_requests) == 1


def test_a_concluded_course_403_is_not_refreshed() -> None:
    platform = Platform(httpx.Response(403, json={"errors": [{"message": "This course has concluded."}]}))
    with pytest.raises(errors.Forbidden) as info:
        adapter(platform).deliver(event())
    assert len(platform.token_requests) == 1 and "re-open" in (info.value.action or "")


def test_an_unpublished_assignment_is_not_the_destination_s_health() -> None:
    from worker.flow.decide import Outcome
    from worker.flow.gate import outcome_of

    assert outcome_of(classify(UNPUBLISHED)) is Outcome.PERMANENT  # never opens the breaker, never parks
