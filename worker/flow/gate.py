"""Flow control as the delivery run sees it: :meth:`FlowControl.before` an attempt (may this event call
the vendor now, or does it wait, park or expire?) and :meth:`FlowControl.after` it (what the outcome
does to the destination). The decisions are :mod:`worker.flow.decide`'s pure functions; the state is
:mod:`worker.flow.store`'s, in Redis, shared by every worker.

Nothing here consumes an attempt: an event that waits for its rate-limit slot or for a 429 pause is
deferred durably on the retry schedule to its turn; an event of an open, half-open or paused
destination is parked in ``parked:{dest}`` until the destination heals (:mod:`worker.flow.drain`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from worker import errors
from worker.dispatch import new_token
from worker.flow import headers
from worker.flow import rate as adaptive
from worker.flow.decide import SAFETY, FlowState, Gate, Knobs, Outcome, Transition, admit, after, limiter_burst
from worker.flow.store import FlowStore
from worker.settings import Destination
from worker.store import EventRecord, Store

log = structlog.get_logger("gradesync.flow")

#: a rate-limit slot this close is waited for on the thread; a later one is deferred durably
SHORT_WAIT = 0.25
#: a process looks at a destination's budget headers at most this often (seconds)
PACE_EVERY = 0.2


@dataclass(frozen=True)
class Verdict:
    go: bool
    probe: bool = False
    result: str = ""  # when not go: "parked", "waiting" or "expired"
    reason: str = ""
    clean: bool = False  # the destination had nothing a success would change (no failures, no adapted rate)


def outcome_of(exc: errors.DeliveryError) -> Outcome:
    """The destination-level meaning of one attempt's error."""
    if isinstance(exc, errors.RateLimited):
        return Outcome.THROTTLED
    if isinstance(exc, errors.NotReady):  # the platform answered: this event's business, not its health
        return Outcome.PERMANENT
    if isinstance(exc, errors.RetryableError):
        return Outcome.TRANSIENT
    if isinstance(exc, errors.Superseded):
        return Outcome.SUCCESS
    return Outcome.PERMANENT


def _reservation(raw: str | None) -> tuple[int, float] | None:
    if not raw:
        return None
    epoch, _, slot = raw.partition(":")
    try:
        return int(epoch), float(slot)
    except ValueError:
        return None


