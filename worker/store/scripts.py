"""Every Lua script of the event store, in one place (flow control's own scripts are in
:mod:`worker.flow.store`, the broker's in :mod:`worker.kombu_redis`).

Why Lua: each change of an event's state is one atomic step in Redis (no window between a check and its
write, one round trip). Why here: so the transitions can be read side by side, and so no script spells a
state name — they come from :class:`worker.store.records.EventState` as arguments (``ARGV``), listed in
the comment above each script. :class:`worker.store.ledger.Ledger` is the only caller of the event
scripts; :data:`LEAD` (the sweeper's leader lease) and :data:`SCHEDULE_CLAIM` / :data:`SCHEDULE_RECOVER`
(the retry schedule's hand-over to the pump) touch no event record.
"""

from __future__ import annotations

from worker.flow.store import COUNT_SENT_LUA, FLOW_CLEAN_LUA

# Lua: is ``value`` one of ARGV[from], ARGV[from + 1], … (a list of states passed last)
_IN_ARGV = """
local function in_argv(value, from)
  for i = from, #ARGV do if ARGV[i] == value then return true end end
  return false
end
"""

# Creation of a batch. KEYS: published counter, queued, then each event's key ; ARGV: now, ttl, queued
# state, then 7 per event: wire, destination, vendor, token, learner id, occurred_at, event id. Records each
# event unless it exists (and indexes it in ``queued`` for the stranded-event sweeper of worker.sweeper,
# should the producer die before its message is queued); returns token, state of each event (as found or
# created). One script call per chunk of events, not per event: the per-command cost was most of
# publishing's.
REGISTER = """
local out = {}
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 7
  local existing = redis.call('HMGET', KEYS[i], 'token', 'state')
  if existing[2] then
    out[#out + 1] = existing[1]
    out[#out + 1] = existing[2]
  else
    redis.call('HSET', KEYS[i], 'wire', ARGV[a + 1], 'destination', ARGV[a + 2], 'vendor', ARGV[a + 3],
      'token', ARGV[a + 4], 'state', ARGV[3], 'attempts', 0, 'created_at', ARGV[1], 'updated_at', ARGV[1],
      'learner_id', ARGV[a + 5], 'occurred_at', ARGV[a + 6])
    redis.call('EXPIRE', KEYS[i], ARGV[2])
    redis.call('HINCRBY', KEYS[1], ARGV[a + 2], 1)
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[a + 7])
    out[#out + 1] = ARGV[a + 4]
    out[#out + 1] = ARGV[3]
  end
end
return out
"""

# The start of an attempt on the general path (after flow control admitted it).
# KEYS: event, inflight, queued ; ARGV: token, now, event id, in-progress state, runnable states...
START = _IN_ARGV + """
local h = redis.call('HMGET', KEYS[1], 'token', 'state', 'attempts')
if not h[2] then return {-1, 'missing'} end
if h[1] ~= ARGV[1] then return {-2, h[2]} end
if not in_argv(h[2], 5) then return {-3, h[2]} end
local n = tonumber(h[3] or '0') + 1
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'attempts', n, 'started_at', ARGV[2], 'updated_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
return {n, ARGV[4]}
"""

# The delivery's claim (see Ledger.claim): token, lease, stale guard and — when the flow state is clean
# (flow_clean, worker.flow.store) — the sent-rate count and the start of the attempt.
# KEYS: event, lock, hwm, flow, inflight, queued
# ARGV: token, now, owner, lease ms, occurred ms, event id, fast ('1': may start when the flow state is
#       clean), sent window, in-progress state, runnable states...
# returns {code, n, extra}: code 'skipped' (n: 0), 'busy', 'stale' (extra: newest event id),
#         'flow' (lease held, not started), 'started' (n: the attempt, extra: the flow failure count)
CLAIM = COUNT_SENT_LUA + FLOW_CLEAN_LUA + _IN_ARGV + """
local h = redis.call('HMGET', KEYS[1], 'token', 'state', 'attempts')
if h[1] ~= ARGV[1] or not in_argv(h[2], 10) then return {'skipped', 0, ''} end
if not redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {'busy', 0, ''} end
local cur = redis.call('GET', KEYS[3])
if cur then
  local ms, eid = string.match(cur, '^(%d+)|(.*)$')
  if ms and eid ~= ARGV[6] and tonumber(ms) >= tonumber(ARGV[5]) then return {'stale', 0, eid} end
end
if ARGV[7] ~= '1' then return {'flow', 0, ''} end
local now = tonumber(ARGV[2])
local clean, failures = flow_clean(KEYS[4], now)
if not clean then return {'flow', 0, ''} end
count_sent(KEYS[4], now, tonumber(ARGV[8]))
local n = tonumber(h[3] or '0') + 1
redis.call('HSET', KEYS[1], 'state', ARGV[9], 'attempts', n, 'started_at', ARGV[2], 'updated_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[6])
redis.call('ZREM', KEYS[6], ARGV[6])
return {'started', n, failures}
"""

