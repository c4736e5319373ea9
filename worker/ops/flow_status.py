"""What operators see of a destination's flow control, and their manual pause / resume.

The flow-control core (the rest of :mod:`worker.flow`) keeps each destination's state in the hash
``Keys.flow(dest)`` and its parked events in the sorted set ``Keys.parked(dest)``. This module only
*reads* them — except the ``paused*`` fields, which are the operator's and are written only here:

=====================================  ==========================================================
field                                  meaning
=====================================  ==========================================================
``breaker``                            ``closed`` (default) / ``open`` / ``half_open``
``breaker_reason``, ``breaker_since``  why, and since when (epoch seconds)
``probe_at``                           when the next half-open probe may run (while open)
``rate``, ``rate_since``, ``rate_until``  a rate lowered after a 429, recovering in time until
``rate_refused``, ``rate_reason``      ``rate_until`` (:mod:`worker.flow.rate`), and why
``throttled_until``, ``throttled_..``  a 429 paused the destination until then, and why
``paused`` (``1``), ``paused_reason``  the operator's manual pause, who did it and since when
``paused_by``, ``paused_since``
=====================================  ==========================================================

The state shown is, in priority order: ``paused`` (a manual pause, or a vendor's 429 until
``throttled_until`` — the reason says which) > ``open`` > ``half_open`` > ``closed``
(:func:`derive`, pure). :meth:`FlowStatus.all` reads every destination in one pipelined round trip.

Pause and resume are operator actions, written to the audit stream in the same transaction as the
change (the shape of :meth:`worker.store.deadletters.DeadLetterQueue.audit_write`, with
``selection = "destination"``). Resuming only clears the ``paused*`` fields: the core notices and
drains the parked events at the destination's rate limit by itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from worker.flow.decide import FlowState, Knobs
from worker.keys import Keys
from worker.ops.views import iso
from worker.safetext import printable
from worker.settings import Destination
from worker.store.deadletters import AUDIT_MAXLEN

STATES = ("closed", "open", "half_open", "paused")
#: the longest pause reason accepted (characters)
MAX_REASON = 500
_PAUSE_FIELDS = ("paused", "paused_reason", "paused_by", "paused_since")


@dataclass(frozen=True)
class DestinationStatus:
    name: str
    vendor: str
    state: str  # "closed" | "open" | "half_open" | "paused"
    reason: str  # "" when closed
    since: float | None  # epoch seconds the current state began
    rate_per_minute: float | None  # effective rate now (lowered after a 429, else configured, else None = unlimited)
    configured_rate_per_minute: float | None
    parked: int  # ZCARD parked:{dest}
    probe_at: float | None
    rate_reason: str = ""  # why the rate is lowered now ("" when it is not)
    rate_until: float | None = None  # when a lowered rate is back (unlimited or the configured rate)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["since_iso"] = iso(self.since)
        data["probe_at_iso"] = iso(self.probe_at)
        data["rate_until_iso"] = iso(self.rate_until)
        return data


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _float(value: str | None) -> float | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number == number and number not in (float("inf"), float("-inf")) else None


def derive(name: str, vendor: str, fields: Mapping[str, str], parked: int,
           configured_rate: float | None, now: float) -> DestinationStatus:
    """The status operators see, from the flow hash's fields (pure; absent fields mean the defaults)."""
    flow = FlowState.parse(fields)
    knobs = Knobs(rate=configured_rate)
    lowered = flow.lowered_at(now)
    rate = flow.effective_rate(knobs, now)
    lowered_now = lowered is not None and rate is not None and (configured_rate is None or rate < configured_rate)

    def status(state: str, reason: str, since: float | None, probe_at: float | None = None) -> DestinationStatus:
        return DestinationStatus(name=name, vendor=vendor, state=state, reason=reason, since=since,
                                 rate_per_minute=round(rate, 1) if rate is not None else None,
                                 configured_rate_per_minute=configured_rate, parked=parked, probe_at=probe_at,
                                 rate_reason=flow.rate_reason if lowered_now else "",
                                 rate_until=lowered.until if lowered is not None and lowered_now else None)

    breaker = fields.get("breaker") or "closed"
    breaker_since = _float(fields.get("breaker_since"))
    probe_at = _float(fields.get("probe_at")) if breaker == "open" else None
    if fields.get("paused") == "1":
        who = fields.get("paused_by") or "an operator"
        why = fields.get("paused_reason") or "no reason given"
        return status("paused", f"paused by {who}: {why}", _float(fields.get("paused_since")), probe_at)
    throttled_until = _float(fields.get("throttled_until"))
    if throttled_until is not None and throttled_until > now:
        why = fields.get("throttled_reason") or "the vendor answered 429 Too Many Requests"
        return status("paused", f"throttled by the vendor until {iso(throttled_until)}: {why}", None, probe_at)
    if breaker == "open":
        return status("open", fields.get("breaker_reason") or "circuit breaker open", breaker_since, probe_at)
    if breaker == "half_open":
        return status("half_open", fields.get("breaker_reason") or "probing the vendor after a cool-down",
                      breaker_since)
    return status("closed", "", breaker_since if fields.get("breaker") == "closed" else None)


