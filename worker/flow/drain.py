"""The flow pump: run by every worker process's retry pump thread once a second. For each destination
with parked events it

* drains them back to the retry schedule when the destination is healthy again (breaker closed, not
  paused, not in a 429 pause) — a bounded batch per tick sized by the rate limit, so recovery is
  throttled (SQS-redrive style) and the delivery run's limiter spaces the calls exactly;
* sends one parked event to be the breaker's probe once the cool-down is over (nothing else would
  probe a destination whose events are all parked);
* sends parked events older than ``max_event_age`` back to the delivery run, which dead-letters them
  with the reason (one code path for dead-lettering).

Pumps of several processes may run this at once: every move is atomic in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import structlog

from worker.flow.decide import FlowState, Knobs
from worker.flow.store import FlowStore
from worker.settings import Destination

log = structlog.get_logger("gradesync.flow")

#: events moved from parked back to the schedule per destination per tick when no rate limits it
DRAIN_UNLIMITED = 200
#: how often (seconds) the oldest parked events are checked against max_event_age
AGE_CHECK_EVERY = 5.0
AGE_CHECK_BATCH = 50
#: how often (seconds) the flow pump looks at every destination, not only those in the parking index
FULL_SCAN_EVERY = 60.0
#: destinations looked at per pipeline
SCAN_BATCH = 500


def drain_batch(state: FlowState, knobs: Knobs, interval: float, now: float) -> int:
    """Parked events to move per tick: twice what the rate allows in one tick (at least a few)."""
    rate = state.effective_rate(knobs, now)
    if rate is None:
        return DRAIN_UNLIMITED
    return max(5, min(DRAIN_UNLIMITED, int(rate / 60.0 * interval * 2) + 1))


def healthy(state: FlowState, now: float) -> bool:
    return (not state.paused and state.breaker == "closed"
            and (state.throttled_until is None or state.throttled_until <= now))


class FlowPump:
    def __init__(self, flow: FlowStore, destinations: Callable[[], Mapping[str, Destination]],
                 created_at: Callable[[list[str]], list[float | None]], *, interval: float = 1.0) -> None:
        self.flow = flow
        self.destinations = destinations
        self.created_at = created_at
        self.interval = interval
        self._last_age_check = 0.0
        self._last_full_scan = float("-inf")

    def _names(self, dests: Mapping[str, Destination], indexed: set[str], now: float) -> list[str]:
        """The destinations to look at: those in the parking index; every destination on the first tick
        and every :data:`FULL_SCAN_EVERY` seconds (events parked before the index existed, or by hand).

        Why: a pass over every destination cost two commands each per second in every worker process;
        with 10 000 destinations that was most of a process's interpreter time (py-spy, README
        "Performance")."""
        if now - self._last_full_scan >= FULL_SCAN_EVERY:
            self._last_full_scan = now
            return sorted(dests)
        return sorted(n for n in indexed if n in dests)

    def tick(self, now: float | None = None) -> int:
        """One pass over the destinations with parked events; returns how many parked events were moved."""
        now = time.time() if now is None else now
        dests = self.destinations()
        indexed = self.flow.parking()
        names = self._names(dests, indexed, now)
        if not names:
            return 0
        check_age = now - self._last_age_check >= AGE_CHECK_EVERY
        if check_age:
            self._last_age_check = now
        # in batches: a full scan of 10 000 destinations in one pipeline held 20 000 answers at once
        return sum(self._tick(names[i:i + SCAN_BATCH], dests, indexed, now, check_age)
                   for i in range(0, len(names), SCAN_BATCH))

    def _tick(self, names: list[str], dests: Mapping[str, Destination], indexed: set[str], now: float,
              check_age: bool) -> int:
        r, keys = self.flow.r, self.flow.keys
        with r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.flow(name))
                pipe.zcard(keys.parked(name))
            raw = pipe.execute()
        moved = 0
        self.flow.index([n for i, n in enumerate(names) if int(raw[2 * i + 1]) and n not in indexed])
        self.flow.unindex_if_empty([n for i, n in enumerate(names) if not int(raw[2 * i + 1]) and n in indexed])
        for i, name in enumerate(names):
            parked = int(raw[2 * i + 1])
            if not parked:
                continue
            state = FlowState.parse({_s(k): _s(v) for k, v in raw[2 * i].items()})
            knobs = Knobs.of(dests[name])
            if healthy(state, now):
                n = self.flow.drain(name, drain_batch(state, knobs, self.interval, now), now=now)
                if n:
                    log.info("parked_drained", destination=name, count=n, left=parked - n)
                moved += n
                continue
            if self.flow.release_probe(name, now=now):
                log.info("probe_released", destination=name)
                moved += 1
            if check_age:
                moved += self._expire_old(name, knobs, now)
        return moved

    def _expire_old(self, name: str, knobs: Knobs, now: float) -> int:
        ids = self.flow.oldest_parked(name, AGE_CHECK_BATCH)
        since = self.created_at(ids)
        old = [eid for eid, t in zip(ids, since, strict=True) if t is not None and now - t > knobs.max_event_age]
        if not old:
            return 0
        n = self.flow.release(name, old, now=now)
        log.warning("parked_expired", destination=name, count=n)
        return n


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