# A success: outcome, attempt record, the stale guard's high-water mark, expiry, counters, lease release.
# KEYS: event, attempts, inflight, queued, hwm, lock, processed counters, minute bucket, active destinations
# ARGV: now, attempt JSON, result JSON, occurred ms, event id, owner, ttl, counter field, minute ttl,
#       succeeded state, destination
SUCCEED = """
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
redis.call('ZADD', KEYS[9], math.floor(tonumber(ARGV[1])), ARGV[11])
return 1
"""

# A dead letter back to queued with fresh attempts.
# KEYS: event, dlq, attempts, dlq of the destination, queued ; ARGV: new token, now, ttl, event id,
#       dead-lettered state, queued state
REQUEUE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= ARGV[5] then return state or 'missing' end
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('HSET', KEYS[1], 'state', ARGV[6], 'attempts', 0, 'token', ARGV[1], 'requeued_at', ARGV[2],
  'updated_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'requeues', 1)
redis.call('HDEL', KEYS[1], 'dead_at', 'next_attempt_at', 'uncounted', 'flow_slot', 'parked_reason', 'parked_at')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[4])
return ARGV[6]
"""

# Shutting down: give the event back to the retry schedule, due now, under a fresh token (worker.shutdown).
# KEYS: event, inflight, scheduled ; ARGV: message token, fresh token, now, event id, un-count (0/1),
#       retrying state, runnable states...
HAND_BACK = _IN_ARGV + """
local h = redis.call('HMGET', KEYS[1], 'token', 'state')
if not h[2] then return 0 end
if h[1] ~= ARGV[1] then return 0 end
if not in_argv(h[2], 7) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[6], 'token', ARGV[2], 'next_attempt_at', ARGV[3], 'updated_at', ARGV[3])
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('HINCRBY', KEYS[1], 'handbacks', 1)
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""

# A stranded event gets a fresh token before its new message is sent (worker.sweeper).
# KEYS: event, queued, scheduled, dispatching ; ARGV: fresh token, now, event id, waiting states...
#   -> the destination, or false when the event is not waiting for a message any more
REISSUE = _IN_ARGV + """
local h = redis.call('HMGET', KEYS[1], 'state', 'destination')
if not in_argv(h[1], 4) or redis.call('ZSCORE', KEYS[3], ARGV[3]) or redis.call('ZSCORE', KEYS[4], ARGV[3]) then
  redis.call('ZREM', KEYS[2], ARGV[3])  -- started, finished, or the retry pump owns it again
  return false
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'swept_at', ARGV[2], 'updated_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'sweeps', 1)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return h[2]
"""

# Key rotation: the re-encrypted wire replaces the one read, only if nobody changed it meanwhile.
# KEYS: event ; ARGV: the wire read, the re-encrypted wire
SWAP_WIRE = """
if redis.call('HGET', KEYS[1], 'wire') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'wire', ARGV[2])
  return 1
end
return 0
"""

# The learner + item lease, released by its owner only. KEYS: lock ; ARGV: owner
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# The sweeper's leader lease. KEYS: lock ; ARGV: owner, lease ms  -> 1 when this owner leads
LEAD = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# The retry schedule (worker.store.schedule). The per-destination zsets ``scheduled:{dest}`` mirror
# ``scheduled`` (for cheap counts); the scripts find an event's destination in its ledger hash (ARGV key
# prefix): one Redis, as everywhere in gradesync.

# Due events move to ``dispatching`` (so two pumps never both take one).
# KEYS: scheduled, dispatching ; ARGV: now, limit, key prefix
SCHEDULE_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
  local dest = redis.call('HGET', ARGV[3] .. ':event:' .. id, 'destination')
  if dest then redis.call('ZREM', ARGV[3] .. ':scheduled:' .. dest, id) end
end
return ids
"""

# Entries a crashed pump left in ``dispatching`` go back to the schedule.
# KEYS: dispatching, scheduled ; ARGV: cutoff, now, key prefix
SCHEDULE_RECOVER = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], 'NX', ARGV[2], id)
  local dest = redis.call('HGET', ARGV[3] .. ':event:' .. id, 'destination')
  if dest then redis.call('ZADD', ARGV[3] .. ':scheduled:' .. dest, 'NX', ARGV[2], id) end
end
return #ids
"""
