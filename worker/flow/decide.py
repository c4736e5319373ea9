"""The pure decisions of flow control (no I/O; table-tested in ``tests/unit/test_flow_decide.py``).

* :func:`admit` — before an attempt: given the destination's state (its ``flow`` hash) may this event
  call the vendor now (``go``), must it take a rate-limit slot first (``limit``), wait durably until a
  time (``wait``: a 429 pause), be parked (``park``: breaker open, half-open with a probe running, or
  paused by an operator), be the breaker's one probe (``probe``), or has it waited too long
  (``expire``: older than ``max_event_age``)?
* :func:`after` — what one attempt's outcome does to the destination: the breaker's transitions
  (closed → open after ``breaker_failures`` consecutive transient failures; open → half_open for one
  probe once the cool-down passed; a good probe closes it, a bad one re-opens it with a longer
  cool-down), and the AIMD rate (halve on a new 429, creep back up on each success).

Permanent errors mean the vendor answered: they never trip the breaker (they reset its count). A 429
is the rate's business, never the breaker's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: multiplicative decrease on a 429 (TCP's AIMD halves)
DECREASE = 0.5
#: additive increase per successful attempt: this share of the configured rate (else of the current one),
#: at least MIN_INCREASE requests/minute — a halved rate is back after ~100 successes
INCREASE_SHARE = 0.005
MIN_INCREASE = 0.5
#: the limiter spaces calls at this share of the rate, and uses only part of the burst, so that the HTTP
#: hop's jitter (a call delayed more than the next one: calls bunch up) never empties the vendor's own
#: bucket — a 429 costs far more (a pause and a halved rate) than the few percent given up here
SAFETY = 0.95
BURST_SHARE = 0.5


def limiter_burst(burst: int) -> int:
    """The burst the limiter uses: half the vendor's, the rest is kept for jitter."""
    return max(1, int(burst * BURST_SHARE))
#: the adapted rate never drops below this (requests/minute)
MIN_RATE = 6.0
#: a 429 without Retry-After pauses the destination this long (seconds)
DEFAULT_THROTTLE = 2.0
#: the longest pause a Retry-After may impose (seconds); longer values are capped
MAX_THROTTLE = 3600.0
#: when no rate is known, a 429 halves this rate (requests/minute) if none was observed
FALLBACK_RATE = 60.0
#: window (seconds) of the sent-rate estimate used when a destination has no rate yet
SENT_WINDOW = 5.0
#: a rate-limit slot is honoured up to this long after its time (the pump may run late)
RESERVATION_GRACE = 30.0


class Gate(StrEnum):
    GO = "go"
    LIMIT = "limit"
    WAIT = "wait"
    PARK = "park"
    PROBE = "probe"
    EXPIRE = "expire"


class Outcome(StrEnum):
    SUCCESS = "success"  # the vendor took the grade (or said a newer one is there)
    PERMANENT = "permanent"  # the vendor answered and refused this event: the event's fault
    TRANSIENT = "transient"  # 5xx, timeout, connection error: the destination's fault
    THROTTLED = "throttled"  # 429


@dataclass(frozen=True)
class Knobs:
    """A destination's flow-control settings."""

    rate: float | None = None  # configured requests/minute (None: unlimited)
    burst: int = 1
    breaker_failures: int = 5
    cooldown: float = 30.0
    max_cooldown: float = 600.0
    max_event_age: float = 7 * 86_400.0

    @classmethod
    def of(cls, destination: Any) -> Knobs:
        return cls(rate=destination.rate_limit_per_minute, burst=destination.configured_burst,
                   breaker_failures=destination.breaker_failures, cooldown=destination.breaker_cooldown,
                   max_cooldown=destination.breaker_max_cooldown, max_event_age=destination.max_event_age)


