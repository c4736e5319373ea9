"""The simulator's Canvas leaky bucket (in-flight charging) and throttle shapes, with a fake clock."""

from __future__ import annotations

import pytest

from sandbox.lms_throttle import LeakyBucket, d2l_headers, over_limit
from sandbox.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_in_flight_requests_are_charged_up_front() -> None:
    clock = Clock()
    bucket = LeakyBucket(120, clock=clock)  # Canvas: high-water 600, up-front 50, outflow 10/s; cost 5
    assert bucket.cost == 5.0
    assert all(bucket.reserve() is None for _ in range(11))  # 11 in flight x 50 = 550
    assert bucket.reserve() == 1  # a 12th would reach the high-water mark of 600: refused
    assert bucket.remaining() == 50.0
    cost, remaining = bucket.settle()  # one ends: its 50 becomes 5
    assert (cost, remaining) == (5.0, 95.0)
    assert bucket.reserve() is None


def test_the_sustained_rate_is_per_minute() -> None:
    clock = Clock()
    bucket = LeakyBucket(120, clock=clock)
    done = 0
    for _ in range(1200):  # 10 minutes, one request every 0.5 s (120/min), each ending at once
        assert bucket.reserve() is None
        bucket.settle()
        done += 1
        clock.now += 0.5
    assert done == 1200 and bucket.remaining() == pytest.approx(600.0, abs=5.0)
    refused = 0
    for _ in range(400):  # twice as fast: the bucket fills (in 240 requests), then refuses
        if bucket.reserve() is None:
            bucket.settle()
        else:
            refused += 1
        clock.now += 0.25
    assert bucket.remaining() < 60 and refused > 50


def test_over_limit_shapes() -> None:
    canvas = over_limit("canvas403", 3, {"errors": []})
    assert (canvas.status, canvas.body) == (403, b"403 Forbidden (Rate Limit Exceeded)\n")
    assert canvas.headers == {"Content-Type": "text/plain; charset=utf-8", "X-Rate-Limit-Remaining": "0.0"}
    hosted = over_limit("canvas429", 3, {})
    assert hosted.status == 429 and "Retry-After" not in hosted.headers
    d2l = over_limit("d2l", 3, {})
    assert d2l.status == 429 and d2l.headers == {"Retry-After": "3"}
    plain = over_limit("retry_after", 4, {"errors": [{"message": "x"}]})
    assert plain.status == 429 and plain.headers == {"Retry-After": "4"}


def test_d2l_headers_count_credits() -> None:
    bucket = TokenBucket(120, burst=10)
    bucket.take()
    headers = d2l_headers(bucket)
    assert headers["X-Request-Cost"] == "10" and 80 <= int(headers["X-Rate-Limit-Remaining"]) <= 90
    assert int(headers["X-Rate-Limit-Reset"]) >= 1


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        LeakyBucket.of({"per_minute": 60, "burst": 3})
