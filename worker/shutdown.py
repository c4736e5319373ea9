"""Graceful shutdown of a worker within ``GRADESYNC_SHUTDOWN_GRACE`` (default 25 s, under Kubernetes' 30 s).

On SIGTERM Celery starts a warm shutdown: it stops consuming at once and waits for the running tasks.
Left alone, a task may then run for up to the 75 s time limit, so deploys killed workers mid-call. Here:

* :data:`gate` closes the moment the shutdown begins (Celery's ``worker_shutting_down`` signal).
* **No new vendor call after that.** A delivery that has not called its adapter yet hands its event back
  (:meth:`worker.delivery.Deliverer.hand_back`) instead; an adapter about to send another request (one
  that looks an item up before it POSTs) gets :class:`ShuttingDown` from
  :func:`worker.adapters.http.send` and the event is handed back.
  Only the requests already on the wire finish — each within the destination's timeout, which
  :func:`request_timeout` caps at ``(grace - 5 s) / 2`` so that even its connect and read phases fit.
* **Handing back** is a ledger transition (:meth:`worker.store.ledger.Ledger.hand_back`), not a broker
  trick: one Lua script checks the message's dispatch
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

import structlog

from worker.errors import GradeSyncError

log = structlog.get_logger("gradesync.shutdown")

#: seconds kept free of vendor requests at the end of the grace (Redis writes, acknowledgements, exit)
MARGIN = 5.0

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
