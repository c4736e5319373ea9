"""Counters kept in Redis, so that metrics are right across any number of worker processes and hosts
(``/metrics`` reads them; a per-process Prometheus registry would only see its own process).

* ``processed``: destination|vendor|outcome -> count (outcome: succeeded, superseded, retried,
  dead_lettered)
* ``published``: destination -> count (written by the producers)
* ``requests``: vendor HTTP request duration histogram per destination|vendor|route (+ status class)
* per-minute outcome counts per destination (``Keys.minute``, kept two hours) for the dashboard's 5- and
  60-minute windows and its per-minute throughput chart (:meth:`Stats.series`)

The vendor request histograms are aggregated in the process and written in one pipeline every
:data:`FLUSH_SECONDS` (and when the process exits, and before this process reads them): one vendor
request used to cost a round trip of 15 commands. A successful delivery's ``processed`` count is written
by the delivery's own finishing script (:meth:`worker.store.ledger.Ledger.succeed`), atomically with its state; the
other outcomes (rare) go through :meth:`Stats.processed` at once.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

import redis
import structlog

from worker.keys import Keys

log = structlog.get_logger("gradesync.stats")

#: histogram buckets (seconds) of vendor request durations
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OUTCOMES = ("succeeded", "superseded", "retried", "dead_lettered")
#: seconds a per-minute bucket is kept (the chart shows the last hour; two hours leave room for clock skew)
MINUTE_TTL = 7200
#: seconds between two writes of the request histograms aggregated in the process
FLUSH_SECONDS = 1.0


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def processed_field(destination: str, vendor: str, outcome: str) -> str:
    """The field of the ``processed`` counters hash for one destination, vendor and outcome."""
    return f"{destination}|{vendor}|{outcome}"


class _Flusher:
    """One daemon thread per process that writes every :class:`Stats`' pending histograms each
    :data:`FLUSH_SECONDS` (a failed write is kept and tried again), and once more at exit."""

    def __init__(self) -> None:
        self._pending: weakref.WeakSet[Stats] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        atexit.register(self.flush_all)

    def add(self, stats: Stats) -> None:
        with self._lock:
            self._pending.add(stats)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="gradesync-stats-flush", daemon=True)
                self._thread.start()

    def flush_all(self) -> None:
        with self._lock:
            pending = list(self._pending)
            self._pending = weakref.WeakSet()
        for stats in pending:
            try:
                stats.flush()
                stats.flush_failing = False
            except Exception as exc:  # Redis away: kept in the process, written on a later round
                if not stats.flush_failing:  # one line per outage, not one a second
                    log.warning("stats_flush_failed", error=type(exc).__name__)
                stats.flush_failing = True

    def _loop(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush_all()


_flusher = _Flusher()


def flush_pending() -> None:
    """Write this process's aggregated histograms now (readers call it; so may a test)."""
    _flusher.flush_all()


class Stats:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._lock = threading.Lock()
        self._requests: dict[str, dict[str, float]] = {}  # series -> histogram field -> increment
        self.flush_failing = False

    def processed(self, destination: str, vendor: str, outcome: str, *, now: float | None = None) -> None:
        at = now or time.time()
        minute = int(at // 60)
        rate_key = self.keys.minute(destination, outcome, minute)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.keys.stats("processed"), processed_field(destination, vendor, outcome), 1)
            pipe.incr(rate_key)
            pipe.expire(rate_key, MINUTE_TTL)
            pipe.zadd(self.keys.stats("active"), {destination: f"{at:.0f}"})  # for a bounded /metrics
            pipe.execute()

    def active_since(self, since: float) -> set[str]:
        """Destinations with a delivery attempt finished since ``since`` (older entries are dropped after
        a week: the set stays the size of the recently active destinations)."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(self.keys.stats("active"), "-inf", f"({since - 7 * 86_400:.0f}")
            pipe.zrangebyscore(self.keys.stats("active"), f"{since:.0f}", "+inf")
            _, names = pipe.execute()
        return {_s(n) for n in names}

    def request(self, destination: str, vendor: str, route: str, status: int | None, seconds: float) -> None:
        """Count one vendor request (aggregated here, written within :data:`FLUSH_SECONDS`)."""
        status_class = "error" if status is None else f"{status // 100}xx"
        series = f"{destination}|{vendor}|{route}|{status_class}"
        with self._lock:
            fresh = not self._requests
            hist = self._requests.setdefault(series, {})
            for bound in BUCKETS:
                if seconds <= bound:
                    name = f"le:{bound}"
                    hist[name] = hist.get(name, 0) + 1
            hist["count"] = hist.get("count", 0) + 1
            hist["sum"] = hist.get("sum", 0.0) + seconds
        if fresh:
            _flusher.add(self)

    def flush(self) -> None:
        """Write the aggregated request histograms in one pipeline; on failure they stay pending."""
        with self._lock:
            pending, self._requests = self._requests, {}
        if not pending:
            return
        try:
            with self.r.pipeline(transaction=False) as pipe:
                for series, hist in pending.items():
                    key = self.keys.stats("requests", series)
                    for name, n in hist.items():
                        if name == "sum":
                            pipe.hincrbyfloat(key, name, n)
                        else:
                            pipe.hincrby(key, name, int(n))
                    pipe.sadd(self.keys.stats("requests", "series"), series)
                pipe.execute()
        except Exception:
            with self._lock:
                for series, hist in pending.items():
                    into = self._requests.setdefault(series, {})
                    for name, n in hist.items():
                        into[name] = into.get(name, 0) + n
            _flusher.add(self)
            raise

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
        flush_pending()  # what this process counted is in the answer
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
