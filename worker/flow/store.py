"""The destination's flow-control state in Redis (the ``flow:{dest}`` hash and ``parked:{dest}`` zset of
:mod:`worker.keys`), shared by every worker process and host.

* :meth:`FlowStore.reserve` — the rate limiter: a GCRA (generic cell rate algorithm, as in
  ``redis-cell``) in one Lua script. One timestamp per destination (``tat``, the theoretical arrival
  time), O(1), exact across processes, burst built in. It *reserves*: every caller gets its own slot
  time, so an event that must wait is deferred durably to exactly its turn (never re-polls, never
  blocks a thread, never counts as an attempt).
* :meth:`FlowStore.claim_probe` — the one half-open probe (atomic: two workers never both probe).
* :meth:`FlowStore.apply` — writes a :class:`~worker.flow.decide.Transition` if the fields it was
  computed from did not change meanwhile (compare-and-set in Lua; re-computed on a conflict).
* :meth:`FlowStore.drain` / :meth:`FlowStore.release_probe` — move parked events back to the retry
  schedule (the pump does this, :mod:`worker.flow.drain`). Parking itself writes the event's record, so
  it is the ledger's (:meth:`worker.store.ledger.Ledger.park` / :meth:`~worker.store.ledger.Ledger.hold`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from worker.flow.decide import SENT_WINDOW, FlowState, Knobs, Transition
from worker.flow.rate import DOUBLING, Adapted
from worker.keys import Keys


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# KEYS: flow ; ARGV: now, emission interval T (s) at the limit (0: none), tau = T * (burst - 1), not_before,
#       and an adapted rate recovering (worker.flow.rate.Adapted, requests/minute; base 0: none): base,
#       since, until, doubling seconds. A slot is spaced by the interval at *its* time: the adapted rate
#       doubles every `doubling` seconds from `since`, and ends at `until`; never faster than the limit.
_RESERVE = """
local now, T, tau, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local base, since, till, d = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local function interval(t)
  if base > 0 and t < till then
    local grown = t - since
    if grown < 0 then grown = 0 end
    local at = 60 / (base * 2 ^ (grown / d))
    if at > T then return at end
  end
  return T
end
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0') or 0
if tat < now then tat = now end
if tat < nb + tau then tat = nb + tau end
local allow = tat - tau
if allow < now then allow = now end
redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', tat + interval(allow)))
return string.format('%.6f', allow)
"""

# Lua: a sliding-window counter of requests sent while no rate is known (flow hash ``key``, window ``w``
# seconds); also part of the delivery's claim script (worker.store.scripts CLAIM)
COUNT_SENT_LUA = """
local function count_sent(key, now, w)
  local t = tonumber(redis.call('HGET', key, 'sent_t') or '0') or 0
  if now - t < w then
    redis.call('HINCRBY', key, 'sent_n', 1)
    return 0
  end
  local n = tonumber(redis.call('HGET', key, 'sent_n') or '0') or 0
  local start = now
  if now - t < 2 * w then start = t + w else n = 0 end
  redis.call('HSET', key, 'sent_t', string.format('%.3f', start), 'sent_prev', n, 'sent_n', 1)
  return 1
end
"""

# Lua: is the destination's flow state clean (flow hash ``key`` at ``now``)? Not paused, breaker closed,
# no learnt rate, no 429 pause: then every event may go without a rate-limit slot, probe or park — the
# same answer as :func:`worker.flow.decide.admit` gives (``Gate.GO``, no rate) when the destination has no
# configured rate either (the caller's half, ``Destination.rate_limit_per_minute``). Returns clean, and
# the failure count (a success on a destination with none changes nothing). Part of the delivery's claim
# script (worker.store.scripts); the one place this rule is written in Lua.
FLOW_CLEAN_LUA = """
local function flow_clean(key, now)
  local f = redis.call('HMGET', key, 'paused', 'breaker', 'throttled_until', 'rate', 'failures', 'rate_since',
                       'rate_until')
  if f[1] == '1' or (f[2] and f[2] ~= '' and f[2] ~= 'closed') then return false, '0' end
  local until_ = tonumber(f[3] or '')
  if until_ and now < until_ then return false, '0' end
  -- a rate lowered after a 429 while it recovers (worker.flow.rate: all three fields, until in the future)
  local lowered_until = tonumber(f[7] or '')
  if tonumber(f[4] or '') and tonumber(f[6] or '') and lowered_until and now < lowered_until then
    return false, '0'
  end
  return true, f[5] or '0'
