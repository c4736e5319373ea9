"""Graceful shutdown of a worker within ``GRADESYNC_SHUTDOWN_GRACE`` (default 25 s, under Kubernetes' 30 s).

On SIGTERM Celery starts a warm shutdown: it stops consuming at once and waits for the running tasks.
Left alone, a task may then run for up to the 75 s time limit, so deploys killed workers mid-call. Here:

* :data:`gate` closes the moment the shutdown begins (Celery's ``worker_shutting_down`` signal).
* **No new vendor call after that.** A delivery that has not called its adapter yet hands its event back
  (:func:`hand_back`) instead; an adapter about to send another request (one that looks an item up
  before it POSTs) gets :class:`ShuttingDown` from :func:`worker.adapters.http.send` and the event is
  handed back.
  Only the requests already on the wire finish — each within the destination's timeout, which
  :func:`request_timeout` caps at ``(grace - 5 s) / 2`` so that even its connect and read phases fit.
* **Handing back** is a ledger transition, not a broker trick: one Lua script checks the message's dispatch
  token, gives the event a fresh token (so any copy of the old message — a kombu restore, a re-delivery —
  is a no-op), un-counts an attempt that sent nothing, and schedules it due *now* in the durable retry set,
  from which any live worker's pump queues it again. Nothing is lost and nothing is sent twice: the only
  request that can be repeated is one whose outcome is unknown (it timed out), which is what the normal
  retry policy does anyway.
* A watchdog thread ends the process when the grace runs out anyway (a stuck request, a hung Redis): the
  unacknowledged messages come back after the visibility timeout with their attempt's outcome unknown —
  the at-least-once case — rather than the orchestrator's SIGKILL doing the same a few seconds later
  without a log line.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import structlog

from producers.keys import Keys
from worker.errors import GradeSyncError

log = structlog.get_logger("gradesync.shutdown")

#: seconds kept free of vendor requests at the end of the grace (Redis writes, acknowledgements, exit)
MARGIN = 5.0

# KEYS: event, inflight, scheduled ; ARGV: message token, fresh token, now, event id, un-count (0/1)
_HAND_BACK = """
local h = redis.call('HMGET', KEYS[1], 'token', 'state')
if not h[2] then return 0 end
if h[1] ~= ARGV[1] then return 0 end
if h[2] ~= 'queued' and h[2] ~= 'retrying' and h[2] ~= 'in_progress' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'retrying', 'token', ARGV[2], 'next_attempt_at', ARGV[3], 'updated_at', ARGV[3])
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('HINCRBY', KEYS[1], 'handbacks', 1)
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""


class ShuttingDown(GradeSyncError):
    """The worker is shutting down: no new vendor request is started."""


class ShutdownGate:
    """Closed once this process began to shut down; read by every delivery before each vendor request."""

    def __init__(self) -> None:
        self._closed = threading.Event()
        self.deadline: float | None = None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self, grace: float) -> None:
        if not self._closed.is_set():
            self.deadline = time.monotonic() + grace
            self._closed.set()

    def check(self, what: str) -> None:
        """Raise :class:`ShuttingDown` when the gate is closed (called before a vendor request)."""
        if self._closed.is_set():
            raise ShuttingDown(f"worker shutting down: {what} not sent")

    def reset(self) -> None:  # tests
        self._closed.clear()
        self.deadline = None


#: this process's gate
gate = ShutdownGate()


def request_timeout(timeout: float, grace: float) -> float:
    """The per-request timeout a worker uses: the destination's, capped so a request in flight when the
    shutdown begins ends inside the grace (connect and read phases each take at most this long)."""
    return max(1.0, min(timeout, (grace - MARGIN) / 2))


class HandBack:
    """Give an event back to the durable retry set, due now, under a fresh dispatch token."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.keys = keys
        self._script = client.register_script(_HAND_BACK)

    def __call__(self, event_id: str, destination: str, token: str, new_token: str, *, started: bool) -> bool:
        now = f"{time.time():.6f}"
        done = self._script(keys=[self.keys.event(event_id), self.keys.inflight(destination), self.keys.scheduled],
                            args=[token, new_token, now, event_id, "1" if started else "0"])
        return bool(done)


def begin(grace: float) -> None:
    """The shutdown began: close the gate and start the watchdog."""
    if gate.closed:
        return
    gate.close(grace)
    log.warning("shutdown_started", grace_seconds=grace,
                message="no new vendor request; running requests finish, the rest is handed back")
    threading.Thread(target=_watchdog, args=(grace,), name="gradesync-shutdown-watchdog", daemon=True).start()


def _watchdog(grace: float) -> None:
    time.sleep(max(0.0, grace - 1.0))
    log.error("shutdown_grace_exceeded", grace_seconds=grace,
              message="exiting now; unacknowledged messages are re-delivered after the visibility timeout")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
