"""The adaptive rate's rule (worker.flow.rate): how a 429 lowers a destination's rate and how it recovers
in time. One table for the decrease, one for the recovery, and the rule as ``after()`` applies it."""

from __future__ import annotations

import pytest

from worker.flow.decide import DEFAULT_THROTTLE, FlowState, Knobs, Outcome, after
from worker.flow.rate import (
    DOUBLING,
    FALLBACK_RATE,
    MIN_RATE,
    RECOVERY_MAX,
    Adapted,
    lowered,
    refused_rate,
)

NOW = 1_000_000.0
LIMITED = Knobs(rate=600.0, burst=10)
UNLIMITED = Knobs(rate=None)


def st(**fields: str) -> FlowState:
    return FlowState.parse(fields)


@pytest.mark.parametrize(("case", "refused", "before", "configured", "first", "base", "back_after"), [
    # a quiet destination (5 scores in 5 s = 60/min) refused once: half of that, unlimited again after the
    # doubling reaches 4 x the refused rate (3 doublings)
    ("quiet", 60.0, None, None, True, 30.0, 3 * DOUBLING),
    # a busy destination that jumped from 300/min to 1 200/min and was refused: half of the refused rate
    ("busy, a burst", 1200.0, 300.0, None, True, 600.0, 3 * DOUBLING),
    # refused at 1.5 x what it did before: never lower than what the vendor took before the burst
    ("busy, a small burst", 1200.0, 800.0, None, True, 800.0, DOUBLING * 2.584962500721156),
    # what it did before is no floor once a lowered rate is in force (a repeated 429)
    ("repeated 429", 400.0, 800.0, None, False, 200.0, 3 * DOUBLING),
    # a configured limit: half of it, back at it after one doubling
    ("configured", 600.0, None, 600.0, True, 300.0, DOUBLING),
    ("configured, before ignored", 600.0, 600.0, 600.0, True, 300.0, DOUBLING),
    # never below MIN_RATE; never back later than RECOVERY_MAX
    ("slowest", 8.0, None, None, True, MIN_RATE, DOUBLING * 2.415037499278844),  # log2(32 / 6)
    ("far below the limit", 12.0, None, 6000.0, False, MIN_RATE, RECOVERY_MAX),
])
def test_decrease(case: str, refused: float, before: float | None, configured: float | None, first: bool,
                  base: float, back_after: float) -> None:
    since = NOW + 2.0
    got = lowered(refused=refused, before=before, configured=configured, first=first, since=since)
    assert got.base == pytest.approx(base), case
    assert got.since == since and got.refused == refused
    assert got.until - since == pytest.approx(back_after, abs=0.01), case


@pytest.mark.parametrize(("in_force", "sent", "refused"), [
    (600.0, 90.0, 600.0),          # a limit in force (adapted or configured) is the rate refused
    (None, 90.0, 90.0),            # else what was sent recently
    (None, None, FALLBACK_RATE),   # else the fallback
])
def test_refused_rate(in_force: float | None, sent: float | None, refused: float) -> None:
    assert refused_rate(in_force=in_force, sent=sent) == refused


@pytest.mark.parametrize(("seconds", "rate"), [
    (-5.0, 30.0),                  # during the pause: the base
    (0.0, 30.0),
    (DOUBLING, 60.0),              # doubles every DOUBLING seconds
    (2 * DOUBLING, 120.0),
    (2.5 * DOUBLING, 169.7056),
    (3 * DOUBLING - 0.001, 240.0),
    (3 * DOUBLING, None),          # ended: the configured limit again, or none
    (3600.0, None),
])
def test_recovery_in_time(seconds: float, rate: float | None) -> None:
    adapted = Adapted(base=30.0, since=NOW, until=NOW + 3 * DOUBLING, refused=60.0)
    got = adapted.at(NOW + seconds)
    assert got == (None if rate is None else pytest.approx(rate, rel=1e-3))


