"""How real LMS platforms throttle, for the LTI platform simulator (``rate_limit_style`` and
``leaky_bucket`` switches of :mod:`sandbox.lti_ags`). Facts: ``/work/shared/reference/lms-behaviour.md``.

Styles of the answer over the limit (the limit itself is the token bucket of ``POST /_sandbox/ratelimit``
or the leaky bucket below):

* ``retry_after`` — ``429`` with ``Retry-After`` (the generic shape; the default);
* ``canvas403`` — self-hosted Canvas (canvas-lms ``app/middleware/request_throttle.rb``): ``403``,
  ``text/plain``, ``403 Forbidden (Rate Limit Exceeded)``, ``X-Rate-Limit-Remaining: 0.0``, no
  ``Retry-After``;
* ``canvas429`` — hosted Canvas since 2025-10-06: the same as a ``429``;
* ``d2l`` — D2L Brightspace: ``429`` with ``Retry-After`` and none of the ``X-Rate-Limit-*`` headers,
  which every ordinary answer carries (``X-Rate-Limit-Remaining`` in credits, ``X-Rate-Limit-Reset`` in
  seconds, ``X-Request-Cost`` = 10 credits a call).

:class:`LeakyBucket` is Canvas's limit: a bucket per developer key that leaks ``outflow`` units a second;
a request is refused when its charge brings the bucket to its high-water mark; each request is charged ``up_front``
units *while it is in flight* (parallel requests fill it faster), then its own cost. Canvas's cost is
the request's CPU + database time; here it is scaled so that the sustained rate is ``per_minute``
(``cost = outflow * 60 / per_minute``). Ordinary answers report ``X-Request-Cost`` and
``X-Rate-Limit-Remaining``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox.base import Response
from sandbox.ratelimit import TokenBucket

STYLES = ("retry_after", "canvas403", "canvas429", "d2l")
D2L_COST = 10  # credits a call (D2L: 50 000 credits a minute per app)
CANVAS_HIGH_WATER = 600.0
CANVAS_UP_FRONT = 50.0
CANVAS_OUTFLOW = 10.0  # units a second


class LeakyBucket:
    """Canvas's request throttle, scaled to ``per_minute`` (see the module docstring)."""

    def __init__(self, per_minute: float, *, high_water: float = CANVAS_HIGH_WATER, up_front: float = CANVAS_UP_FRONT,
                 outflow: float = CANVAS_OUTFLOW, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0 or outflow <= 0 or high_water <= 0 or up_front < 0:
            raise ValueError("leaky_bucket: per_minute, outflow and high_water must be > 0, up_front >= 0")
        self.per_minute = float(per_minute)
        self.high_water = float(high_water)
        self.up_front = float(up_front)
        self.outflow = float(outflow)
        self.cost = self.outflow * 60.0 / self.per_minute
        self.clock = clock
        self.level = 0.0
        self.at = clock()
        self.lock = threading.Lock()

    @classmethod
    def of(cls, spec: dict[str, Any]) -> LeakyBucket:
        """From the switch ``{"per_minute": 120, "high_water"?, "up_front"?, "outflow"?}``."""
        unknown = set(spec) - {"per_minute", "high_water", "up_front", "outflow"}
        if unknown:
            raise ValueError(f"unknown leaky_bucket field(s): {', '.join(sorted(unknown))}")
        return cls(float(spec["per_minute"]), high_water=float(spec.get("high_water", CANVAS_HIGH_WATER)),
                   up_front=float(spec.get("up_front", CANVAS_UP_FRONT)),
                   outflow=float(spec.get("outflow", CANVAS_OUTFLOW)))

    def _leak(self) -> None:
        now = self.clock()
        self.level = max(0.0, self.level - (now - self.at) * self.outflow)
        self.at = now

    def reserve(self) -> int | None:
        """Charge a starting request its up-front cost: None, or (full) whole seconds until there is room."""
        with self.lock:  # Canvas charges first, then refuses a full bucket (and takes the charge back)
            self._leak()
            if self.level + self.up_front >= self.high_water:
                return max(1, math.ceil((self.level + self.up_front - self.high_water) / self.outflow))
            self.level += self.up_front
            return None

    def settle(self) -> tuple[float, float]:
        """The request ended: its up-front charge becomes its cost. Returns (cost, remaining)."""
        with self.lock:
            self._leak()
            self.level = max(0.0, self.level + self.cost - self.up_front)
            return self.cost, self.remaining()

    def remaining(self) -> float:
        return max(0.0, self.high_water - self.level)

    def describe(self) -> dict[str, Any]:
        return {"per_minute": self.per_minute, "high_water": self.high_water, "up_front": self.up_front,
                "outflow": self.outflow, "cost": self.cost}


def over_limit(style: str, wait: int, vendor_body: Any) -> Response:
    """The answer over the limit, in ``style``; ``wait``: whole seconds until there is room."""
    if style == "canvas403":
        return Response(403, b"403 Forbidden (Rate Limit Exceeded)\n",
                        {"Content-Type": "text/plain; charset=utf-8", "X-Rate-Limit-Remaining": "0.0"})
    if style == "canvas429":
        return Response(429, b"429 Too Many Requests (Rate Limit Exceeded)\n",
                        {"Content-Type": "text/plain; charset=utf-8", "X-Rate-Limit-Remaining": "0.0"})
    if style == "d2l":
        return Response(429, b"", {"Retry-After": str(wait)})
    return Response(429, vendor_body, {"Retry-After": str(wait)})


def d2l_headers(bucket: TokenBucket) -> dict[str, str]:
    """D2L's budget headers on an ordinary answer, from the simulator's token bucket (in credits)."""
    per_second = bucket.per_minute / 60.0
    reset = (bucket.burst - bucket.tokens) / per_second if per_second else 0.0
    return {"X-Rate-Limit-Remaining": str(int(bucket.tokens) * D2L_COST),
            "X-Rate-Limit-Reset": str(max(0, math.ceil(reset))), "X-Request-Cost": str(D2L_COST)}
