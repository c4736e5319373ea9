"""kombu's Redis transport, as the worker runs it: a guard against a closed channel, one Redis client per
channel, acknowledgements in batches, and messages taken in batches.

Each is a small, idempotent patch of kombu's ``redis`` transport installed by :mod:`worker.tasks` (so only
a worker process runs them; producers and the ops app use kombu as it is), and each says why below. The
last two change how the consumer's event loop talks to Redis, not what is stored there: ``unacked`` and
its index hold the same entries in kombu's own format, so kombu's visibility-timeout sweep, its restore
on shutdown and on reject, and a plain kombu or Celery process all keep working with them.

With this module, :mod:`worker.celery_app`, :mod:`worker.tasks` and :mod:`worker.dispatch.celery` are the
only modules that import Celery or kombu.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog
from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

log = structlog.get_logger("gradesync.broker")

# -- the kombu Redis guard -----------------------------------------------------------------------------------
# When the broker connection drops, Celery closes the old connection and opens a new one. Two things then
# touch the *old* channel, whose connection kombu has already released: closing it puts its unacknowledged
# messages back (``QoS.restore_unacked``), and the acknowledgements of tasks that finish after the drop
# (late ack: ``QoS.ack`` / ``QoS.reject``) still run on it. Either can raise
# ``AttributeError: 'NoneType' object has no attribute 'hostname'`` / ``'client'`` (from kombu's
# ``_connparams``; the kombu#582 / #970 family). That is not one of the connection errors Celery ignores,
# so the worker stopped with "Unrecoverable error" instead of reconnecting — seen in the Redis-crash drill
# and its integration test, roughly one run in three. :func:`harden_kombu_redis` wraps those three ``QoS``
# methods so that this one failure is logged and skipped. Nothing is lost by skipping it: the messages are
# still in Redis's ``unacked`` hash, and kombu's visibility-timeout sweep (``unacked_restore_interval``,
# every 5 s here) puts them back after ``GRADESYNC_VISIBILITY_TIMEOUT``; the dispatch token makes a copy
# whose attempt was recorded a no-op.

GUARDED = ("restore_unacked", "ack", "reject")


def _guard(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except AttributeError as exc:  # the channel's connection is already gone (Redis went away)
            log.warning("broker_channel_gone", operation=name, error=str(exc),
                        message="left in Redis's unacked set; re-delivered after the visibility timeout")
            return None

    guarded.__gradesync_guard__ = True  # type: ignore[attr-defined]
    return guarded


def harden_kombu_redis() -> None:
    """Install the guard (idempotent)."""
    qos: Any = kombu_redis.QoS
    for name in GUARDED:
        method = getattr(qos, name)
        if not getattr(method, "__gradesync_guard__", False):
            setattr(qos, name, _guard(name, method))


def reuse_kombu_clients() -> None:
    """One Redis client object per channel and pool for kombu's acknowledgements (idempotent).

    Why: kombu builds a new ``redis.Redis`` for every ``QoS.append`` (a message taken) and ``QoS.ack``;
    with redis-py 8 that constructor costs as much as the commands themselves, about 5 % of a worker's
    CPU. The client holds no connection of its own (it borrows one from the channel's pool per command), so
    sharing it between threads is what redis-py expects; a new pool (a reconnect) gets a new client.
    """
    channel: Any = kombu_redis.Channel
    create = channel._create_client
    if getattr(create, "__gradesync_reuse__", False):
        return

    @functools.wraps(create)
    def create_client(self: Any, asynchronous: bool = False) -> Any:
        if asynchronous:
            return create(self, asynchronous=True)
        pool = self.pool
        client = self.__dict__.get("_gradesync_client")
        if client is None or client.connection_pool is not pool:
            client = create(self)
            self.__dict__["_gradesync_client"] = client
        return client

    create_client.__gradesync_reuse__ = True  # type: ignore[attr-defined]
    channel._create_client = create_client


# -- acknowledgements in batches -----------------------------------------------------------------------------
# Why: with late acknowledgement Celery runs every ack on the consumer's event loop, the one thread that
# also takes every message from Redis, and kombu's ack is a MULTI / ZREM / HDEL / EXEC round trip of its
# own with that loop blocked. Under load the loop is the worker's bottleneck (a GIL profile puts about a
# quarter of its time in the acks), and each round trip hands the interpreter lock to 64 busy delivery
# threads and waits to get it back. :func:`batch_kombu_acks` makes an ack that runs on the loop only
# record its delivery tag; at the end of the loop's pass (the hub's ``on_tick``, before it polls again)
# one transaction removes every recorded tag from ``unacked`` and its index, then kombu does its own
# bookkeeping per tag. Nothing is acknowledged earlier than before, only later by at most one pass of the
# loop; an ack from any other thread (no hub) goes straight through. If the worker dies between the two,
# the message is still in ``unacked``: the visibility-timeout sweep puts it back and its dispatch token
# makes it a no-op, as after a ``kill -9`` between the ledger write and the ack. A failed flush leaves
# the tags for that sweep, and closing the channel flushes first.

_ACKS = "_gradesync_acks"
_FLUSH = "_gradesync_flush"


def _pop_acks(qos: Any) -> list[Any]:
    """The delivery tags ``qos`` recorded since the last flush (and no flush pending any more)."""
    tags: list[Any] = qos.__dict__.pop(_ACKS, [])
    flush = qos.__dict__.pop(_FLUSH, None)
    if flush is not None:
        hub = get_event_loop()
        if hub is not None:
            hub.on_tick.discard(flush)
    return tags


def _acked(qos: Any, tags: list[Any]) -> None:
    bookkeeping: Any = virtual.QoS.ack  # kombu's own (the prefetch count)
    for tag in tags:
        bookkeeping(qos, tag)


def _left_unacked(tags: int, exc: BaseException) -> None:
    log.warning("broker_ack_failed", messages=tags, error=f"{type(exc).__name__}: {exc}",
                message="left in Redis's unacked set; re-delivered after the visibility timeout")


def flush_acks(qos: Any) -> int:
    """Acknowledge the delivery tags ``qos`` recorded (one transaction); returns how many."""
    tags = _pop_acks(qos)
    if not tags:
        return 0
    try:
        with qos.pipe_or_acquire() as pipe:
            pipe.zrem(qos.unacked_index_key, *tags).hdel(qos.unacked_key, *tags).execute()
    except (AttributeError, redis.RedisError, OSError) as exc:  # the channel's connection is gone
        _left_unacked(len(tags), exc)
        return 0
    _acked(qos, tags)
    return len(tags)


def _tick(qos: Any) -> None:
    """The end of a pass of the loop: acknowledge what it recorded, with the batched take when installed
    (one round trip for both), or alone."""
    channel = getattr(qos, "channel", None)
    if _takes(channel):
        take(channel)
    else:
        flush_acks(qos)


def batch_kombu_acks() -> None:
    """Install the batched ``QoS.ack`` (idempotent; after :func:`harden_kombu_redis`)."""
    qos: Any = kombu_redis.QoS
    ack, restore = qos.ack, qos.restore_unacked
    if getattr(ack, "__gradesync_batch__", False):
        return

    @functools.wraps(ack)
    def batched_ack(self: Any, delivery_tag: Any) -> Any:
        hub = get_event_loop()
        if hub is None or getattr(hub, "_loop_thread", None) != threading.get_ident():
            return ack(self, delivery_tag)
        pending = self.__dict__.setdefault(_ACKS, [])
        pending.append(delivery_tag)
        if _FLUSH not in self.__dict__:
            flush = self.__dict__[_FLUSH] = functools.partial(_tick, self)
            hub.on_tick.add(flush)
        return None

    @functools.wraps(restore)
    def flushed_restore(self: Any, *args: Any, **kwargs: Any) -> Any:
        flush_acks(self)  # what was acknowledged is not put back
        return restore(self, *args, **kwargs)

    batched_ack.__gradesync_batch__ = True  # type: ignore[attr-defined]
    qos.ack = batched_ack
    qos.restore_unacked = flushed_restore



# -- messages taken in batches ---------------------------------------------------------------------------------
# Why: kombu takes one message per pass of the event loop (a BRPOP), and with late acknowledgement then
# writes it to ``unacked`` and its index in a blocking round trip of its own (``QoS.append``). A process
# under load spends its loop in those round trips, and each hands the interpreter lock to the delivery
# threads and waits to win it back: a thread profile of two busy worker processes showed a third of their
# delivery threads idle, waiting for the loop to hand them work, and the loop in Redis round trips, so a
# second process on a second core added only about 1.4x. :func:`batch_kombu_take` runs, at the start of
# each pass (before kombu decides whether to send a BRPOP), one Lua script (:data:`TAKE`) that
# acknowledges what the loop recorded since the last pass and takes up to the rest of the prefetch window
# (the same limit kombu and Celery keep: ``prefetch_count`` less what is in flight), recording each taken
# message in ``unacked`` and its index in the same atomic step. The loop then delivers them one by one as
# kombu would (same callback, same ``Message``, same bookkeeping), without the per-message write: it is
# done. Only when the queues are empty does kombu's BRPOP run, which is how an idle worker waits.
#
# What stays the same: nothing beyond the prefetch window is taken; a taken message is in ``unacked``, in
# kombu's own format (``[payload, exchange, routing_key]`` under its delivery tag, scored with the time it
# was taken), before the script returns, so the visibility-timeout sweep, ``restore_by_tag`` on a reject
# or a shutdown, and the acknowledgements treat it like any other; queues are taken round-robin. What is
# safer: a BRPOP'd message is out of its list and not yet in ``unacked`` until ``QoS.append`` has run (a
# ``kill -9`` in between loses it); a taken one never is. A payload that is not a kombu message (no
# delivery tag or delivery info) is left where it was, for BRPOP to take the usual way.

#: KEYS: the unacked hash, its index, then the queue lists in the order BRPOP polls them. ARGV: how many
#: to take at most, the time to score them with (the client's clock, as kombu's own append), then the
#: delivery tags to acknowledge. Returns queue key, payload, queue key, payload, ...
TAKE = """
if #ARGV > 2 then
  redis.call('ZREM', KEYS[2], unpack(ARGV, 3))
  redis.call('HDEL', KEYS[1], unpack(ARGV, 3))
end
local out, left, skip, more = {}, tonumber(ARGV[1]), {}, true
while left > 0 and more do
  more = false
  for i = 3, #KEYS do
    if left > 0 and not skip[i] then
      local item = redis.call('RPOP', KEYS[i])
      if not item then
        skip[i] = true
      else
        local ok, m = pcall(cjson.decode, item)
        local props = ok and type(m) == 'table' and m['properties']
        local tag = type(props) == 'table' and props['delivery_tag']
        local info = type(props) == 'table' and props['delivery_info']
        if type(tag) ~= 'string' or type(info) ~= 'table' or type(info['exchange']) ~= 'string'
            or type(info['routing_key']) ~= 'string' then
          redis.call('RPUSH', KEYS[i], item)  -- not a kombu message: back where it was, for BRPOP
          skip[i] = true
        else
          redis.call('ZADD', KEYS[2], ARGV[2], tag)
          redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info['exchange']) .. ','
                     .. cjson.encode(info['routing_key']) .. ']')
          out[#out + 1] = KEYS[i]
          out[#out + 1] = item
          left = left - 1
          more = true
        end
      end
    end
  end
end
return out
"""

#: at most this many messages per script call (a bound on one pass of the loop)
MAX_TAKE = 256
_TAKE_ON = [False]  # batch_kombu_take() installed
_TAKEN = "_gradesync_taken"  # on the QoS: the delivery tag being delivered whose unacked entry exists
_SCRIPT = "_gradesync_take"  # on the channel: (client, its registered TAKE)


def _takes(channel: Any) -> bool:
    """Whether ``channel`` takes in batches: the take is installed and the channel consumes queues."""
    return _TAKE_ON[0] and bool(getattr(channel, "active_queues", None))


def _room(channel: Any, acked: int) -> int:
    """How many messages ``channel`` may take now: its prefetch window less what is in flight."""
    qos = channel.qos
    if not qos.prefetch_count:
        return 0  # no window to fill (kombu's BRPOP then works as it always does)
    room = int(qos.prefetch_count) - (len(qos._delivered) - len(qos._dirty) - acked)
    if channel._in_poll:
        room -= 1  # a BRPOP is out and may bring one more
    return max(0, min(room, MAX_TAKE))


def take(channel: Any) -> int:
    """Acknowledge what the loop recorded and take what the window allows, in one script; deliver what
    was taken. Returns how many were delivered."""
    qos = channel.qos
    if channel.global_keyprefix:  # a script's keys would not be prefixed: kombu's own path
        flush_acks(qos)
        return 0
    tags = _pop_acks(qos)
    room = _room(channel, len(tags))
    if not tags and (not room or channel._in_poll):
        return 0  # nothing to acknowledge, and the queues were empty at the last look (BRPOP waits)
    queues = channel._queue_cycle.consume(len(channel.active_queues)) if room else []
    keys = [channel._q_for_pri(queue, pri) for pri in channel.priority_steps for queue in queues]
    try:
        with channel.conn_or_acquire() as client:
            cached = channel.__dict__.get(_SCRIPT)
            if cached is None or cached[0] is not client:
                cached = channel.__dict__[_SCRIPT] = (client, client.register_script(TAKE))
            taken = cached[1](keys=[qos.unacked_key, qos.unacked_index_key, *keys],
                              args=[room if keys else 0, time.time(), *tags])
    except (AttributeError, redis.RedisError, OSError) as exc:  # the connection is gone: kombu reconnects
        if tags:
            _left_unacked(len(tags), exc)
        return 0
    _acked(qos, tags)
    return _deliver(channel, taken)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _deliver(channel: Any, taken: list[Any]) -> int:
    qos, deliver = channel.qos, channel.connection._deliver
    messages = [(_text(taken[i]).rsplit(channel.sep, 1)[0], json.loads(taken[i + 1]))
                for i in range(0, len(taken), 2)]
    for done, (queue, message) in enumerate(messages):
        channel._queue_cycle.rotate(queue)
        qos.__dict__[_TAKEN] = message["properties"]["delivery_tag"]
        try:
            deliver(message, queue)
        except BaseException:
            for _, left in messages[done + 1:]:  # not delivered: back to the head of their queues now
                qos.restore_by_tag(left["properties"]["delivery_tag"], leftmost=True)
            raise
        finally:
            qos.__dict__.pop(_TAKEN, None)
    return len(messages)


def batch_kombu_take() -> None:
    """Install the batched take at the start of each pass of the loop (idempotent; after
    :func:`batch_kombu_acks`)."""
    poller: Any = kombu_redis.MultiChannelPoller
    qos: Any = kombu_redis.QoS
    start, append = poller.on_poll_start, qos.append
    if getattr(start, "__gradesync_take__", False):
        return

    @functools.wraps(start)
    def on_poll_start(self: Any) -> Any:
        for channel in list(self._channels):
            if _takes(channel):
                take(channel)
        return start(self)

    @functools.wraps(append)
    def recorded_append(self: Any, message: Any, delivery_tag: Any) -> Any:
        if delivery_tag is not None and self.__dict__.get(_TAKEN) == delivery_tag:
            return virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]  # TAKE wrote it
        return append(self, message, delivery_tag)

    on_poll_start.__gradesync_take__ = True  # type: ignore[attr-defined]
    _TAKE_ON[0] = True
    poller.on_poll_start = on_poll_start
    qos.append = recorded_append