def test_the_issue_scenario_is_unlimited_again_within_a_minute() -> None:
    """A quiet destination (1 score a second) answered one 429 with Retry-After: 2 — the burst 30 s later
    meets the rate back to unlimited, or nearly."""
    quiet = st(sent_t=str(NOW - 4), sent_n="5", sent_prev="0")
    t = after(quiet, UNLIMITED, Outcome.THROTTLED, NOW, retry_after=2, detail="HTTP 429")
    state = FlowState.parse(t.set)
    assert state.effective_rate(UNLIMITED, NOW + 2) == pytest.approx(30.0)   # half of 60/min refused
    assert state.effective_rate(UNLIMITED, NOW + 12) == pytest.approx(60.0)
    assert state.effective_rate(UNLIMITED, NOW + 2 + 60) is None             # unlimited within a minute
    assert state.rate_until is not None and state.rate_until <= NOW + 2 + RECOVERY_MAX
    assert "at 60/min: lowered to 30/min" in state.rate_reason


def test_a_429_with_and_without_retry_after() -> None:
    with_ra = FlowState.parse(after(st(), LIMITED, Outcome.THROTTLED, NOW, retry_after=7).set)
    without = FlowState.parse(after(st(), LIMITED, Outcome.THROTTLED, NOW).set)
    assert with_ra.throttled_until == NOW + 7 and with_ra.rate_since == NOW + 7  # recovery starts after
    assert without.throttled_until == NOW + DEFAULT_THROTTLE and without.rate_since == NOW + DEFAULT_THROTTLE
    assert with_ra.rate == without.rate == 300.0


def test_a_429_during_the_recovery_halves_the_rate_in_force() -> None:
    lowered_ = FlowState.parse(after(st(), LIMITED, Outcome.THROTTLED, NOW, retry_after=1).set)
    assert lowered_.rate_since is not None
    later = lowered_.rate_since + DOUBLING / 2  # 300 * 2^0.5 = 424/min in force
    again = FlowState.parse({**{k: v for k, v in after(lowered_, LIMITED, Outcome.SUCCESS, later).set.items()},
                             **after(lowered_, LIMITED, Outcome.THROTTLED, later, retry_after=1).set})
    assert again.rate == pytest.approx(212.132, rel=1e-3)
    assert again.epoch == 2


def test_a_configured_limit_comes_back_and_success_clears_the_ended_rate() -> None:
    state = FlowState.parse(after(st(), LIMITED, Outcome.THROTTLED, NOW, retry_after=1).set)
    assert state.effective_rate(LIMITED, NOW + 1) == 300.0
    assert state.effective_rate(LIMITED, NOW + 1 + DOUBLING) == 600.0  # back at the configured limit
    assert after(state, LIMITED, Outcome.SUCCESS, NOW + 5).empty          # in force: nothing to write
    done = after(state, LIMITED, Outcome.SUCCESS, NOW + 1 + DOUBLING)
    assert set(done.delete) >= {"rate", "rate_since", "rate_until", "rate_reason"}
    assert not state.clean(NOW + 1 + DOUBLING) and state.clean(NOW + 5)


def test_a_rate_written_by_an_earlier_version_has_ended() -> None:
    old = st(rate="20")  # no rate_since / rate_until: the AIMD rate of before
    assert old.effective_rate(UNLIMITED, NOW) is None
    assert old.effective_rate(LIMITED, NOW) == 600.0
    assert "rate" in after(old, UNLIMITED, Outcome.SUCCESS, NOW).delete


def test_a_rate_paced_from_budget_headers_recovers_slower_than_one_lowered_by_a_429() -> None:
    from worker.flow.rate import PACED_DOUBLING, paced

    got = paced(60.0, current=240.0, configured=None, now=NOW)
    assert (got.base, got.since, got.doubling) == (60.0, NOW, PACED_DOUBLING)
    assert got.at(NOW + PACED_DOUBLING) == pytest.approx(120.0)
    assert got.until == NOW + RECOVERY_MAX  # the headers re-pace it while the budget stays low
    stored = FlowState.parse(got.fields("X-Rate-Limit-Remaining 2 of 10"))
    assert stored.effective_rate(UNLIMITED, NOW + PACED_DOUBLING) == pytest.approx(120.0)  # its doubling is kept
