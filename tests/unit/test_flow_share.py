"""Fair share of a worker process's threads, and the destinations' flow-control settings."""

from __future__ import annotations

import pytest

from worker.flow.share import MAX_DEFER, MIN_DEFER, FairShare, defer_delay, share_limit
from worker.settings import ConfigError, parse_destinations


@pytest.mark.parametrize(("max_concurrency", "slots", "limit"), [
    (None, 16, 8), (None, 4, 2), (None, 1, 1), (None, 3, 1), (3, 16, 3), (40, 16, 16), (1, 16, 1),
])
def test_share_limit(max_concurrency: int | None, slots: int, limit: int) -> None:
    assert share_limit(max_concurrency, slots) == limit


def test_a_process_serving_one_destination_shares_with_no_one() -> None:
    assert share_limit(None, 16, destinations=1) == 16
    assert share_limit(4, 16, destinations=1) == 4
    share = FairShare(2, destinations=1)
    assert share.enter("only", None) and share.enter("only", None)


def test_a_destination_never_holds_more_than_its_share() -> None:
    share = FairShare(4)
    assert share.enter("slow", None) and share.enter("slow", None)
    assert not share.enter("slow", None)  # half of 4
    assert share.enter("fast", None)  # the others still get threads
    share.leave("slow", 5.0)
    assert share.held("slow") == 1 and share.enter("slow", None)


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
    with share.slot("d", None) as first:
        assert first and share.held("d") == 1
        with share.slot("d", None) as second:
            assert not second and share.held("d") == 1  # over its share: nothing taken
    assert share.held("d") == 0