def _f(raw: Mapping[str, str], name: str) -> float | None:
    value = raw.get(name)
    try:
        return float(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class FlowState:
    """The destination's ``flow`` hash, parsed (absent fields are the defaults)."""

    breaker: str = "closed"
    reason: str = ""
    probe_at: float | None = None
    probe_deadline: float | None = None
    opened: int = 0
    failures: int = 0
    rate: float | None = None
    throttled_until: float | None = None
    throttled_reason: str = ""
    paused: bool = False
    paused_reason: str = ""
    epoch: int = 0
    sent: tuple[float, float, float] = (0.0, 0.0, 0.0)  # window start, count in it, count in the previous

    @classmethod
    def parse(cls, raw: Mapping[str, str]) -> FlowState:
        return cls(
            breaker=raw.get("breaker") or "closed",
            reason=raw.get("breaker_reason", ""),
            probe_at=_f(raw, "probe_at"),
            probe_deadline=_f(raw, "probe_deadline"),
            opened=int(_f(raw, "opened") or 0),
            failures=int(_f(raw, "failures") or 0),
            rate=_f(raw, "rate"),
            throttled_until=_f(raw, "throttled_until"),
            throttled_reason=raw.get("throttled_reason", ""),
            paused=raw.get("paused") == "1",
            paused_reason=raw.get("paused_reason", ""),
            epoch=int(_f(raw, "epoch") or 0),
            sent=(_f(raw, "sent_t") or 0.0, _f(raw, "sent_n") or 0.0, _f(raw, "sent_prev") or 0.0),
        )

    def effective_rate(self, knobs: Knobs) -> float | None:
        """Requests/minute allowed now: the AIMD-adapted rate (never above the configured one), else the
        configured one, else None (unlimited)."""
        if self.rate is None:
            return knobs.rate
        return self.rate if knobs.rate is None else min(self.rate, knobs.rate)

    def sent_rate(self, now: float) -> float | None:
        """Requests/minute sent recently (a sliding-window counter), when no rate limited them."""
        start, count, prev = self.sent
        if start <= 0 or now - start >= 2 * SENT_WINDOW:
            return None
        frac = min(max((now - start) / SENT_WINDOW, 0.0), 1.0)
        estimate = prev * (1 - frac) + count
        return estimate / SENT_WINDOW * 60.0 if estimate > 0 else None


@dataclass(frozen=True)
class Admission:
    gate: Gate
    until: float = 0.0  # WAIT: not before this time
    reason: str = ""


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def admit(state: FlowState, knobs: Knobs, now: float, *, waiting_since: float,
          reservation: tuple[int, float] | None = None) -> Admission:
    """What an event may do before its attempt (see the module docstring).

    ``waiting_since``: when the event was published (or requeued); ``reservation``: the (epoch, time) of
    a rate-limit slot the event already holds.
    """

    def hold(adm: Admission) -> Admission:
        age = now - waiting_since
        if age > knobs.max_event_age:
            return Admission(Gate.EXPIRE, reason=(
                f"waited {_hours(age)}, longer than max_event_age ({_hours(knobs.max_event_age)}), "
                f"while {adm.reason}"))
        return adm

    if state.paused:
        why = f": {state.paused_reason}" if state.paused_reason else ""
        return hold(Admission(Gate.PARK, reason=f"the destination is paused by an operator{why}"))
    if state.breaker == "open":
        if state.probe_at is None or now >= state.probe_at:
            return Admission(Gate.PROBE, reason="circuit open: cool-down over, probing")
        return hold(Admission(Gate.PARK, reason=f"the circuit is open ({state.reason})"))
    if state.breaker == "half_open":
        if state.probe_deadline is None or now > state.probe_deadline:
            return Admission(Gate.PROBE, reason="circuit half-open: the last probe never reported")
        return hold(Admission(Gate.PARK, reason="the circuit is half-open (a probe is running)"))
    if state.throttled_until is not None and now < state.throttled_until:
        return hold(Admission(Gate.WAIT, until=state.throttled_until,
                              reason=f"the vendor throttled the destination ({state.throttled_reason})"))
    if state.effective_rate(knobs) is None:
        return Admission(Gate.GO)
    if reservation is not None:
        epoch, slot = reservation
        if epoch == state.epoch and slot - 0.5 <= now <= slot + RESERVATION_GRACE:
            return Admission(Gate.GO, reason="holds a rate-limit slot")
    return Admission(Gate.LIMIT)


def cooldown(opened: int, knobs: Knobs) -> float:
    """Seconds the breaker stays open after its ``opened``-th opening in a row (Envoy: base x times)."""
    return min(knobs.max_cooldown, knobs.cooldown * max(1, opened))


def decreased(rate: float) -> float:
    return max(MIN_RATE, round(rate * DECREASE, 3))


def increased(rate: float, cap: float | None) -> float | None:
    """The rate after one success; None once it is back at the configured ``cap``."""
    new = rate + max(MIN_INCREASE, INCREASE_SHARE * (cap or rate))
    if cap is not None and new >= cap:
        return None
    return round(new, 3)


@dataclass(frozen=True)
class Transition:
    """What to write to the ``flow`` hash after an outcome, and what happens to the event."""

    set: dict[str, str] = field(default_factory=dict)
    delete: tuple[str, ...] = ()
    park: bool = False  # the destination is (now) unhealthy: park the event, its attempt does not count
    opened: bool = False
    closed: bool = False
    slowed: bool = False  # the rate was lowered (the store restarts the limiter after the pause)

    @property
    def empty(self) -> bool:
        return not self.set and not self.delete


_CLOSE = ("breaker_reason", "probe_at", "probe_deadline", "probe_released_at")


def after(state: FlowState, knobs: Knobs, outcome: Outcome, now: float, *, probe: bool = False,
          detail: str = "", retry_after: float | None = None) -> Transition:
    """What ``outcome`` of one attempt does to the destination (see the module docstring)."""
    sets: dict[str, str] = {}
    delete: list[str] = []
    unhealthy = probe or state.breaker == "half_open"
    if outcome is Outcome.TRANSIENT:
        if unhealthy:
            opened = state.opened + 1
            return Transition(set={"breaker": "open", "breaker_since": f"{now:.3f}", "opened": str(opened),
                                   "probe_at": f"{now + cooldown(opened, knobs):.3f}", "failures": "0",
                                   "breaker_reason": f"probe failed: {detail}"},
                              delete=("probe_deadline", "probe_released_at"), park=True, opened=True)
        if state.breaker == "open":
            return Transition(park=True)
        failures = state.failures + 1
        if failures < knobs.breaker_failures:
            return Transition(set={"failures": str(failures)})
        opened = state.opened + 1
        return Transition(set={"breaker": "open", "breaker_since": f"{now:.3f}", "opened": str(opened),
                               "probe_at": f"{now + cooldown(opened, knobs):.3f}", "failures": "0",
                               "breaker_reason": f"{failures} consecutive transient failures: {detail}"},
                          park=True, opened=True)
    # the vendor answered: the destination is reachable
    closed = False
    if unhealthy:
        sets.update(breaker="closed", breaker_since=f"{now:.3f}", opened="0", failures="0")
        delete.extend(_CLOSE)
        closed = True
    elif state.failures:
        sets["failures"] = "0"
    slowed = False
    if outcome is Outcome.THROTTLED:
        pause = min(MAX_THROTTLE, retry_after if retry_after and retry_after > 0 else DEFAULT_THROTTLE)
        until = max(now + pause, state.throttled_until or 0.0)
        sets["throttled_until"] = f"{until:.3f}"
        sets["throttled_reason"] = detail or "HTTP 429"
        if state.throttled_until is None or now >= state.throttled_until:  # a new congestion event
            basis = state.effective_rate(knobs) or state.sent_rate(now) or FALLBACK_RATE
            sets["rate"] = str(decreased(basis))
            sets["epoch"] = str(state.epoch + 1)
            slowed = True
    elif outcome is Outcome.SUCCESS and state.rate is not None:
        new = increased(state.rate, knobs.rate)
        if new is None:
            delete.append("rate")
        else:
            sets["rate"] = str(new)
    return Transition(set=sets, delete=tuple(delete), closed=closed, slowed=slowed)
