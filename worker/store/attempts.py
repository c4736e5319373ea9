"""The hot path of a delivery in two Redis round trips: :meth:`Attempts.claim` before the vendor call and
:meth:`Attempts.succeed` after a successful one.

Why: a delivery used to make about ten round trips of its own (load, lease, reload, stale check, flow
state, sent-rate count, start, finish, release, two counter updates). Each costs little in Redis but a
lot of Python in redis-py, under the one interpreter lock of a worker process; at a few hundred events a
second per process that was half of the worker's CPU. One Lua script per step does the same work
atomically (so also without the windows between the steps):

* **claim** — the message's dispatch token is still the record's and the event is runnable; the
  learner + item lease; the stale guard (the newest ``occurred_at`` applied); and, when the destination's
  flow state lets every event go without a rate-limit slot (the common case: no configured or learnt
  rate, breaker closed, not paused, no 429 pause), the sent-rate count and the start of the attempt
  (state ``in_progress``, attempt counter, in-flight index). Otherwise it stops after the stale guard with
  the lease held and the caller takes the general path (:meth:`worker.flow.gate.FlowControl.before`,
  then :meth:`worker.store.ledger.Ledger.start`).
* **succeed** — the outcome, the attempt record, the stale guard's high-water mark, the ledger's expiry,
  the processed counter and per-minute bucket (so the metrics move in the same transaction as the
  state), and the lease's release.

The state names come from Python (:data:`worker.store.ledger.RUNNABLE` and the constants below) as
arguments, never spelled in the Lua.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from producers.keys import Keys
from worker.flow.decide import SENT_WINDOW
from worker.flow.store import COUNT_SENT_LUA
from worker.store.ledger import RUNNABLE, EventRecord, EventState
from worker.store.stats import MINUTE_TTL, processed_field

#: the state of an event whose attempt runs, and of one delivered
IN_PROGRESS = EventState.IN_PROGRESS
SUCCEEDED = EventState.SUCCEEDED

# KEYS: event, lock, hwm, flow, inflight, queued
# ARGV: token, now, owner, lease ms, occurred ms, event id, fast ('1': may start when the flow state is
#       clean), sent window, in-progress state, runnable states...
# returns {code, n, extra}: code 'skipped' (n: 0), 'busy', 'stale' (extra: newest event id),
#         'flow' (lease held, not started), 'started' (n: the attempt, extra: the flow failure count)
_CLAIM = COUNT_SENT_LUA + """
local h = redis.call('HMGET', KEYS[1], 'token', 'state', 'attempts')
local runnable = false
for i = 10, #ARGV do if h[2] == ARGV[i] then runnable = true end end
if h[1] ~= ARGV[1] or not runnable then return {'skipped', 0, ''} end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {'busy', 0, ''} end
local cur = redis.call('GET', KEYS[3])
if cur then
  local ms, eid = string.match(cur, '^(%d+)|(.*)$')
  if ms and eid ~= ARGV[6] and tonumber(ms) >= tonumber(ARGV[5]) then return {'stale', 0, eid} end
end
if ARGV[7] ~= '1' then return {'flow', 0, ''} end
local now = tonumber(ARGV[2])
local f = redis.call('HMGET', KEYS[4], 'paused', 'breaker', 'throttled_until', 'rate', 'failures')
if f[1] == '1' or (f[2] and f[2] ~= '' and f[2] ~= 'closed') or (f[4] and f[4] ~= '') then
  return {'flow', 0, ''}
end
local until_ = tonumber(f[3] or '')
if until_ and now < until_ then return {'flow', 0, ''} end
count_sent(KEYS[4], now, tonumber(ARGV[8]))
local n = tonumber(h[3] or '0') + 1
redis.call('HSET', KEYS[1], 'state', ARGV[9], 'attempts', n, 'started_at', ARGV[2], 'updated_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[6])
redis.call('ZREM', KEYS[6], ARGV[6])
return {'started', n, f[5] or '0'}
"""

# KEYS: event, attempts, inflight, queued, hwm, lock, processed counters, minute bucket
# ARGV: now, attempt JSON, result JSON, occurred ms, event id, owner, ttl, counter field, minute ttl,
#       succeeded state
_SUCCEED = """
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1], 'state', ARGV[10], 'token', '', 'finished_at', ARGV[1],
  'result', ARGV[3])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('ZREM', KEYS[4], ARGV[5])
local cur = redis.call('GET', KEYS[5])
local ms = cur and tonumber(string.match(cur, '^(%d+)'))
if not ms or ms <= tonumber(ARGV[4]) then redis.call('SET', KEYS[5], ARGV[4] .. '|' .. ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
if redis.call('GET', KEYS[6]) == ARGV[6] then redis.call('DEL', KEYS[6]) end
redis.call('HINCRBY', KEYS[7], ARGV[8], 1)
redis.call('INCR', KEYS[8])
redis.call('EXPIRE', KEYS[8], ARGV[9])
return 1
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(text: str) -> float:
    """A flow-hash number as :class:`worker.flow.decide.FlowState` reads it (absent or unreadable: 0)."""
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Claim:
    """What :meth:`Attempts.claim` found: ``code`` is ``skipped`` (not this message's turn: duplicate,
    re-delivered or already finished), ``busy`` (another worker holds the lease), ``stale`` (a newer event
    was applied: ``newest``), ``flow`` (lease held; the general flow-control path decides) or ``started``
    (lease held, attempt ``attempt`` begun; ``clean``: the destination had no failures counted)."""

    code: str
    attempt: int = 0
    newest: str = ""
    clean: bool = False


class Attempts:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_seconds: int) -> None:
        self.keys = keys
        self.ttl = ttl_seconds
        self._claim = client.register_script(_CLAIM)
        self._succeed = client.register_script(_SUCCEED)

    def claim(self, record: EventRecord, token: str, *, lock: str, hwm: str, owner: str, lease: float,
              occurred_ms: int, fast: bool) -> Claim:
        """Check the token, take the lease ``lock``, apply the stale guard ``hwm`` and — when ``fast``
        (the destination has no configured rate) and its flow state is clean — start the attempt."""
        k, eid = self.keys, record.event_id
        code, n, extra = self._claim(
            keys=[k.event(eid), lock, hwm, k.flow(record.destination), k.inflight(record.destination), k.queued],
            args=[token, f"{time.time():.6f}", owner, int(lease * 1000), occurred_ms, eid, "1" if fast else "0",
                  SENT_WINDOW, IN_PROGRESS, *RUNNABLE],
        )
        code = _s(code)
        if code == "stale":
            return Claim(code, newest=_s(extra))
        if code == "started":
            return Claim(code, attempt=int(n), clean=not _number(_s(extra)))
        return Claim(code)

    def succeed(self, record: EventRecord, attempt: dict[str, Any], *, result: dict[str, Any], lock: str,
                hwm: str, owner: str, occurred_ms: int) -> None:
        """Record a successful attempt, advance the stale guard, count it, and release the lease."""
        k, eid = self.keys, record.event_id
        now = time.time()
        self._succeed(
            keys=[k.event(eid), k.attempts(eid), k.inflight(record.destination), k.queued, hwm, lock,
                  k.stats("processed"), k.minute(record.destination, SUCCEEDED, int(now // 60))],
            args=[f"{now:.6f}", json.dumps(attempt, default=str), json.dumps(result), occurred_ms, eid, owner,
                  self.ttl, processed_field(record.destination, record.vendor, SUCCEEDED), MINUTE_TTL, SUCCEEDED],
        )
