"""Pacing from a vendor's rate-limit headers, before any refusal (pure; table-tested in
``tests/unit/test_flow_headers.py``).

Some platforms say on every ordinary answer how much of their budget is left: Canvas
``X-Rate-Limit-Remaining`` and ``X-Request-Cost`` (a leaky bucket that leaks 10 units a second, high-water
mark 600); D2L ``X-Rate-Limit-Remaining`` (credits), ``X-Rate-Limit-Reset`` (seconds until the budget is
back) and ``X-Request-Cost``; Thought Industries ``X-RateLimit-Remaining`` / ``X-RateLimit-Reset``. Waiting
for the refusal costs a pause and a halved rate (:func:`worker.flow.decide.after`); reading the budget
lets the destination slow down while there is some left.

:func:`paced_rate` is the rule: the requests a minute that keep ``remaining`` above a floor (a share of
the largest ``remaining`` seen, the budget's capacity), or None while the budget is comfortable;
:func:`concurrency_cap` the requests at once a bucket that charges in-flight requests can carry (Canvas:
parallel requests empty it faster), which caps the destination's threads in the process. It only
ever *lowers* the destination's rate (:meth:`worker.flow.gate.FlowControl.pace`, as a lowered rate of
:mod:`worker.flow.rate`); its recovery in time (doubling every 10 s) raises it again, and the headers pull it
back before the floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: the headers read, case-insensitively (httpx headers are)
REMAINING = ("X-Rate-Limit-Remaining", "X-RateLimit-Remaining")
RESET = ("X-Rate-Limit-Reset", "X-RateLimit-Reset")
COST = ("X-Request-Cost",)
ALL = REMAINING + RESET + COST

#: keep ``remaining`` above this share of the budget's capacity (the largest ``remaining`` seen)
FLOOR_SHARE = 0.25
#: a bucket reported by cost alone leaks this many units a second (Canvas ``request_throttle.rb``)
LEAK_PER_SECOND = 10.0
#: below the floor, pace at this share of the sustainable rate (the bucket refills); between the floor
#: and twice the floor, at NEAR_FLOOR of it
BELOW_FLOOR = 0.5
NEAR_FLOOR = 0.9
#: never pace below this many requests a minute (decide.MIN_RATE)
MIN_PACE = 6.0
#: what Canvas charges a request while it is in flight (``request_throttle.rb`` up-front cost)
IN_FLIGHT_COST = 50.0
#: a reset larger than this is an epoch time, not seconds
EPOCH = 1_000_000_000.0


@dataclass(frozen=True)
class Budget:
    """What one answer said of the vendor's rate-limit budget."""

    remaining: float
    reset: float | None = None  # seconds until the budget is back
    cost: float | None = None  # what this request cost, in the budget's units


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> float | None:
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if value == value and value >= 0 else None  # not NaN, not negative
    return None


def parse(headers: Mapping[str, str], now: float) -> Budget | None:
    """The budget an answer reports, or None when it reports none."""
    remaining = _first(headers, REMAINING)
    if remaining is None:
        return None
    reset = _first(headers, RESET)
    if reset is not None and reset > EPOCH:
        reset = max(0.0, reset - now)
    cost = _first(headers, COST)
    return Budget(remaining, reset, cost if cost else None)


def paced_rate(budget: Budget, capacity: float, current: float | None = None) -> float | None:
    """Requests a minute that keep ``remaining`` above the floor, or None (no pacing needed).

    * with a reset (D2L, Thought Industries): spread what is left above the floor over the time until
      the budget is back — ``(remaining - floor) / cost / reset``;
    * with a cost and no reset (Canvas's leaky bucket): the sustainable rate is ``leak / cost``; near the
      floor pace just under it, below the floor at half of it (the bucket refills);
    * with neither: below the floor, half the ``current`` rate (if known).
    """
    floor = FLOOR_SHARE * max(capacity, budget.remaining)
    if budget.remaining >= 2 * floor:
        return None
    if budget.reset is not None:
        calls = max(0.0, budget.remaining - floor) / (budget.cost or 1.0)
        return round(max(MIN_PACE, calls / max(budget.reset, 1.0) * 60.0), 3)
    if budget.cost is not None:
        sustainable = LEAK_PER_SECOND / budget.cost * 60.0
        share = BELOW_FLOOR if budget.remaining < floor else NEAR_FLOOR
        return round(max(MIN_PACE, sustainable * share), 3)
    if budget.remaining < floor and current:
        return round(max(MIN_PACE, current * BELOW_FLOOR), 3)
    return None


def concurrency_cap(budget: Budget, capacity: float) -> int | None:
    """Requests at once the budget can carry in flight, for a bucket that charges each request while it
    is in flight (reported by cost alone: Canvas, ``IN_FLIGHT_COST`` each) — one more than what is left
    above the floor pays for, so at least one; None for other budgets (no in-flight charge known)."""
    if budget.cost is None or budget.reset is not None:
        return None
    floor = FLOOR_SHARE * max(capacity, budget.remaining)
    return 1 + int(max(0.0, budget.remaining - floor) // IN_FLIGHT_COST)


def lowers(paced: float | None, rate: float | None, *, slack: float = 0.05) -> bool:
    """Whether ``paced`` should replace the destination's current ``rate`` (only ever lower it, and not
    for a difference within ``slack``: each change is a Redis write)."""
    return paced is not None and (rate is None or paced < rate * (1.0 - slack))