def clean_reason(reason: str) -> str:
    """A pause reason as stored: one line, control characters escaped; ValueError when empty or too long."""
    text = printable(" ".join(reason.split()))
    if not text:
        raise ValueError("a reason is required")
    if len(text) > MAX_REASON:
        raise ValueError(f"the reason is longer than {MAX_REASON} characters")
    return text


#: (destination, its flow hash, its parked count) -> whether to derive its status
Keep = Callable[[str, dict[str, str], int], bool]


class FlowStatus:
    """Read every destination's flow-control status; pause and resume a destination by hand."""

    def __init__(self, client: redis.Redis, keys: Keys, destinations: Mapping[str, Destination]) -> None:
        self.r = client
        self.keys = keys
        self.destinations = destinations

    def _destination(self, name: str) -> Destination:
        try:
            return self.destinations[name]
        except KeyError:
            raise KeyError(name) from None

    def _read(self, names: list[str], keep: Keep | None = None) -> list[DestinationStatus]:
        with self.r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self.keys.flow(name))
                pipe.zcard(self.keys.parked(name))
            raw = pipe.execute() if names else []
        now = time.time()
        out = []
        for i, name in enumerate(names):
            fields = {_text(k): _text(v) for k, v in (raw[2 * i] or {}).items()}
            if keep is not None and not keep(name, fields, int(raw[2 * i + 1] or 0)):
                continue
            dest = self.destinations.get(name)
            if dest is None:  # removed meanwhile
                continue
            configured = getattr(dest, "rate_limit_per_minute", None)
            out.append(derive(name, dest.vendor, fields, int(raw[2 * i + 1] or 0),
                              float(configured) if configured is not None else None, now))
        return out

    def get(self, name: str) -> DestinationStatus:
        """One destination's status; :class:`KeyError` for a destination that is not configured."""
        self._destination(name)
        return self._read([name])[0]

    def many(self, names: list[str]) -> list[DestinationStatus]:
        """The status of each of ``names`` (all configured), in that order (one round trip)."""
        return self._read(names)

    def all(self, keep: Keep | None = None) -> list[DestinationStatus]:
        """Every configured destination, in name order (one pipelined round trip); ``keep(name, flow
        fields, parked)``: only those it keeps (so the others' models are not built: thousands of
        destinations, :mod:`worker.registry.lazy`)."""
        return self._read(sorted(self.destinations), keep)

    def pause(self, name: str, *, reason: str, actor: str) -> DestinationStatus:
        """Stop deliveries to ``name`` (events park, no attempt consumed) until :meth:`resume`.

        Pausing a paused destination updates the reason and who, and keeps the time it was first paused.
        """
        self._destination(name)
        text = clean_reason(reason)
        key = self.keys.flow(name)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"paused": "1", "paused_reason": text, "paused_by": actor})
            pipe.hsetnx(key, "paused_since", f"{time.time():.3f}")
            self._audit(pipe, "pause", name, actor, done=True, reason=text)
            pipe.execute()
        return self.get(name)

    def resume(self, name: str, *, actor: str) -> DestinationStatus:
        """Lift a manual pause (the core then drains the parked events at the rate limit)."""
        self._destination(name)
        key = self.keys.flow(name)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hget(key, "paused")
            pipe.hdel(key, *_PAUSE_FIELDS)
            was_paused, _ = pipe.execute()
        self._audit(self.r, "resume", name, actor, done=_text(was_paused) == "1")
        return self.get(name)

    def _audit(self, client: redis.Redis | redis.client.Pipeline, action: str, name: str, actor: str, *,
               done: bool, reason: str = "") -> None:
        entry = {
            "at": f"{time.time():.3f}",
            "actor": actor,
            "action": action,
            "dry_run": "0",
            "matched": "1",
            "count": "1" if done else "0",
            "selection": "destination",
            "filters": json.dumps({"destination": name}),
            "event_ids": "[]",
            "destination": name,
            "reason": reason,
        }
        client.xadd(self.keys.audit, entry, maxlen=AUDIT_MAXLEN, approximate=True)  # type: ignore[arg-type]
