"""Terminal text: durations humanised; the destinations table neutralises control characters and aligns."""

from __future__ import annotations

import pytest

from worker.ops.text import humanize_duration, humanize_since, humanize_until


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.9, "0s"), (45, "45s"), (60, "1m"), (192, "3m 12s"), (3600, "1h"), (7500, "2h 5m"),
    (86400, "1d"), (3 * 86400 + 4 * 3600 + 59, "3d 4h"), (-5, "0s"),
])
def test_humanize_duration(seconds: float, text: str) -> None:
    assert humanize_duration(seconds) == text


def test_humanize_since_and_until() -> None:
    now = 1_000_000.0
    assert humanize_since(None, now=now) == "-"
    assert humanize_since(now - 0.2, now=now) == "just now"
    assert humanize_since(now - 192, now=now) == "3m 12s ago"
    assert humanize_since(now + 5, now=now) == "just now"  # clock skew between hosts
    assert humanize_until(now + 12, now=now) == "in 12s"
    assert humanize_until(now - 3, now=now) == "now"
    assert humanize_until(None, now=now) == "-"


def test_the_destinations_table_neutralises_and_aligns() -> None:
    from worker.ops.destinations_cli import rate_text, render_table
    from worker.ops.flow_status import derive

    now = 1_000_000.0
    open_ = derive("acme-ti", "thoughtindustries", {"breaker": "open", "breaker_since": str(now - 65),
                                                    "probe_at": str(now + 30), "rate": "60",
                                                    "rate_since": str(now), "rate_until": str(now + 9),
                                                    "breaker_reason": "503 \x1b[31mred\x1b[0m"}, 12, 120.0, now)
    closed = derive("b", "ltiaas", {}, 0, None, now)
    lines = render_table([open_, closed], now, colour=False)
    assert lines[0].split() == ["DESTINATION", "VENDOR", "STATE", "SINCE", "RATE/MIN", "PARKED", "REASON"]
    assert "\x1b" not in "".join(lines)
    assert lines[1].split()[:7] == ["acme-ti", "thoughtindustries", "open", "1m", "5s", "ago", "60/120"]
    assert lines[1].endswith("503 \\x1b[31mred\\x1b[0m (next probe in 30s)")
    assert lines[2].split()[:5] == ["b", "ltiaas", "closed", "-", "unlimited"]
    assert lines[1].index("open") == lines[2].index("closed")  # columns line up
    lowered = {"rate_since": str(now), "rate_until": str(now + 9)}
    assert [rate_text(derive("x", "edlink", f, 0, c, now)) for f, c in [
        ({}, 120.0), ({"rate": "60", **lowered}, 120.0), ({"rate": "90.25", **lowered}, None), ({}, None)]] == [
        "120", "60/120", "90.2 (learnt)", "unlimited"]
