"""The retry decision, table-tested."""

from __future__ import annotations

import pytest

from worker import errors
from worker.retry import Action, RetryPolicy, backoff, decide

POLICY = RetryPolicy(max_attempts=5, base_delay=2.0, max_delay=60.0)
LOW, HIGH = (lambda: 0.0), (lambda: 1.0)


@pytest.mark.parametrize(
    ("error", "attempt", "rand", "action", "delay"),
    [
        # retryable errors back off exponentially: base * 2**(attempt-1), "equal jitter" in [d/2, d]
        (errors.VendorUnavailable(status=503), 1, HIGH, Action.RETRY, 2.0),
        (errors.VendorUnavailable(status=503), 1, LOW, Action.RETRY, 1.0),
        (errors.NetworkError(), 2, HIGH, Action.RETRY, 4.0),
        (errors.VendorTimeout(), 3, HIGH, Action.RETRY, 8.0),
        (errors.VendorTimeout(), 3, LOW, Action.RETRY, 4.0),
        (errors.RateLimited(status=429), 4, HIGH, Action.RETRY, 16.0),
        # capped at max_delay
        (errors.VendorUnavailable(status=500), 4, HIGH, Action.RETRY, 16.0),
        # Retry-After wins when it is longer than the backoff ...
        (errors.RateLimited(status=429, retry_after=30.0), 1, HIGH, Action.RETRY, 30.0),
        # ... and also when it is longer than max_delay (the vendor said so)
        (errors.RateLimited(status=429, retry_after=120.0), 1, HIGH, Action.RETRY, 120.0),
        # but never makes a retry sooner than the backoff
        (errors.RateLimited(status=429, retry_after=0.5), 3, HIGH, Action.RETRY, 8.0),
        # exhausted: the attempt that fails at max_attempts dead-letters
        (errors.VendorUnavailable(status=503), 5, HIGH, Action.DEAD_LETTER, 0.0),
        (errors.RateLimited(status=429, retry_after=5), 7, HIGH, Action.DEAD_LETTER, 0.0),
        # permanent errors dead-letter at once, whatever the attempt
        (errors.InvalidRequest(status=400), 1, HIGH, Action.DEAD_LETTER, 0.0),
        (errors.AuthenticationFailed(status=401), 1, HIGH, Action.DEAD_LETTER, 0.0),
        (errors.Forbidden(status=403), 1, HIGH, Action.DEAD_LETTER, 0.0),
        (errors.NotFound(status=404), 2, HIGH, Action.DEAD_LETTER, 0.0),
        (errors.Conflict(status=409), 1, HIGH, Action.DEAD_LETTER, 0.0),
        (errors.UnexpectedResponse(status=200), 1, HIGH, Action.DEAD_LETTER, 0.0),
        # not ready (an unpublished assignment): a long backoff (not_ready_delay, jittered in [d/2, d]) ...
        (errors.NotReady(status=422), 1, HIGH, Action.RETRY, 3600.0),
        (errors.NotReady(status=422), 1, LOW, Action.RETRY, 1800.0),
        (errors.NotReady(status=422), 4, HIGH, Action.RETRY, 3600.0),
        # ... then a dead letter once max_attempts attempts were made
        (errors.NotReady(status=422), 5, HIGH, Action.DEAD_LETTER, 0.0),
        # a newer score at the vendor is not a failure
        (errors.Superseded(status=409), 1, HIGH, Action.SUPERSEDED, 0.0),
        (errors.Superseded(status=400), 5, HIGH, Action.SUPERSEDED, 0.0),
    ],
)
def test_decide(error: errors.DeliveryError, attempt: int, rand: object, action: Action, delay: float) -> None:
    decision = decide(error, attempt, POLICY, rand)  # type: ignore[arg-type]
    assert decision.action is action
    assert decision.delay == pytest.approx(delay)


def test_cap_applies_to_long_backoffs() -> None:
    assert backoff(30, POLICY, lambda: 1.0) == 60.0
    assert backoff(30, POLICY, lambda: 0.0) == 30.0
    assert backoff(10_000, POLICY, lambda: 1.0) == 60.0  # no overflow


def test_reasons_say_what_happened() -> None:
    exhausted = decide(errors.VendorUnavailable("grade.put: HTTP 503", status=503), 5, POLICY)
    assert exhausted.reason.startswith("exhausted after 5 attempts: HTTP 503")
    permanent = decide(errors.NotFound("grade.put: HTTP 404", status=404, vendor_message="Course not found"), 1, POLICY)
    assert permanent.reason == "permanent: HTTP 404 — grade.put: HTTP 404 — vendor said: Course not found"


def test_single_attempt_policy_never_retries() -> None:
    assert decide(errors.NetworkError(), 1, RetryPolicy(max_attempts=1)).action is Action.DEAD_LETTER


def test_a_dead_letter_reason_ends_with_what_the_operator_must_do() -> None:
    error = errors.NotReady("score.post: HTTP 422", status=422, vendor_message="This assignment is still unpublished")
    error.action = "publish the assignment in the LMS, then requeue the dead letter"
    decision = decide(error, POLICY.max_attempts, POLICY)
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason.startswith(f"exhausted after {POLICY.max_attempts} attempts: HTTP 422")
    assert decision.reason.endswith("to do: publish the assignment in the LMS, then requeue the dead letter")
    assert "still unpublished" in decision.reason
    permanent = errors.NotFound("score.post: HTTP 404", status=404)
    permanent.action = "re-link the item"
    assert decide(permanent, 1, POLICY).reason == "permanent: HTTP 404 — score.post: HTTP 404 — to do: re-link the item"
    assert permanent.as_record()["action"] == "re-link the item"
    assert "action" not in errors.NotFound("x").as_record()
