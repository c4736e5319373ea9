"""The pure flow-control decisions: admission, breaker transitions, cool-down growth, the 429 pause (the
adaptive rate's own rule: ``test_flow_rate.py``)."""

from __future__ import annotations

import pytest

from worker import errors
from worker.flow.decide import (
    DEFAULT_THROTTLE,
    FlowState,
    Gate,
    Knobs,
    Outcome,
    admit,
    after,
    cooldown,
)
from worker.flow.drain import drain_batch, healthy
from worker.flow.gate import outcome_of
from worker.flow.rate import FALLBACK_RATE

NOW = 1_000_000.0
K = Knobs(rate=600.0, burst=10, breaker_failures=5, cooldown=30.0, max_cooldown=600.0, max_event_age=3600.0)
UNLIMITED = Knobs(rate=None)


def st(**fields: str) -> FlowState:
    return FlowState.parse(fields)


@pytest.mark.parametrize(("state", "knobs", "since", "reservation", "gate"), [
    (st(), K, NOW, None, Gate.LIMIT),                                     # healthy, limited: take a slot
    (st(), UNLIMITED, NOW, None, Gate.GO),                                # healthy, no limit
    (st(), K, NOW, (0, NOW), Gate.GO),                                    # holds a valid slot
    (st(), K, NOW, (0, NOW + 5), Gate.LIMIT),                             # its slot is still ahead
    (st(), K, NOW, (0, NOW - 100), Gate.LIMIT),                           # its slot went stale
    (st(epoch="1"), K, NOW, (0, NOW), Gate.LIMIT),                        # the rate dropped since
    (st(paused="1"), K, NOW, None, Gate.PARK),                            # operator pause parks
    (st(paused="1", breaker="open", probe_at="0"), K, NOW, None, Gate.PARK),  # pause beats a due probe
    (st(breaker="open", probe_at=str(NOW + 10)), K, NOW, None, Gate.PARK),
    (st(breaker="open", probe_at=str(NOW - 1)), K, NOW, None, Gate.PROBE),
    (st(breaker="half_open", probe_deadline=str(NOW + 10)), K, NOW, None, Gate.PARK),
    (st(breaker="half_open", probe_deadline=str(NOW - 1)), K, NOW, None, Gate.PROBE),  # lost probe
    (st(throttled_until=str(NOW + 3)), K, NOW, None, Gate.WAIT),
    (st(throttled_until=str(NOW - 3)), K, NOW, None, Gate.LIMIT),         # the pause is over
    (st(paused="1"), K, NOW - 7200, None, Gate.EXPIRE),                   # waited past max_event_age
    (st(breaker="open", probe_at=str(NOW + 10)), K, NOW - 7200, None, Gate.EXPIRE),
    (st(), K, NOW - 7200, None, Gate.LIMIT),                              # old but healthy: try it
])
def test_admit(state: FlowState, knobs: Knobs, since: float, reservation: tuple[int, float] | None,
               gate: Gate) -> None:
    assert admit(state, knobs, NOW, waiting_since=since, reservation=reservation).gate is gate


def test_admit_reasons_say_why() -> None:
    paused = admit(st(paused="1", paused_reason="vendor maintenance"), K, NOW, waiting_since=NOW)
    assert paused.reason == "the destination is paused by an operator: vendor maintenance"
    expired = admit(st(breaker="open", probe_at=str(NOW + 9), breaker_reason="5 consecutive transient failures"),
                    K, NOW, waiting_since=NOW - 7200)
    assert "longer than max_event_age (1.0 h)" in expired.reason and "circuit is open" in expired.reason
    wait = admit(st(throttled_until=str(NOW + 3)), K, NOW, waiting_since=NOW)
    assert wait.until == NOW + 3


def test_transient_failures_open_the_breaker_after_the_threshold() -> None:
    state = st()
    for n in range(1, 5):
        t = after(state, K, Outcome.TRANSIENT, NOW, detail="HTTP 503")
        assert t.set == {"failures": str(n)} and not t.park and not t.opened
        state = st(failures=str(n))
    t = after(state, K, Outcome.TRANSIENT, NOW, detail="HTTP 503 — Service Unavailable")
    assert t.opened and t.park
    assert t.set["breaker"] == "open" and t.set["opened"] == "1"
    assert float(t.set["probe_at"]) == NOW + 30
    assert t.set["breaker_reason"] == "5 consecutive transient failures: HTTP 503 — Service Unavailable"


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.PERMANENT, Outcome.THROTTLED])
def test_an_answering_vendor_resets_the_failure_count(outcome: Outcome) -> None:
    t = after(st(failures="4"), K, outcome, NOW)
    assert t.set.get("failures") == "0" and "breaker" not in t.set


def test_permanent_errors_never_trip_the_breaker() -> None:
    state = st()
    for _ in range(20):
        t = after(state, K, Outcome.PERMANENT, NOW)
        assert not t.opened and not t.park
    assert after(st(), K, Outcome.PERMANENT, NOW).empty


def test_a_429_never_counts_toward_the_breaker() -> None:
    t = after(st(failures="4"), K, Outcome.THROTTLED, NOW, retry_after=2)
    assert "breaker" not in t.set and not t.park


def test_failures_while_open_park_without_changing_the_breaker() -> None:
    t = after(st(breaker="open", probe_at=str(NOW + 10), opened="1"), K, Outcome.TRANSIENT, NOW)
    assert t.park and t.empty


def test_a_failed_probe_reopens_with_a_longer_cooldown() -> None:
    t = after(st(breaker="half_open", opened="2"), K, Outcome.TRANSIENT, NOW, probe=True, detail="timeout")
    assert t.opened and t.park
    assert t.set["opened"] == "3" and float(t.set["probe_at"]) == NOW + 90
    assert t.set["breaker_reason"] == "probe failed: timeout"