end
"""

# KEYS: flow ; ARGV: now, window
_COUNT_SENT = COUNT_SENT_LUA + "return count_sent(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))"

# Lua shared by the probe scripts: may a probe run now? (open: its cool-down is over; half_open: the
# probe in flight missed its deadline)
_PROBE_DUE = """
local function probe_due(breaker, probe_at, deadline, now)
  if breaker == 'open' then return (tonumber(probe_at or '0') or 0) <= now end
  if breaker == 'half_open' then return (tonumber(deadline or '0') or 0) < now end
  return false
end
"""

# KEYS: flow ; ARGV: now, probe deadline
_CLAIM_PROBE = _PROBE_DUE + """
local now = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'breaker', 'probe_at', 'probe_deadline', 'paused')
if h[4] == '1' or not probe_due(h[1], h[2], h[3], now) then return 0 end
redis.call('HSET', KEYS[1], 'breaker', 'half_open', 'probe_deadline', ARGV[2], 'breaker_since', ARGV[1])
return 1
"""

# KEYS: flow ; ARGV: expected (JSON field -> value or false), sets (JSON), deletes (JSON), tat or ''
_APPLY = """
local expected = cjson.decode(ARGV[1])
for f, v in pairs(expected) do
  local cur = redis.call('HGET', KEYS[1], f)
  if v == false then v = nil end
  if cur == false then cur = nil end
  if cur ~= v then return 0 end
end
for f, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[1], f, v) end
for _, f in ipairs(cjson.decode(ARGV[3])) do redis.call('HDEL', KEYS[1], f) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'tat', ARGV[4]) end
return 1
"""

# KEYS: parked, the parking index ; ARGV: destination
_UNINDEX = """
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
"""

# KEYS: parked, scheduled, scheduled of dest ; ARGV: due, limit
_DRAIN = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
  redis.call('ZADD', KEYS[3], ARGV[1], id)
end
return #ids
"""

# KEYS: flow, parked, scheduled, scheduled of dest ; ARGV: now, min seconds between releases
_RELEASE_PROBE = _PROBE_DUE + """
local now = tonumber(ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'breaker', 'probe_at', 'probe_deadline', 'probe_released_at', 'paused')
if h[5] == '1' or not probe_due(h[1], h[2], h[3], now) then return 0 end
if (tonumber(h[4] or '0') or 0) > now - tonumber(ARGV[2]) then return 0 end
local ids = redis.call('ZRANGE', KEYS[2], 0, 0)
if #ids == 0 then return 0 end
redis.call('ZREM', KEYS[2], ids[1])
redis.call('ZADD', KEYS[3], ARGV[1], ids[1])
redis.call('ZADD', KEYS[4], ARGV[1], ids[1])
redis.call('HSET', KEYS[1], 'probe_released_at', ARGV[1])
return 1
"""

#: the fields :func:`worker.flow.decide.after` reads; a transition is written only if they are unchanged
_WATCHED = ("breaker", "probe_at", "probe_deadline", "opened", "failures", "rate", "rate_until", "throttled_until",
            "epoch")


