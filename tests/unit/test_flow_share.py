"""Fair share of a worker process's threads, and the destinations' flow-control settings."""

from __future__ import annotations

import pytest

from worker.flow.share import (
    CONTENTION_WINDOW,
    MAX_DEFER,
    MIN_DEFER,
    FairShare,
    admit,
    defer_delay,
    held_to_share,
    share_limit,
)
from worker.settings import ConfigError, parse_destinations


@pytest.mark.parametrize(("max_concurrency", "slots", "contended", "limit"), [
    (None, 16, True, 8), (None, 4, True, 2), (None, 1, True, 1), (None, 3, True, 1), (3, 16, True, 3),
    (40, 16, True, 16), (1, 16, True, 1),  # an explicit max_concurrency is the limit, contended or not
    # no contention: every thread (work-conserving), an explicit max_concurrency still a hard cap
    (None, 16, False, 16), (None, 64, False, 64), (None, 1, False, 1), (3, 16, False, 3), (40, 16, False, 16),
])
def test_share_limit(max_concurrency: int | None, slots: int, contended: bool, limit: int) -> None:
    assert share_limit(max_concurrency, slots, contended) == limit


@pytest.mark.parametrize(("held", "max_concurrency", "slots", "contended", "ok"), [
    (0, None, 64, False, True), (63, None, 64, False, True), (64, None, 64, False, False),
    (31, None, 64, True, True), (32, None, 64, True, False), (40, None, 64, True, False),
    (0, 2, 64, False, True), (2, 2, 64, False, False), (40, 48, 64, True, True),
    (0, None, 1, True, True), (1, None, 1, True, False),
])
def test_admit(held: int, max_concurrency: int | None, slots: int, contended: bool, ok: bool) -> None:
    assert admit(held, max_concurrency, slots, contended) is ok


@pytest.mark.parametrize(("others", "typical", "held"), [
    (False, 0.05, False), (False, 1.0, False), (True, 0.05, True), (False, 5.0, True), (False, None, True),
    (True, None, True),
])
def test_held_to_share(others: bool, typical: float | None, held: bool) -> None:
    assert held_to_share(others, typical) is held


def fast(share: FairShare, *names: str) -> FairShare:
    """``names`` have each finished one fast attempt (the share knows them to be fast)."""
    for name in names:
        assert share.enter(name, None)
        share.leave(name, 0.05)
    return share


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_destination_alone_uses_every_thread() -> None:
    share = fast(FairShare(4, clock=Clock()), "busy")
    assert all(share.enter("busy", None) for _ in range(4))
    assert not share.enter("busy", None)  # every thread taken
    assert share.held("busy") == 4


def test_under_contention_a_destination_holds_at_most_its_share() -> None:
    clock = Clock()
    share = fast(FairShare(4, clock=clock), "slow")
    clock.now += CONTENTION_WINDOW + 0.1
    assert share.enter("slow", None) and share.enter("slow", None)
    assert share.enter("fast", None)  # another destination has work in hand
    assert not share.enter("slow", None)  # half of 4 while "fast" holds a thread
    share.leave("fast", 0.05)
    assert not share.enter("slow", None)  # "fast" was seen a moment ago: its next message is near
    clock.now += CONTENTION_WINDOW + 0.1
    assert share.enter("slow", None) and share.enter("slow", None)  # nobody else: every thread again


def test_a_destination_over_its_share_is_not_preempted_but_drains_to_it() -> None:
    share = fast(FairShare(4, clock=Clock()), "slow")
    assert all(share.enter("slow", None) for _ in range(3))
    assert share.enter("fast", None)  # under contention a destination with nothing held is admitted
    share.leave("slow", 5.0)
    assert not share.enter("slow", None)  # 2 held, share 2
    share.leave("slow", 5.0)
    assert share.enter("slow", None)  # 1 held: back under its share


def test_a_slow_or_unknown_destination_keeps_to_its_share_even_alone() -> None:
    share = FairShare(4, clock=Clock())
    assert share.enter("new", None) and share.enter("new", None)
    assert not share.enter("new", None)  # nothing known of its attempts yet: half
    share.leave("new", 5.0)
    share.leave("new", 5.0)
    assert share.enter("new", None) and share.enter("new", None) and not share.enter("new", None)  # slow: half


def test_an_explicit_max_concurrency_caps_even_alone() -> None:
    share = FairShare(16, clock=Clock())
    assert share.enter("capped", 2) and share.enter("capped", 2)
    assert not share.enter("capped", 2)


@pytest.mark.parametrize(("typical", "draw", "delay"), [
    (0.01, 0.0, MIN_DEFER), (5.0, 0.0, 5.0), (5.0, 1.0, 10.0), (500.0, 0.5, MAX_DEFER * 1.5),
])
def test_defer_delay_follows_the_destinations_attempt_time(typical: float, draw: float, delay: float) -> None:
    assert defer_delay(typical, draw) == delay


def test_the_over_share_delay_learns_how_slow_the_vendor_is() -> None:
    share = FairShare(2)
    assert share.enter("slow", None)
    share.leave("slow", 5.0)
    assert share.delay("slow", lambda: 0.0) == 5.0


def test_before_its_first_answer_the_delay_is_how_long_its_attempts_have_been_running() -> None:
    clock = Clock()
    share = FairShare(4, clock=clock)
    assert share.enter("slow", None) and share.enter("slow", None)  # two attempts, no answer yet
    assert share.delay("slow", lambda: 0.0) == 0.5  # nothing known: the shortest deferral
    clock.now += 3.0
    assert share.delay("slow", lambda: 0.0) == 3.0  # not answered for 3 s: at least 3 s slow
    share.leave("slow", 3.0)
    clock.now += 1.0
    assert share.delay("slow", lambda: 0.0) == 4.0  # the other one, still running, for 4 s now
    share.leave("slow", 4.0)
    assert share.delay("slow", lambda: 0.0) == 3.2  # none in flight: what its attempts took (smoothed)


def _one(**knobs: object) -> object:
    entry = {"vendor": "thoughtindustries", "base_url": "http://x", "api_key_env": "K", **knobs}
    return parse_destinations({"destinations": {"ti": entry}}, environ={})["ti"]


def test_flow_settings_defaults_and_vendor_limit() -> None:
    ti = _one()
    assert ti.rate_limit_per_minute == 120.0 and ti.burst == 20  # type: ignore[attr-defined]
    assert ti.max_event_age == 7 * 86_400 and ti.breaker_failures == 5  # type: ignore[attr-defined]
    assert _one(rate_limit_per_minute=0).rate_limit_per_minute is None  # type: ignore[attr-defined]
    custom = _one(rate_limit_per_minute=600)
    assert custom.burst is None and custom.configured_burst == 10  # type: ignore[attr-defined]
    lt = parse_destinations({"destinations": {"lt": {"vendor": "ltiaas", "base_url": "http://x",
                                                     "api_key_env": "K"}}}, environ={})["lt"]
    assert lt.rate_limit_per_minute is None and lt.configured_burst == 1


def test_flow_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="breaker_max_cooldown"):
        _one(breaker_cooldown=100, breaker_max_cooldown=10)
    with pytest.raises(ConfigError, match="max_concurrency"):
        _one(max_concurrency=0)


def test_slot_holds_a_thread_only_while_admitted() -> None:
    share = FairShare(2)
    assert share.enter("other", None)  # contention: "d" may hold one of the two threads
    with share.slot("d", None) as first:
        assert first and share.held("d") == 1
        with share.slot("d", None) as second:
            assert not second and share.held("d") == 1  # over its share: nothing taken
    assert share.held("d") == 0