@pytest.mark.parametrize("outcome", [Outcome.SUCCESS, Outcome.PERMANENT, Outcome.THROTTLED])
def test_a_probe_the_vendor_answers_closes_the_breaker(outcome: Outcome) -> None:
    t = after(st(breaker="half_open", opened="3", probe_at=str(NOW - 1)), K, outcome, NOW, probe=True)
    assert t.closed and t.set["breaker"] == "closed" and t.set["opened"] == "0"
    assert "probe_at" in t.delete and "breaker_reason" in t.delete


def test_a_late_success_of_an_old_request_does_not_close_an_open_breaker() -> None:
    t = after(st(breaker="open", probe_at=str(NOW + 10)), K, Outcome.SUCCESS, NOW)
    assert not t.closed and "breaker" not in t.set


@pytest.mark.parametrize(("opened", "seconds"), [(0, 30), (1, 30), (2, 60), (3, 90), (19, 570), (20, 600),
                                                 (50, 600)])
def test_cooldown_grows_with_each_opening_and_is_capped(opened: int, seconds: float) -> None:
    assert cooldown(opened, K) == seconds


def test_a_new_429_pauses_the_destination_and_halves_the_rate() -> None:
    t = after(st(), K, Outcome.THROTTLED, NOW, retry_after=7, detail="HTTP 429 — rate_limit_exceeded")
    assert float(t.set["throttled_until"]) == NOW + 7
    assert float(t.set["rate"]) == 300.0 and t.set["epoch"] == "1" and t.slowed
    assert t.set["throttled_reason"] == "HTTP 429 — rate_limit_exceeded"


def test_429s_during_the_same_pause_halve_only_once() -> None:
    t = after(st(rate="300", epoch="1", throttled_until=str(NOW + 5)), K, Outcome.THROTTLED, NOW, retry_after=1)
    assert "rate" not in t.set and not t.slowed
    assert float(t.set["throttled_until"]) == NOW + 5  # never shortened


def test_a_429_without_retry_after_pauses_the_default() -> None:
    t = after(st(), K, Outcome.THROTTLED, NOW)
    assert float(t.set["throttled_until"]) == NOW + DEFAULT_THROTTLE


def test_without_a_configured_rate_a_429_halves_the_rate_seen() -> None:
    sent = st(sent_t=str(NOW - 5), sent_n="100", sent_prev="0")  # 100 requests in the last 5 s = 1200/min
    t = after(sent, UNLIMITED, Outcome.THROTTLED, NOW, retry_after=1)
    assert float(t.set["rate"]) == pytest.approx(600.0)
    assert float(after(st(), UNLIMITED, Outcome.THROTTLED, NOW).set["rate"]) == FALLBACK_RATE / 2


def test_success_writes_nothing_while_a_lowered_rate_recovers_and_clears_it_once_ended() -> None:
    lowered = {"rate": "300", "rate_since": str(NOW - 5), "rate_until": str(NOW + 5)}
    assert after(st(**lowered), K, Outcome.SUCCESS, NOW).empty
    assert "rate" in after(st(**lowered), K, Outcome.SUCCESS, NOW + 6).delete
    assert after(st(), K, Outcome.SUCCESS, NOW).empty  # nothing to write in the steady state


def test_effective_rate_prefers_the_adapted_one() -> None:
    lowered = {"rate_since": str(NOW), "rate_until": str(NOW + 30)}
    assert st(rate="250", **lowered).effective_rate(K, NOW) == 250.0
    assert st(rate="900", **lowered).effective_rate(K, NOW) == 600.0  # the configured limit was lowered since
    assert st(rate="250", **lowered).effective_rate(K, NOW + 30) == 600.0  # recovered
    assert st().effective_rate(K, NOW) == 600.0
    assert st().effective_rate(UNLIMITED, NOW) is None


def test_sent_rate_is_a_sliding_window() -> None:
    assert st().sent_rate(NOW) is None
    assert st(sent_t=str(NOW - 2.5), sent_n="10", sent_prev="20").sent_rate(NOW) == pytest.approx(240.0)
    assert st(sent_t=str(NOW - 60), sent_n="10").sent_rate(NOW) is None  # too old


@pytest.mark.parametrize(("exc", "outcome"), [
    (errors.RateLimited(status=429), Outcome.THROTTLED),
    (errors.VendorUnavailable(status=503), Outcome.TRANSIENT),
    (errors.VendorTimeout(), Outcome.TRANSIENT),
    (errors.NetworkError(), Outcome.TRANSIENT),
    (errors.NotFound(status=404), Outcome.PERMANENT),
    (errors.AuthenticationFailed(status=401), Outcome.PERMANENT),
    (errors.Superseded(), Outcome.SUCCESS),
])
def test_outcome_of(exc: errors.DeliveryError, outcome: Outcome) -> None:
    assert outcome_of(exc) is outcome


def test_drain_batch_follows_the_rate() -> None:
    assert drain_batch(st(), K, 1.0, NOW) == 21
    assert drain_batch(st(rate="6", rate_since=str(NOW), rate_until=str(NOW + 30)), K, 1.0, NOW) == 5
    assert drain_batch(st(), UNLIMITED, 1.0, NOW) == 200


def test_healthy() -> None:
    assert healthy(st(), NOW)
    assert not healthy(st(paused="1"), NOW)
    assert not healthy(st(breaker="half_open"), NOW)
    assert not healthy(st(throttled_until=str(NOW + 1)), NOW)
    assert healthy(st(throttled_until=str(NOW - 1)), NOW)
