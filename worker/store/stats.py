"""Counters kept in Redis, so that metrics are right across any number of worker processes and hosts
(``/metrics`` reads them; a per-process Prometheus registry would only see its own process).

* ``processed``: destination|vendor|outcome -> count (outcome: succeeded, superseded, retried,
  dead_lettered)
* ``published``: destination -> count (written by the producers)
* ``requests``: vendor HTTP request duration histogram per destination|vendor|route (+ status class)
* per-minute outcome counts per destination (``Keys.minute``, kept two hours) for the dashboard's 5- and
  60-minute windows and its per-minute throughput chart (:meth:`Stats.series`)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from producers.keys import Keys

#: histogram buckets (seconds) of vendor request durations
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = ("succeeded", "superseded", "retried", "dead_lettered")
#: seconds a per-minute bucket is kept (the chart shows the last hour; two hours leave room for clock skew)
MINUTE_TTL = 7200


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Stats:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    def processed(self, destination: str, vendor: str, outcome: str, *, now: float | None = None) -> None:
        minute = int((now or time.time()) // 60)
        rate_key = self.keys.minute(destination, outcome, minute)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.keys.stats("processed"), f"{destination}|{vendor}|{outcome}", 1)
            pipe.incr(rate_key)
            pipe.expire(rate_key, MINUTE_TTL)
            pipe.execute()

    def request(self, destination: str, vendor: str, route: str, status: int | None, seconds: float) -> None:
        status_class = "error" if status is None else f"{status // 100}xx"
        key = self.keys.stats("requests", f"{destination}|{vendor}|{route}|{status_class}")
        with self.r.pipeline(transaction=False) as pipe:
            for bound in BUCKETS:
                if seconds <= bound:
                    pipe.hincrby(key, f"le:{bound}", 1)
            pipe.hincrby(key, "count", 1)
            pipe.hincrbyfloat(key, "sum", seconds)
            pipe.sadd(self.keys.stats("requests", "series"), f"{destination}|{vendor}|{route}|{status_class}")
            pipe.execute()

    # -- reading (metrics, dashboard) ---------------------------------------------------------------
    def processed_totals(self) -> dict[tuple[str, str, str], int]:
        out: dict[tuple[str, str, str], int] = {}
        for k, v in self.r.hgetall(self.keys.stats("processed")).items():
            dest, vendor, outcome = _s(k).split("|", 2)
            out[(dest, vendor, outcome)] = int(v)
        return out

    def published_totals(self) -> dict[str, int]:
        return {_s(k): int(v) for k, v in self.r.hgetall(self.keys.stats("published")).items()}

    def request_histograms(self) -> dict[tuple[str, str, str, str], dict[str, float]]:
        series = sorted(_s(s) for s in self.r.smembers(self.keys.stats("requests", "series")))
        with self.r.pipeline(transaction=False) as pipe:
            for s in series:
                pipe.hgetall(self.keys.stats("requests", s))
            raws = pipe.execute()
        out: dict[tuple[str, str, str, str], dict[str, float]] = {}
        for s, raw in zip(series, raws, strict=True):
            dest, vendor, route, status_class = s.split("|", 3)
            out[(dest, vendor, route, status_class)] = {_s(k): float(v) for k, v in raw.items()}
        return out

    def window(self, destinations: Iterable[str], outcomes: Iterable[str], minutes: int,
               *, now: float | None = None) -> dict[tuple[str, str], int]:
        """Outcome counts per (destination, outcome) over the last ``minutes`` minutes."""
        current = int((now or time.time()) // 60)
        pairs = [(d, o) for d in destinations for o in outcomes]
        with self.r.pipeline(transaction=False) as pipe:
            for d, o in pairs:
                keys = [self.keys.minute(d, o, m) for m in range(current - minutes + 1, current + 1)]
                pipe.mget(keys)
            raws = pipe.execute()
        return {pair: sum(int(v) for v in vals if v is not None) for pair, vals in zip(pairs, raws, strict=True)}

    def series(self, destinations: Iterable[str], outcomes: Iterable[str], minutes: int,
               *, now: float | None = None) -> tuple[list[int], dict[tuple[str, str], list[int]]]:
        """Per-minute outcome counts over the last ``minutes`` minutes, oldest first, in one round trip.

        Returns the epoch seconds each minute starts at, and (destination, outcome) -> one count per minute
        (the last minute is the current, still filling one).
        """
        current = int((now or time.time()) // 60)
        span = range(current - minutes + 1, current + 1)
        pairs = [(d, o) for d in destinations for o in outcomes]
        with self.r.pipeline(transaction=False) as pipe:
            for d, o in pairs:
                pipe.mget([self.keys.minute(d, o, m) for m in span])
            raws = pipe.execute() if pairs else []
        counts = {pair: [int(v) if v is not None else 0 for v in vals] for pair, vals in zip(pairs, raws, strict=True)}
        return [m * 60 for m in span], counts
