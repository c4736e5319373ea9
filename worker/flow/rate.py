"""The adaptive rate of a destination: how a 429 lowers it and how it comes back (pure, no I/O; table-tested
in ``tests/unit/test_flow_rate.py``).

Why this shape. The first version was textbook AIMD: a 429 halved the *recently sent* rate and every
success added half a request a minute. On a quiet destination (a few scores a minute) one 429 left a rate
of ~20/min that needed tens of minutes of successes to climb back, and a burst of 300 scores published
after it was paced at 21-25 a minute for seven minutes (issue 20). A vendor's 429 says "too fast *now*";
it says nothing about the next hour. So:

* **Decrease** (on a new congestion event: a 429 after the previous pause ended; 429s during the pause
  only extend it): the rate becomes ``DECREASE`` x the rate at which the vendor refused — the adapted
  rate in force, else the configured limit, else the rate actually sent in the last seconds (the
  sliding-window count), else ``FALLBACK_RATE`` — never below ``MIN_RATE``. On the first 429 after a
  clean period of an unconfigured destination it is never below what the destination was sending in the
  window *before* (what it did before the burst, which the vendor accepted), and never above the refused
  rate itself.
* **Recovery in time, not per success**: from the end of the pause (``since``), the rate doubles every
  ``DOUBLING`` seconds — TCP's slow start after a timeout — until ``until``, when the adapted rate ends:
  the configured limit applies again, or none. ``until`` is when the doubling reaches the target (the
  configured limit, or ``UNLIMITED_FACTOR`` x the refused rate for an unconfigured destination: far
  enough above the refusal that the vendor evidently takes more), and never later than ``RECOVERY_MAX``
  after the pause. A further 429 during the recovery is a new congestion event and starts again from
  half the rate in force then, so a vendor whose real limit is below the target keeps the rate
  oscillating under it with a 429 every few doublings (the rate-limit drill counts them).

The rate at a time is a closed form (:meth:`Adapted.at`), so nothing is written per success, and the
limiter (:mod:`worker.flow.store`'s GCRA) spaces each slot by the rate *at that slot's time*: a burst
published during the recovery is not paced by the rate of the moment it was published.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: multiplicative decrease on a 429 (TCP's AIMD halves)
DECREASE = 0.5
#: the adapted rate never drops below this (requests/minute)
MIN_RATE = 6.0
#: after a 429 the rate doubles every this many seconds (slow start)
DOUBLING = 10.0
#: an unconfigured destination is unlimited again once the doubling reaches this x the refused rate
UNLIMITED_FACTOR = 4.0
#: the adapted rate ends at most this long after the pause (seconds): "back within about a minute"
RECOVERY_MAX = 60.0
#: when no rate is known and none was observed, a 429 halves this rate (requests/minute)
FALLBACK_RATE = 60.0
#: a rate paced from the vendor's budget headers doubles only every this many seconds: the headers are a
#: steady signal (each answer re-paces it while the budget is low), and a budget as small as a D2L or
#: Thought Industries window is overrun by a rate that doubles every 10 s before the headers catch up
PACED_DOUBLING = 30.0


@dataclass(frozen=True)
class Adapted:
    """A lowered rate: ``base`` requests/minute at ``since`` (the end of the pause), doubling every
    ``doubling`` seconds until ``until``; ``refused`` is the rate the vendor refused."""

    base: float
    since: float
    until: float
    refused: float
    doubling: float = DOUBLING

    def at(self, now: float) -> float | None:
        """Requests/minute allowed at ``now``; None once the adapted rate has ended (``until``)."""
        if now >= self.until:
            return None
        return self.base * math.pow(2.0, max(0.0, now - self.since) / self.doubling)

    def fields(self, reason: str) -> dict[str, str]:
        """The ``flow`` hash fields that store it."""
        return {"rate": f"{self.base:.3f}", "rate_since": f"{self.since:.3f}", "rate_until": f"{self.until:.3f}",
                "rate_refused": f"{self.refused:.3f}", "rate_doubling": f"{self.doubling:g}", "rate_reason": reason}


#: the ``flow`` hash fields of an adapted rate (deleted together when it ends)
FIELDS = ("rate", "rate_since", "rate_until", "rate_refused", "rate_doubling", "rate_reason")


def refused_rate(*, in_force: float | None, sent: float | None) -> float:
    """The rate at which the vendor refused: the limit in force (adapted or configured), else the rate
    actually sent recently, else :data:`FALLBACK_RATE`."""
    return in_force or sent or FALLBACK_RATE


def lowered(*, refused: float, before: float | None, configured: float | None, first: bool,
            since: float) -> Adapted:
    """The rate after a new congestion event (see the module docstring).

    ``refused``: :func:`refused_rate`; ``before``: the rate sent in the window before the current one
    (None when unknown); ``configured``: the destination's limit (None: unlimited); ``first``: no adapted
    rate was in force (the first 429 after a clean period); ``since``: when the pause ends.
    """
    base = max(MIN_RATE, DECREASE * refused)
    if first and configured is None and before:
        base = max(base, min(before, refused))
    return _recovering(base, refused, configured, since, DOUBLING)


def _recovering(base: float, refused: float, configured: float | None, since: float,
                doubling: float) -> Adapted:
    """``base`` doubling every ``doubling`` seconds from ``since``, ending when it reaches the target (the
    configured limit, else :data:`UNLIMITED_FACTOR` x ``refused``): at least one doubling, at most
    :data:`RECOVERY_MAX`."""
    target = configured if configured is not None else UNLIMITED_FACTOR * refused
    doublings = math.log2(target / base) if target > base else 0.0
    until = since + min(RECOVERY_MAX, max(doubling, doubling * doublings))
    return Adapted(base=round(base, 3), since=since, until=round(until, 3), refused=round(refused, 3),
                   doubling=doubling)


def paced(rate: float, *, current: float | None, configured: float | None, now: float) -> Adapted:
    """A rate lowered *before* any refusal, from the vendor's budget headers (:mod:`worker.flow.headers`):
    it starts at ``rate`` now and recovers in time, slower than one lowered by a 429
    (:data:`PACED_DOUBLING`; the headers re-pace it while the budget stays low, and it ends at most
    :data:`RECOVERY_MAX` after the last pacing); ``current``: the rate in force (or sent) when paced."""
    base = max(MIN_RATE, rate)
    return _recovering(base, max(current or base, base), configured, now, PACED_DOUBLING)


def reason_text(detail: str, refused: float, base: float) -> str:
    """Why the rate is lowered, for operators: the vendor's answer and the rates."""
    return f"{detail or 'HTTP 429'} at {refused:.0f}/min: lowered to {base:.0f}/min, doubling every {DOUBLING:.0f} s"
