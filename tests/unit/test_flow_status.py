"""The state operators see, derived from the flow hash's fields (pure), and pause reasons."""

from __future__ import annotations

import pytest

from worker.ops.flow_status import MAX_REASON, clean_reason, derive

NOW = 1_700_000_000.0
OPEN = {"breaker": "open", "breaker_reason": "5 consecutive transient failures: 503 Service Unavailable",
        "breaker_since": str(NOW - 90), "probe_at": str(NOW + 12)}
PAUSED = {"paused": "1", "paused_reason": "vendor maintenance 02:00-04:00", "paused_by": "cli:alice",
          "paused_since": str(NOW - 600)}
THROTTLED = {"throttled_until": str(NOW + 30), "throttled_reason": "429 Too Many Requests (Retry-After 30)"}


def state(fields: dict[str, str], configured: float | None = 120.0, parked: int = 0) -> tuple[str, str, float | None]:
    s = derive("ti", "thoughtindustries", fields, parked, configured, NOW)
    return s.state, s.reason, s.since


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, "closed"),
    ({"breaker": "closed", "breaker_since": str(NOW - 5)}, "closed"),
    ({"breaker": "half_open", "breaker_since": str(NOW - 1)}, "half_open"),
    (OPEN, "open"),
    ({**OPEN, "breaker": "half_open"}, "half_open"),
    (PAUSED, "paused"),
    ({**OPEN, **PAUSED}, "paused"),                                     # paused > open
    ({**OPEN, **THROTTLED}, "paused"),                                  # a 429 in force counts as paused
    ({"breaker": "half_open", **THROTTLED}, "paused"),
    ({**OPEN, "throttled_until": str(NOW - 1)}, "open"),                # a 429 that expired does not
    ({"throttled_until": str(NOW - 1)}, "closed"),
    ({"paused": "0", **OPEN}, "open"),                                  # only "1" is a pause
    ({"breaker": "something-new"}, "closed"),
])
def test_state_priority(fields: dict[str, str], expected: str) -> None:
    assert state(fields)[0] == expected


def test_reasons_and_since_say_which_state_and_when() -> None:
    assert state({}) == ("closed", "", None)
    assert state({"breaker": "closed", "breaker_since": str(NOW - 5)}) == ("closed", "", NOW - 5)
    assert state(OPEN) == ("open", OPEN["breaker_reason"], NOW - 90)
    assert state({**OPEN, **PAUSED}) == ("paused", "paused by cli:alice: vendor maintenance 02:00-04:00", NOW - 600)
    s, reason, since = state(THROTTLED)
    assert s == "paused" and since is None
    assert reason.startswith("throttled by the vendor until 2023-11-14T22:13:50.000Z")
    assert reason.endswith("429 Too Many Requests (Retry-After 30)")
    assert state({"paused": "1"})[1] == "paused by an operator: no reason given"


def test_probe_at_only_while_open() -> None:
    assert derive("x", "ltiaas", OPEN, 0, None, NOW).probe_at == NOW + 12
    assert derive("x", "ltiaas", {**OPEN, "breaker": "half_open"}, 0, None, NOW).probe_at is None
    assert derive("x", "ltiaas", {"probe_at": str(NOW)}, 0, None, NOW).probe_at is None


LOWERED = {"rate_since": str(NOW), "rate_until": str(NOW + 30), "rate_reason": "HTTP 429 at 121/min"}


@pytest.mark.parametrize(("fields", "configured", "rate"), [
    ({}, 120.0, 120.0),                 # configured
    ({"rate": "60.5", **LOWERED}, 120.0, 60.5),    # lowered after a 429
    ({"rate": "300", **LOWERED}, None, 300.0),     # lowered without a configured limit
    ({"rate": "300", **LOWERED, "rate_since": str(NOW - 10)}, None, 600.0),  # recovering: doubled
    ({"rate": "300", **LOWERED, "rate_until": str(NOW)}, None, None),        # recovered: unlimited again
    ({}, None, None),                   # unlimited
    ({"rate": "nan", **LOWERED}, 120.0, 120.0),    # garbage is ignored
    ({"rate": "fast"}, None, None),
])
def test_rate_is_the_hash_s_else_the_configured_one(fields: dict[str, str], configured: float | None,
                                                    rate: float | None) -> None:
    s = derive("ti", "thoughtindustries", fields, 3, configured, NOW)
    assert (s.rate_per_minute, s.configured_rate_per_minute, s.parked) == (rate, configured, 3)


def test_a_lowered_rate_says_why_and_when_it_is_back() -> None:
    s = derive("ti", "thoughtindustries", {"rate": "60", **LOWERED}, 0, 120.0, NOW)
    assert s.rate_reason == "HTTP 429 at 121/min" and s.rate_until == NOW + 30
    assert s.as_dict()["rate_until_iso"] == "2023-11-14T22:13:50.000Z"
    back = derive("ti", "thoughtindustries", {"rate": "60", **LOWERED}, 0, 120.0, NOW + 31)
    assert back.rate_reason == "" and back.rate_until is None and back.rate_per_minute == 120.0


def test_as_dict_has_iso_times() -> None:
    d = derive("ti", "thoughtindustries", OPEN, 7, 120.0, NOW).as_dict()
    assert d["state"] == "open" and d["parked"] == 7 and d["since"] == NOW - 90
    assert d["since_iso"] == "2023-11-14T22:11:50.000Z" and d["probe_at_iso"] == "2023-11-14T22:13:32.000Z"


def test_pause_reasons_are_one_clean_line_and_bounded() -> None:
    assert clean_reason("  vendor\nmaintenance\t window ") == "vendor maintenance window"
    assert clean_reason("evil \x1b[2Jclear") == "evil \\x1b[2Jclear"
    assert len(clean_reason("x" * MAX_REASON)) == MAX_REASON
    for bad in ("", "   \n\t", "x" * (MAX_REASON + 1)):
        with pytest.raises(ValueError):
            clean_reason(bad)
