"""`gradesync sandbox --rate-limit` / `--outage` specs."""

from __future__ import annotations

import pytest

from sandbox.rehearsal import Outage, RateLimit, parse_outage, parse_rate_limit

VENDORS = ("learningstudio", "ltiaas", "edlink", "thoughtindustries")


@pytest.mark.parametrize(("text", "expected"), [
    ("thoughtindustries=600", RateLimit("thoughtindustries", 600.0)),
    ("thoughtindustries=600:100", RateLimit("thoughtindustries", 600.0, 100)),
    (" ltiaas=0.5 ", RateLimit("ltiaas", 0.5)),
])
def test_rate_limit_specs(text: str, expected: RateLimit) -> None:
    assert parse_rate_limit(text, VENDORS) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("ltiaas=60", Outage("ltiaas", 60.0, 0.0)),
    ("ltiaas=60@30", Outage("ltiaas", 60.0, 30.0)),
    ("edlink=1.5@0.5", Outage("edlink", 1.5, 0.5)),
])
def test_outage_specs(text: str, expected: Outage) -> None:
    assert parse_outage(text, VENDORS) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("thoughtindustries", "use VENDOR=PER_MIN[:BURST]"),
    ("moodle=60", "unknown vendor 'moodle'"),
    ("ltiaas=0", "more than 0"),
    ("ltiaas=60:0", "at least 1"),
    ("ltiaas=-5", "use VENDOR=PER_MIN"),
    ("ltiaas=60:1.5", "use VENDOR=PER_MIN"),
])
def test_bad_rate_limit_specs_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_rate_limit(text, VENDORS)


@pytest.mark.parametrize(("text", "message"), [
    ("ltiaas", "use VENDOR=SECONDS"),
    ("ltiaas=60@", "use VENDOR=SECONDS"),
    ("moodle=60", "unknown vendor"),
    ("ltiaas=0", "more than 0 seconds"),
])
def test_bad_outage_specs_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_outage(text, VENDORS)


def test_descriptions() -> None:
    assert RateLimit("thoughtindustries", 600, 100).describe() == \
        "rate limit 600/min, burst 100 (429 + Retry-After beyond it)"
    assert Outage("ltiaas", 60, 30).describe() == "outage: 503 to every request for 60s, starting in 30s"
    assert Outage("ltiaas", 60).describe().endswith("starting now")