class FlowStore:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._reserve = client.register_script(_RESERVE)
        self._count_sent = client.register_script(_COUNT_SENT)
        self._claim_probe = client.register_script(_CLAIM_PROBE)
        self._apply = client.register_script(_APPLY)
        self._drain = client.register_script(_DRAIN)
        self._release_probe = client.register_script(_RELEASE_PROBE)
        self._unindex = client.register_script(_UNINDEX)

    def raw(self, destination: str) -> dict[str, str]:
        return {_s(k): _s(v) for k, v in self.r.hgetall(self.keys.flow(destination)).items()}

    def state(self, destination: str) -> FlowState:
        return FlowState.parse(self.raw(destination))

    def reserve(self, destination: str, rate_per_minute: float | None, burst: int, *, now: float,
                not_before: float = 0.0, adapted: Adapted | None = None, share: float = 1.0) -> float:
        """Take the next rate-limit slot of ``destination``; the time it may call the vendor.

        ``rate_per_minute``: the configured limit (None: none); ``adapted``: a lowered rate recovering
        (each slot spaced by its rate at the slot's time); both are used at ``share`` of their value."""
        interval = 60.0 / (rate_per_minute * share) if rate_per_minute else 0.0
        current = adapted.at(now) if adapted is not None else None
        tau = max(interval, 60.0 / (current * share) if current else 0.0) * (max(burst, 1) - 1)
        grow = ("0", "0", "0") if adapted is None else (
            f"{adapted.base * share:.6f}", f"{adapted.since:.6f}", f"{adapted.until:.6f}")
        slot = self._reserve(keys=[self.keys.flow(destination)],
                             args=[f"{now:.6f}", f"{interval:.6f}", f"{tau:.6f}", f"{not_before:.6f}", *grow,
                                   f"{adapted.doubling if adapted is not None else DOUBLING:.6f}"])
        return float(_s(slot))

    def reserve_key(self, key: str, rate_per_minute: float, *, now: float) -> float:
        """A slot of a plain limiter of its own (hash ``key``, field ``tat``) at ``rate_per_minute``, burst 1
        (an audit's share of a destination, :mod:`worker.audit.pace`)."""
        interval = 60.0 / rate_per_minute
        slot = self._reserve(keys=[key], args=[f"{now:.6f}", f"{interval:.6f}", "0", "0", "0", "0", "0",
                                               f"{DOUBLING:.6f}"])
        return float(_s(slot))

    def count_sent(self, destination: str, now: float) -> None:
        self._count_sent(keys=[self.keys.flow(destination)], args=[f"{now:.3f}", SENT_WINDOW])

    def claim_probe(self, destination: str, *, now: float, deadline: float) -> bool:
        return bool(self._claim_probe(keys=[self.keys.flow(destination)], args=[f"{now:.3f}", f"{deadline:.3f}"]))

    def apply(self, destination: str, knobs: Knobs,
              compute: Callable[[FlowState], Transition], *, tries: int = 20) -> Transition:
        """Compute a transition from the current state and write it atomically (retried on a conflict)."""
        transition = Transition()
        for _ in range(tries):
            raw = self.raw(destination)
            transition = compute(FlowState.parse(raw))
            if transition.empty:
                return transition
            tat = ""
            if transition.slowed:  # restart the limiter at the new rate after the pause: no burst
                until = float(transition.set.get("throttled_until", "0"))
                rate = float(transition.set["rate"])
                tat = f"{until + 60.0 / rate * (max(knobs.burst, 1) - 1):.6f}"
            expected = {f: raw.get(f, False) for f in _WATCHED}
            ok = self._apply(keys=[self.keys.flow(destination)],
                             args=[json.dumps(expected), json.dumps(transition.set),
                                   json.dumps(list(transition.delete)), tat])
            if ok:
                return transition
        return transition

    def parking(self) -> set[str]:
        """The destinations that may have parked events (the index the ledger adds to when it parks)."""
        return {_s(m) for m in self.r.smembers(self.keys.parking)}

    def unindex_if_empty(self, destinations: list[str]) -> None:
        """Take these destinations out of the index where nothing is parked (atomic per destination: a
        park racing with it adds the destination back)."""
        for name in destinations:
            self._unindex(keys=[self.keys.parked(name), self.keys.parking], args=[name])

    def index(self, destinations: list[str]) -> None:
        if destinations:
            self.r.sadd(self.keys.parking, *destinations)

    def parked_count(self, destination: str) -> int:
        return int(self.r.zcard(self.keys.parked(destination)))

    def oldest_parked(self, destination: str, n: int) -> list[str]:
        return [_s(m) for m in self.r.zrange(self.keys.parked(destination), 0, n - 1)]

    def drain(self, destination: str, limit: int, *, now: float) -> int:
        """Move up to ``limit`` of the oldest parked events to the retry schedule, due ``now``."""
        return int(self._drain(keys=[self.keys.parked(destination), self.keys.scheduled,
                                     self.keys.scheduled_of(destination)], args=[f"{now:.3f}", limit]))

    def release(self, destination: str, event_ids: list[str], *, now: float) -> int:
        """Move these parked events to the retry schedule (those another pump did not take first)."""
        moved = 0
        for eid in event_ids:
            if self.r.zrem(self.keys.parked(destination), eid):
                with self.r.pipeline(transaction=True) as pipe:
                    pipe.zadd(self.keys.scheduled, {eid: now})
                    pipe.zadd(self.keys.scheduled_of(destination), {eid: now})
                    pipe.execute()
                moved += 1
        return moved

    def release_probe(self, destination: str, *, now: float, every: float = 10.0) -> bool:
        """When the breaker's cool-down is over, send one parked event to be the probe."""
        return bool(self._release_probe(
            keys=[self.keys.flow(destination), self.keys.parked(destination), self.keys.scheduled,
                  self.keys.scheduled_of(destination)], args=[f"{now:.3f}", every]))
