"""Pacing from the vendor's rate-limit headers: the pure rule, table-tested."""

from __future__ import annotations

import httpx
import pytest

from worker.adapters.client import make_client, take_budget
from worker.flow.headers import Budget, concurrency_cap, lowers, paced_rate, parse

NOW = 1_750_000_000.0


@pytest.mark.parametrize(("headers", "budget"), [
    ({"X-Rate-Limit-Remaining": "587.5", "X-Request-Cost": "5.0"}, Budget(587.5, None, 5.0)),  # Canvas
    ({"X-Rate-Limit-Remaining": "49000", "X-Rate-Limit-Reset": "42", "X-Request-Cost": "10"},
     Budget(49000.0, 42.0, 10.0)),  # D2L
    ({"X-RateLimit-Remaining": "17", "X-RateLimit-Reset": str(int(NOW) + 30)}, Budget(17.0, 30.0, None)),  # TI, epoch
    ({"X-Rate-Limit-Remaining": "0.0"}, Budget(0.0, None, None)),
    ({"X-Request-Cost": "5"}, None),  # no remaining: nothing to pace on
    ({"X-Rate-Limit-Remaining": "lots"}, None),
    ({"X-Rate-Limit-Remaining": "-3"}, None),
    ({"X-Rate-Limit-Remaining": "nan"}, None),
])
def test_parse(headers: dict[str, str], budget: Budget | None) -> None:
    assert parse(httpx.Headers(headers), NOW) == budget


@pytest.mark.parametrize(("budget", "capacity", "current", "rate"), [
    # Canvas leaky bucket (capacity 600, leak 10/s, cost 5: 120/min sustainable): comfortable ...
    (Budget(590, None, 5), 600, None, None),
    (Budget(300, None, 5), 600, None, None),  # exactly twice the floor (150): still comfortable
    # ... near the floor: just under the sustainable rate; below it: half of it
    (Budget(299, None, 5), 600, None, 108.0),
    (Budget(149, None, 5), 600, None, 60.0),
    (Budget(0, None, 5), 600, None, 60.0),
    # real Canvas costs are small: the sustainable rate is high, pacing barely matters
    (Budget(200, None, 0.05), 600, None, 10800.0),
    # D2L: 50 000 credits a minute, 10 a call; 3 000 credits left 20 s before the reset
    (Budget(3000, 20, 10), 50000, None, 6.0),  # under the floor (12 500): the least pace
    (Budget(20000, 30, 10), 50000, None, (20000 - 12500) / 10 / 30 * 60),
    (Budget(40000, 30, 10), 50000, None, None),
    # Thought Industries (remaining in requests, reset in seconds)
    (Budget(40, 20, None), 120, 300.0, (40 - 30) / 20 * 60),
    (Budget(10, 0, None), 120, 300.0, 6.0),  # nothing left above the floor: the least pace
    # remaining only: below the floor, half the current rate, if known
    (Budget(10, None, None), 120, 200.0, 100.0),
    (Budget(10, None, None), 120, None, None),
    (Budget(50, None, None), 120, 200.0, None),  # above the floor: nothing to do
    # the capacity is at least what is reported now
    (Budget(500, None, 5), 0, None, None),
])
def test_paced_rate(budget: Budget, capacity: float, current: float | None, rate: float | None) -> None:
    got = paced_rate(budget, capacity, current)
    assert got == (None if rate is None else pytest.approx(rate, abs=0.01))


@pytest.mark.parametrize(("paced", "rate", "expected"), [
    (None, 100.0, False), (90.0, None, True), (90.0, 100.0, True), (96.0, 100.0, False), (120.0, 100.0, False)])
def test_pacing_only_lowers(paced: float | None, rate: float | None, expected: bool) -> None:
    assert lowers(paced, rate) is expected


def test_the_client_notes_the_budget_of_ordinary_answers_only() -> None:
    from tests.unit.lti_support import destination

    answers = iter([httpx.Response(200, headers={"X-Rate-Limit-Remaining": "420.0", "X-Request-Cost": "5"}),
                    httpx.Response(403, headers={"X-Rate-Limit-Remaining": "0.0"}, text="403 Forbidden (Rate Limit "
                                                                                          "Exceeded)"),
                    httpx.Response(200)])
    client = make_client(destination(), transport=httpx.MockTransport(lambda r: next(answers)))
    take_budget()
    client.get("/a")
    assert take_budget() == {"X-Rate-Limit-Remaining": "420.0", "X-Request-Cost": "5"}
    assert take_budget() is None  # taken once
    client.get("/b")  # a refusal's headers are the throttle's business, not the pace's
    client.get("/c")  # no budget headers
    assert take_budget() is None


@pytest.mark.parametrize(("budget", "capacity", "cap"), [
    (Budget(600, None, 0.05), 600, 10),  # a full Canvas bucket: (600 - 150) / 50 in flight, plus one
    (Budget(320, None, 0.05), 600, 4),
    (Budget(150, None, 0.05), 600, 1),  # at the floor: one at a time ("more-or-less sequential")
    (Budget(0, None, 0.05), 600, 1),
    (Budget(40000, 30, 10), 50000, None),  # D2L: a window, no in-flight charge
    (Budget(10, None, None), 120, None),
])
def test_concurrency_cap(budget: Budget, capacity: float, cap: int | None) -> None:
    assert concurrency_cap(budget, capacity) == cap
