"""An audit's reads through the destination's flow control, within a bounded share of its rate limit.

Before each read :meth:`AuditPace.turn`:

1. holds while the destination is paused by an operator, its breaker is open or half-open (an audit is
   never the breaker's probe), or the vendor asked for a pause (429 ``Retry-After``);
2. waits for the audit's own slot: a GCRA of its own (``audits:pace:{dest}``) at ``share`` of the
   destination's effective rate (the configured or learnt one), burst 1 — or at ``unlimited_rate`` reads
   a minute when the destination has no rate limit;
3. then takes a slot of the destination's shared limiter (the one deliveries take), so deliveries and
   audit reads together stay within the limit: an audit never pushes deliveries into 429s, it only takes
   its share of the slots.

A 429 answer to a read is told to flow control (:meth:`AuditPace.throttled`), as a delivery's would be.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from worker.flow.decide import SAFETY, Knobs, Outcome, limiter_burst
from worker.flow.gate import FlowControl
from worker.settings import Destination
from worker.store import Store

#: seconds between looks at a paused / open destination
HOLD_POLL = 1.0


class AuditPace:
    def __init__(self, store: Store, destination: Destination, *, share: float, unlimited_rate: float,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
                 on_hold: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.destination = destination
        self.share = share
        self.unlimited_rate = unlimited_rate
        self.stop = stop or threading.Event()
        self.clock = clock
        self.flow = FlowControl(store)
        #: why the last turn held (shown as the job's status while it waits); ``on_hold`` hears each change
        self.holding = ""
        self._told = ""  # the reason last told to ``on_hold``
        self.on_hold = on_hold

    def _sleep(self, seconds: float) -> bool:
        """Sleep; False when the job is being stopped."""
        return not self.stop.wait(max(0.0, seconds))

    def _hold(self, reason: str) -> None:
        changed = reason != self._told
        self.holding = self._told = reason
        if changed and self.on_hold is not None:
            self.on_hold(reason)

    def _own_slot(self, rate: float, now: float) -> float:
        return self.flow.flow.reserve_key(self.store.keys.audit_pace(self.destination.name), rate, now=now)

    def turn(self) -> bool:
        """Wait for this read's turn; False when the job is being stopped meanwhile."""
        name, knobs = self.destination.name, Knobs.of(self.destination)
        if self.stop.is_set():
            return False
        while True:
            state = self.flow.flow.state(name)
            now = self.clock()
            if state.paused:
                self.holding = "the destination is paused"
            elif state.breaker in ("open", "half_open"):
                self.holding = f"the destination's circuit is {state.breaker.replace('_', '-')}"
            elif state.throttled_until is not None and now < state.throttled_until:
                self._hold("the vendor throttled the destination")
                if not self._sleep(min(HOLD_POLL * 5, state.throttled_until - now)):
                    return False
                continue
            else:
                self._hold("")
                break
            self._hold(self.holding)
            if not self._sleep(HOLD_POLL):
                return False
        rate = state.effective_rate(knobs, now)
        own = self._own_slot(rate * self.share if rate else self.unlimited_rate, now)
        if own > now and not self._sleep(own - now):
            return False
        now = self.clock()
        if rate is None:
            self.flow.flow.count_sent(name, now)
            return True
        shared = self.flow.flow.reserve(name, knobs.rate, limiter_burst(knobs.burst), now=now,
                                        adapted=state.lowered_at(now), share=SAFETY)
        return not (shared > now and not self._sleep(shared - now))

    def throttled(self, retry_after: float | None, detail: str) -> None:
        """A read got a 429: the destination slows down for deliveries too."""
        self.flow.after(self.destination, Outcome.THROTTLED, probe=False, detail=detail, retry_after=retry_after)