class FlowControl:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, rand: Callable[[], float] = random.random) -> None:
        self.store = store
        self.flow = FlowStore(store.redis, store.keys)
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        #: per destination: the largest budget ``remaining`` seen (its capacity), the last look at it
        self._capacity: dict[str, float] = {}
        self._paced_at: dict[str, float] = {}
        #: per destination: the threads its in-flight budget carries (None: no such budget reported)
        self._concurrency: dict[str, int | None] = {}

    def concurrency(self, destination: Destination) -> int | None:
        """The destination's ``max_concurrency``, lowered to what its in-flight budget carries."""
        cap = self._concurrency.get(destination.name)
        limit = destination.max_concurrency
        return limit if cap is None else cap if limit is None else min(cap, limit)

    def pace(self, destination: Destination, raw: dict[str, str] | None) -> float | None:
        """Slow the destination before the vendor refuses: when its answers report their rate-limit
        budget (``raw``: :func:`worker.adapters.client.take_budget`), lower its adaptive rate to
        :func:`worker.flow.headers.paced_rate` (never raise it). Returns the rate set, if any.

        While answers report a budget, a lowered rate does not end by time: its doubling goes on probing
        upward and the budget says when to slow again (it ends :data:`worker.flow.rate.RECOVERY_MAX` after
        the last such answer). Why: a lowered rate that ended would let every thread loose on a vendor
        whose budget was just shown to be small (the D2L drill: 17 % refused when it did)."""
        if not raw:
            return None
        now = self.clock()
        budget = headers.parse(raw, now)
        if budget is None:
            return None
        name = destination.name
        capacity = self._capacity[name] = max(self._capacity.get(name, 0.0), budget.remaining)
        self._concurrency[name] = headers.concurrency_cap(budget, capacity)
        if now - self._paced_at.get(name, 0.0) < PACE_EVERY:
            return None
        self._paced_at[name] = now
        knobs = Knobs.of(destination)

        def lower(state: FlowState) -> Transition:
            in_force = state.effective_rate(knobs, now)
            current = in_force or state.sent_rate(now)
            paced = headers.paced_rate(budget, capacity, current)
            if paced is None or not headers.lowers(paced, in_force):
                adapted = state.lowered_at(now)
                if adapted is not None and adapted.until - now < adaptive.RECOVERY_MAX / 2:
                    return Transition(set={"rate_until": f"{now + adaptive.RECOVERY_MAX:.3f}"})
                return Transition()
            lowered = adaptive.paced(paced, current=current, configured=knobs.rate, now=now)
            why = (f"X-Rate-Limit-Remaining {budget.remaining:g} of {capacity:g}: paced to {lowered.base:.0f}/min "
                   f"before any refusal, doubling every {lowered.doubling:.0f} s")
            return Transition(set=lowered.fields(why))

        transition = self.flow.apply(name, knobs, lower)
        if "rate" in transition.set:
            log.info("rate_paced", rate_per_minute=transition.set["rate"], remaining=budget.remaining,
                     reset=budget.reset, cost=budget.cost)
            return float(transition.set["rate"])
        return None

    def before(self, record: EventRecord, destination: Destination) -> Verdict:
        """Admit, defer, park or expire ``record`` before its attempt (see the module docstring)."""
        knobs = Knobs.of(destination)
        name = destination.name
        now = self.clock()
        since = max(record.get_float("created_at") or now, record.get_float("requeued_at") or 0.0)
        reservation = _reservation(record.fields.get("flow_slot"))
        for _ in range(3):
            state = self.flow.state(name)
            adm = admit(state, knobs, now, waiting_since=since, reservation=reservation)
            rate = state.effective_rate(knobs, now)
            if adm.gate is Gate.GO:
                if rate is None:
                    self.flow.count_sent(name, now)
                return Verdict(go=True, clean=state.clean(now))
            if adm.gate is Gate.PROBE:
                if self.flow.claim_probe(name, now=now, deadline=now + 3 * destination.timeout + 30):
                    log.info("breaker_probe", reason=adm.reason)
                    return Verdict(go=True, probe=True)
                continue  # another worker probes, or the breaker closed meanwhile: look again
            if adm.gate is Gate.EXPIRE:
                return Verdict(go=False, result="expired", reason=adm.reason)
            if adm.gate is Gate.PARK:
                self.store.ledger.hold(name, record.event_id, now=now, reason=adm.reason)
                log.info("parked", reason=adm.reason)
                return Verdict(go=False, result="parked", reason=adm.reason)
            # LIMIT or WAIT: take a rate-limit slot (after the pause, if the vendor asked for one)
            not_before = adm.until if adm.gate is Gate.WAIT else 0.0
            due = self._slot(name, state, knobs, now, not_before)
            if adm.gate is Gate.LIMIT and due - now <= SHORT_WAIT:
                self.sleep(max(0.0, due - now))
                return Verdict(go=True, clean=state.clean(now))
            self.store.ledger.defer(record, due, extra={"flow_slot": f"{state.epoch}:{due:.6f}",
                                                        "next_attempt_at": f"{due:.3f}"})
            return Verdict(go=False, result="waiting", reason=adm.reason or "waiting for a rate-limit slot")
        self.store.ledger.hold(name, record.event_id, now=now, reason="the circuit is half-open (a probe is running)")
        return Verdict(go=False, result="parked", reason="the circuit is half-open (a probe is running)")

    def succeeded(self, destination: Destination, verdict: Verdict) -> None:
        """A success changes nothing on a destination that was clean when the attempt began (the common
        case: no Redis round trip); otherwise it resets the failure count, closes a probed breaker, or
        clears an adapted rate that has ended."""
        if verdict.probe or not verdict.clean:
            self.after(destination, Outcome.SUCCESS, probe=verdict.probe)

    def after(self, destination: Destination, outcome: Outcome, *, probe: bool, detail: str = "",
              retry_after: float | None = None) -> Transition:
        """Record what one attempt's outcome does to the destination (breaker, rate, 429 pause)."""
        knobs = Knobs.of(destination)
        now = self.clock()
        transition = self.flow.apply(destination.name, knobs, lambda state: after(
            state, knobs, outcome, now, probe=probe, detail=detail, retry_after=retry_after))
        if transition.opened:
            log.warning("breaker_opened", reason=transition.set.get("breaker_reason"),
                        probe_at=transition.set.get("probe_at"))
        if transition.closed:
            log.info("breaker_closed", parked=self.flow.parked_count(destination.name))
        if transition.slowed:
            log.warning("rate_lowered", rate_per_minute=transition.set.get("rate"),
                        refused_per_minute=transition.set.get("rate_refused"),
                        throttled_until=transition.set.get("throttled_until"),
                        rate_until=transition.set.get("rate_until"))
        return transition

    def settle_failure(self, record: EventRecord, destination: Destination, exc: errors.DeliveryError, *,
                       probe: bool, entry: dict[str, Any], error: dict[str, Any]) -> str:
        """Tell flow control about a failed attempt. A 429 defers the event to its slot after the pause,
        a transient failure of an unhealthy destination parks it — neither counts toward ``max_attempts``
        (returns ``"retrying"`` / ``"parked"``); otherwise returns "" and the usual retry decision applies."""
        outcome = outcome_of(exc)
        transition = self.after(destination, outcome, probe=probe, detail=exc.describe(), retry_after=exc.retry_after)
        ledger, stats = self.store.ledger, self.store.stats
        if outcome is Outcome.THROTTLED:
            due, slot = self.throttled_slot(destination)
            wait = max(due - self.clock(), exc.retry_after or 0.0)
            entry.update(outcome="retry", retry_in=round(wait, 3), counted=False)
            ledger.schedule_retry(record, entry, token=new_token(), due=due, error=error, free=True,
                                  extra={"flow_slot": slot})
            stats.processed(record.destination, record.vendor, "retried")
            log.warning("throttled", retry_in=entry["retry_in"], status=exc.status)
            return "retrying"
        if outcome is Outcome.TRANSIENT and transition.park:
            reason = f"the circuit is open: {exc.describe()}"
            entry.update(outcome="parked", counted=False)
            ledger.park(record, entry, token=new_token(), error=error, reason=reason)
            stats.processed(record.destination, record.vendor, "retried")
            log.warning("parked", reason=reason, status=exc.status)
            return "parked"
        return ""

    def throttled_slot(self, destination: Destination) -> tuple[float, str]:
        """The due time and reservation of an event that got a 429: its slot after the pause."""
        knobs = Knobs.of(destination)
        now = self.clock()
        state = self.flow.state(destination.name)
        due = self._slot(destination.name, state, knobs, now, state.throttled_until or now)
        return due, f"{state.epoch}:{due:.6f}"

    def _slot(self, name: str, state: FlowState, knobs: Knobs, now: float, not_before: float) -> float:
        """The next rate-limit slot (not before ``not_before``), or ``not_before`` (+ jitter) with no rate.
        A lowered rate is taken as it will be at ``not_before`` (it recovers in time)."""
        at = max(now, not_before)
        if state.effective_rate(knobs, at) is None:
            return at + self.rand()
        return self.flow.reserve(name, knobs.rate, limiter_burst(knobs.burst), now=now, not_before=not_before,
                                 adapted=state.lowered_at(at), share=SAFETY)
