"""The pure decisions of flow control (no I/O; table-tested in ``tests/unit/test_flow_decide.py``).

* :func:`admit` — before an attempt: given the destination's state (its ``flow`` hash) may this event
  call the vendor now (``go``), must it take a rate-limit slot first (``limit``), wait durably until a
  time (``wait``: a 429 pause), be parked (``park``: breaker open, half-open with a probe running, or
  paused by an operator), be the breaker's one probe (``probe``), or has it waited too long
  (``expire``: older than ``max_event_age``)?
* :func:`after` — what one attempt's outcome does to the destination: the breaker's transitions
  (closed → open after ``breaker_failures`` consecutive transient failures; open → half_open for one
  probe once the cool-down passed; a good probe closes it, a bad one re-opens it with a longer
  cool-down), and the adaptive rate (a new 429 halves the rate the vendor refused; it recovers in time:
  :mod:`worker.flow.rate`).

Permanent errors mean the vendor answered: they never trip the breaker (they reset its count). A 429
is the rate's business, never the breaker's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from worker.flow import rate as adaptive
from worker.flow.rate import DOUBLING, Adapted

#: the limiter spaces calls at this share of the rate, and uses only part of the burst, so that the HTTP
#: hop's jitter (a call delayed more than the next one: calls bunch up) never empties the vendor's own
#: bucket — a 429 costs far more (a pause and a halved rate) than the few percent given up here
SAFETY = 0.95
BURST_SHARE = 0.5


def limiter_burst(burst: int) -> int:
    """The burst the limiter uses: half the vendor's, the rest is kept for jitter."""
    return max(1, int(burst * BURST_SHARE))
#: a 429 without Retry-After pauses the destination this long (seconds)
DEFAULT_THROTTLE = 2.0
#: the longest pause a Retry-After may impose (seconds); longer values are capped
MAX_THROTTLE = 3600.0
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
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


@dataclass(frozen=True)
class FlowState:
    """The destination's ``flow`` hash, parsed (absent fields are the defaults)."""

    breaker: str = "closed"
    reason: str = ""
    probe_at: float | None = None
    probe_deadline: float | None = None
    opened: int = 0
    failures: int = 0
    rate: float | None = None  # the adapted rate's base (worker.flow.rate.Adapted), with the next three
    rate_since: float | None = None
    rate_until: float | None = None
    rate_refused: float | None = None
    rate_doubling: float | None = None
    rate_reason: str = ""
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
            rate_since=_f(raw, "rate_since"),
            rate_until=_f(raw, "rate_until"),
            rate_refused=_f(raw, "rate_refused"),
            rate_doubling=_f(raw, "rate_doubling"),
            rate_reason=raw.get("rate_reason", ""),
            throttled_until=_f(raw, "throttled_until"),
            throttled_reason=raw.get("throttled_reason", ""),
            paused=raw.get("paused") == "1",
            paused_reason=raw.get("paused_reason", ""),
            epoch=int(_f(raw, "epoch") or 0),
            sent=(_f(raw, "sent_t") or 0.0, _f(raw, "sent_n") or 0.0, _f(raw, "sent_prev") or 0.0),
        )

    @property
    def adapted(self) -> Adapted | None:
        """The lowered rate after a 429 (None when there is none; a ``rate`` without its times, as an
        earlier version wrote it, has ended)."""
        if self.rate is None or self.rate_since is None or self.rate_until is None:
            return None
        return Adapted(base=self.rate, since=self.rate_since, until=self.rate_until,
                       refused=self.rate_refused or self.rate,
                       doubling=self.rate_doubling if self.rate_doubling and self.rate_doubling > 0 else DOUBLING)

    def lowered_at(self, now: float) -> Adapted | None:
        """The adapted rate when it is still in force at ``now``."""
        adapted = self.adapted
        return adapted if adapted is not None and now < adapted.until else None

    def effective_rate(self, knobs: Knobs, now: float) -> float | None:
        """Requests/minute allowed at ``now``: the adapted rate while it recovers (never above the
        configured one), else the configured one, else None (unlimited)."""
        adapted = self.lowered_at(now)
        current = adapted.at(now) if adapted is not None else None
        if current is None:
            return knobs.rate
        return current if knobs.rate is None else min(current, knobs.rate)

    def clean(self, now: float) -> bool:
        """A success would change nothing: no failures counted, no ended adapted rate to clear."""
        return self.failures == 0 and (self.rate is None or self.lowered_at(now) is not None)

    def sent_before(self, now: float) -> float | None:
        """Requests/minute sent in the window before the current one (what the destination did before a
        burst), when that window is recent."""
        start, _, prev = self.sent
        if start <= 0 or now - start >= SENT_WINDOW or prev <= 0:
            return None
        return prev / SENT_WINDOW * 60.0

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
    if state.effective_rate(knobs, now) is None:
        return Admission(Gate.GO)
    if reservation is not None:
        epoch, slot = reservation
        if epoch == state.epoch and slot - 0.5 <= now <= slot + RESERVATION_GRACE:
            return Admission(Gate.GO, reason="holds a rate-limit slot")
    return Admission(Gate.LIMIT)


def cooldown(opened: int, knobs: Knobs) -> float:
    """Seconds the breaker stays open after its ``opened``-th opening in a row (Envoy: base x times)."""
    return min(knobs.max_cooldown, knobs.cooldown * max(1, opened))


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
            in_force = state.lowered_at(now)
            refused = adaptive.refused_rate(in_force=state.effective_rate(knobs, now), sent=state.sent_rate(now))
            lowered = adaptive.lowered(refused=refused, before=state.sent_before(now), configured=knobs.rate,
                                       first=in_force is None, since=until)
            sets.update(lowered.fields(adaptive.reason_text(detail, refused, lowered.base)))
            sets["epoch"] = str(state.epoch + 1)
            slowed = True
    elif outcome is Outcome.SUCCESS and state.rate is not None and state.lowered_at(now) is None:
        delete.extend(adaptive.FIELDS)  # the adapted rate has ended: back to the configured one, or none
    return Transition(set=sets, delete=tuple(delete), closed=closed, slowed=slowed)
