"""A vendor-side rate limit for the simulators (``POST /_sandbox/ratelimit``): a token bucket."""

from __future__ import annotations

import math
import time
from typing import Any


class TokenBucket:
    """A vendor-side rate limit: ``per_minute`` requests a minute, ``burst`` at once."""

    def __init__(self, per_minute: float, burst: int | None = None) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        self.per_minute = float(per_minute)
        self.burst = int(burst) if burst else max(1, int(per_minute / 60))
        self.tokens = float(self.burst)
        self.at = time.monotonic()

    def take(self) -> int | None:
        """None when a token was taken; else whole seconds until one is available (``Retry-After``)."""
        now = time.monotonic()
        per_second = self.per_minute / 60.0
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * per_second)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self.tokens) / per_second))

    def describe(self) -> dict[str, Any]:
        return {"per_minute": self.per_minute, "burst": self.burst}
