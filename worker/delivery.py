"""One delivery run: what the ``gradesync.deliver`` task does with one message.

1. Load the event's ledger record; run only if the message's dispatch token is still the record's and
   the event is runnable (so duplicates, re-deliveries and requeues of delivered events do nothing).
2. Take the lease of the event's destination + learner + item (attempts for one gradebook cell never
   overlap); if another worker holds it, defer this message a few seconds (durably).
3. Stale guard: if a newer ``occurred_at`` was already applied for that learner + item, end
   ``superseded`` without calling the vendor.

   Steps 2 and 3, the token check under the lease and — while the destination's flow state is clean —
   step 4's admission and the start of the attempt are one Redis script, and a success is recorded by
   another (the ledger's ``claim`` and ``succeed``, :mod:`worker.store.ledger`): the common delivery
   makes two round trips of its own.
4. Flow control (:mod:`worker.flow`): over its fair share of this process's threads, a destination's
   message is deferred; before the attempt the destination's state may defer it to its rate-limit slot,
   park it (breaker open, paused) or let it be the breaker's probe; after it, the outcome updates the
   breaker and the rate. None of that counts as an attempt.
5. Call the destination's adapter once. Then, in one Redis transaction, record the attempt and the
   outcome that :func:`worker.retry.decide` chose: succeeded, superseded, retry at T (kept durable in
   Redis, see :mod:`worker.store.schedule`), or dead-lettered.

Once the worker began to shut down (:mod:`worker.shutdown`) no new vendor call starts: the event is handed
back to the durable retry set under a fresh token instead, and runs again on a live worker.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from worker import errors, hooks, shutdown
from worker.adapters import build_adapter
from worker.adapters.base import Adapter, AdapterContext, DeliveryResult
from worker.adapters.client import make_client, take_budget
from worker.dispatch import new_token
from worker.events import GradeEvent
from worker.flow.gate import FlowControl, Verdict
from worker.flow.share import FairShare
from worker.known_secrets import destination_secrets, scrub_error, wire_secrets
from worker.redact import bind_secrets, redact_text
from worker.registry.lazy import vendors_of
from worker.retry import Action, RetryPolicy, decide
from worker.settings import Destination, Settings, refresh_live_destinations
from worker.store import EventRecord, Store
from worker.store.ledger import RUNNABLE, Claim

log = structlog.get_logger("gradesync.delivery")

#: seconds a message waits when another worker holds the learner + item lease
LEASE_BUSY_DELAY = 2.0


@dataclass(frozen=True)
class _Lease:
    """The learner + item lease this run holds: its owner, its key, and the item's stale-guard key."""

    owner: str
    lock: str
    hwm: str


class AdapterPool:
    """One adapter per destination per process, built on first use; the ``settings.destination_cache``
    most recently used are kept (10 000 destinations' adapters and clients were ~30 MB a process). An
    adapter dropped from the pool is not closed: another thread may still be in its request, and its
    client holds no connection of its own (they are the process's shared ones,
    :class:`worker.adapters.client.SharedTransport`)."""

    def __init__(self, settings: Settings, store: Store,
                 factory: Callable[[Destination, AdapterContext], Adapter] = build_adapter) -> None:
        self.settings = settings
        self.store = store
        self.factory = factory
        self.size = settings.destination_cache
        self._adapters: OrderedDict[str, tuple[Destination, Adapter]] = OrderedDict()
        self._retired: list[Adapter] = []
        self._lock = threading.Lock()

    def get(self, destination: Destination) -> Adapter:
        """The adapter of ``destination``; rebuilt (its HTTP client too) when the destination changed."""
        name = destination.name
        with self._lock:
            kept = self._adapters.get(name)
            if kept is not None:
                built, adapter = kept
                if built is destination or built == destination:
                    self._adapters.move_to_end(name)
                    return adapter
                # changed at run time (worker.registry): new settings, new client; the old one may still
                # serve a request in flight, so it is closed with the pool
                self._retired.append(adapter)
                del self._adapters[name]
        missing = destination.missing_secrets()
        if missing:
            raise errors.ConfigurationError(
                f"destination {name!r}: environment variable not set for {', '.join(missing)}"
            )
        stats = self.store.stats

        def observe(method: str, route: str, status: int | None, seconds: float) -> None:
            stats.request(name, destination.vendor, route, status, seconds)

        timeout = shutdown.request_timeout(destination.timeout, self.settings.shutdown_grace)
        adapter = self.factory(destination, AdapterContext(http=make_client(destination, timeout=timeout),
                                                           cache=self.store.cache, observe=observe))
        with self._lock:
            kept = self._adapters.get(name)
            if kept is not None and (kept[0] is destination or kept[0] == destination):
                adapter = kept[1]  # another thread built it meanwhile: one adapter per destination
            self._adapters[name] = (destination, adapter)
            self._adapters.move_to_end(name)
            while len(self._adapters) > self.size:
                self._adapters.popitem(last=False)
        return adapter

    def close(self) -> None:
        with self._lock:
            for adapter in [*(a for _, a in self._adapters.values()), *self._retired]:
                adapter.close()
            self._adapters.clear()
            self._retired.clear()


class Deliverer:
    def __init__(self, settings: Settings, store: Store, adapters: AdapterPool, *, worker: str = "",
                 rand: Callable[[], float] = random.random, share: FairShare | None = None) -> None:
        self.settings = settings
        self.store = store
        self.adapters = adapters
        self.worker = worker
        self.rand = rand
        self.flow = FlowControl(store, rand=rand)
        self.share = share or FairShare(settings.worker_concurrency)
        self._config: tuple[Mapping[str, Destination], dict[str, str]] | None = None
        #: lease owners: this deliverer's random prefix and a run counter (``next`` on a count is atomic)
        self._owner = f"{worker}:{new_token()}:"
        self._runs = itertools.count(1)

    def _destinations(self) -> tuple[Mapping[str, Destination], dict[str, str]]:
        """The destinations and their vendors (:meth:`Settings.destinations`: the file, or the run-time
        registry's current map, which changes without a restart; the vendors are rebuilt when it did)."""
        dests = self.settings.destinations()
        config = self._config
        if config is None or config[0] is not dests:
            config = self._config = dests, vendors_of(dests)
        return config

    @property
    def lease_seconds(self) -> float:
        """The learner+item lease: longer than an attempt may run, shorter than the visibility timeout."""
        return float(self.settings.visibility_timeout - 10)

    def run(self, event_id: str, token: str) -> str:
        """Process one delivery message; returns what happened (for the task result and tests)."""
        ledger = self.store.ledger
        record = ledger.load(event_id)
        if record is None:
            log.error("event_missing", event_id=event_id, reason="no ledger record (expired or purged)")
            return "missing"
        if record.token != token or record.state not in RUNNABLE:
            log.info("duplicate_message_skipped", event_id=event_id, state=record.state)
            return "skipped"
        structlog.contextvars.bind_contextvars(
            event_id=event_id, destination=record.destination, vendor=record.vendor, attempt=record.attempts + 1
        )
        if record.wire_error is not None:  # encrypted with a key we no longer have
            reason = f"cannot decrypt the stored event: {record.wire_error}"
            return self._dead_letter(record, None, reason, {"error_class": "ConfigurationError", "message": reason})
        bind_secrets(wire_secrets(record.wire))  # masked in every record and log line (until logs.clear())
        destinations, vendors = self._destinations()
        if record.destination not in destinations and refresh_live_destinations(self.settings):
            # registered moments ago: the shared queue brought its message before this process's next look
            # at the registry (every 2 s); an unknown destination after that look is a removed one
            destinations, vendors = self._destinations()
        destination = destinations.get(record.destination)
        if destination is None:  # removed, or no longer valid here: the event's validation says why
            return self._no_destination(record, vendors)
        # the share is decided before the event is decrypted and validated: a destination over its share
        # (a slow vendor's backlog in the shared queue) costs each of its messages as little as possible
        with self.share.slot(destination.name, self.flow.concurrency(destination)) as admitted:
            if not admitted:
                return self._defer(record, self.share.delay(destination.name, self.rand), "over_share_deferred")
            try:
                event = GradeEvent.from_wire(record.wire, vendors=vendors)
            except ValidationError as exc:
                reason = f"event no longer valid for its destination: {exc.errors()[0]['msg']}"
                return self._dead_letter(record, None, reason, {"error_class": "ConfigurationError",
                                                                "message": reason})
            # its credentials masked in every record and log line of this run (not registered for the whole
            # process: with 10 000 destinations of their own keys every string logged searched them all)
            bind_secrets(destination_secrets([destination]))
            owner = f"{self._owner}{next(self._runs)}"  # unique per run (no urandom call per event)
            item_key = event.item_key()
            keys = self.store.keys
            lease = _Lease(owner, keys.lock(record.destination, event.learner_id, item_key),
                           keys.hwm(record.destination, event.learner_id, item_key))
            occurred_ms = int(event.occurred_at.timestamp() * 1000)
            claim = ledger.claim(
                record, token, lock=lease.lock, hwm=lease.hwm, owner=owner, lease=self.lease_seconds,
                occurred_ms=occurred_ms,
                fast=destination.rate_limit_per_minute is None and not shutdown.gate.closed)
            if claim.code == "skipped":  # another message of this event ran meanwhile (or will)
                return "skipped"
            if claim.code == "busy":
                return self._defer(record, LEASE_BUSY_DELAY, "lease_busy_deferred")
            outcome = ""
            try:
                outcome = self._run_claimed(record, event, destination, token, claim, lease, occurred_ms)
                return outcome
            finally:
                if outcome != "succeeded":  # a success released the lease in its own script
                    ledger.release(record.destination, event.learner_id, item_key, owner)

    def _no_destination(self, record: EventRecord, vendors: Mapping[str, str]) -> str:
        """Dead-letter an event whose destination is not (or no longer validly) registered here."""
        try:
            GradeEvent.from_wire(record.wire, vendors=vendors)
        except ValidationError as exc:
            reason = f"event no longer valid for its destination: {exc.errors()[0]['msg']}"
        else:  # its entry stopped validating in this process since the map was read
            reason = f"destination {record.destination!r} is no longer registered or no longer valid here"
        return self._dead_letter(record, None, reason, {"error_class": "ConfigurationError", "message": reason})

    def _defer(self, record: EventRecord, delay: float, why: str) -> str:
        """Look at this message again in ``delay`` seconds (durably); no attempt was made."""
        self.store.ledger.defer(record, time.time() + delay)
        log.info(why, delay=delay)
        return "deferred"

    def _run_claimed(self, record: EventRecord, event: GradeEvent, destination: Destination, token: str,
                     claim: Claim, lease: _Lease, occurred_ms: int) -> str:
        """The lease is held and the token was still the record's (``record`` as loaded is current: every
        change of the fields read below also changes the token)."""
        ledger = self.store.ledger
        event_id = record.event_id
        if claim.code == "stale":
            reason = f"a newer event ({claim.newest}) was already applied for this learner and item"
            ledger.supersede(record, reason, None)
            self.store.stats.processed(event.destination, event.vendor, "superseded")
            log.info("superseded", reason=reason)
            return "superseded"
        if claim.code == "started":  # the flow state was clean: admitted, counted and started in the claim
            verdict, attempt = Verdict(go=True, clean=claim.clean), claim.attempt
        else:
            if shutdown.gate.closed:
                return self.hand_back(event_id, event.destination, token, started=False)
            verdict = self.flow.before(record, destination)
            if not verdict.go:
                if verdict.result == "expired":
                    return self._dead_letter(record, None, verdict.reason,
                                             {"error_class": "MaxEventAgeExceeded", "message": verdict.reason})
                return verdict.result
            attempt = ledger.start(record, token)
            if attempt < 0:
                return "skipped"
        structlog.contextvars.bind_contextvars(attempt=attempt)
        started = time.time()
        entry: dict[str, Any] = {"n": attempt, "started_at": round(started, 3), "worker": self.worker}
        try:
            adapter = self.adapters.get(destination)
            result = adapter.deliver(event)
        except shutdown.ShuttingDown:  # the adapter had not sent its next request: nothing was written
            return self.hand_back(event_id, event.destination, token, started=True)
        except errors.DeliveryError as exc:
            scrub_error(exc)  # the one masking step before a failure becomes records and log lines
            return self._after_failure(record, event, destination, attempt, exc, entry, started, verdict.probe)
        except errors.ConfigurationError as exc:
            scrub_error(exc)
            entry.update(self._timing(started), outcome="dead_letter", error_class="ConfigurationError",
                         message=exc.message)
            return self._dead_letter(record, entry, f"configuration: {exc.message}",
                                     {"error_class": "ConfigurationError", "message": exc.message})
        except Exception as exc:  # a bug or an unforeseen failure: retry it like a transient one
            log.exception("adapter_crashed")
            wrapped = errors.RetryableError(f"internal error: {type(exc).__name__}")
            return self._after_failure(record, event, destination, attempt, wrapped, entry, started, None)
        finally:
            self.flow.pace(destination, take_budget())  # the vendor's budget headers, before any refusal
        self.flow.succeeded(destination, verdict)
        return self._succeeded(record, attempt, result, entry, started, lease, occurred_ms)

    def hand_back(self, event_id: str, destination: str, token: str, *, started: bool) -> str:
        """Shutting down: give the event back (due now, fresh token); an attempt that sent nothing is
        un-counted."""
        if self.store.ledger.hand_back(event_id, destination, token, new_token(), started=started):
            log.warning("handed_back", reason="worker shutting down", attempt_started=started)
            return "handed_back"
        return "skipped"

    @staticmethod
    def _timing(started: float) -> dict[str, Any]:
        now = time.time()
        return {"finished_at": round(now, 3), "duration_ms": round((now - started) * 1000, 1)}

    def _succeeded(self, record: EventRecord, attempt: int, result: DeliveryResult, entry: dict[str, Any],
                   started: float, lease: _Lease, occurred_ms: int) -> str:
        """Record the success, count it and release the lease: one script (:meth:`Ledger.succeed
        <worker.store.ledger.Ledger.succeed>`)."""
        entry.update(self._timing(started), outcome="succeeded", status=result.status, action=result.action,
                     detail=redact_text(result.detail) if result.detail else result.detail)
        self.store.ledger.succeed(record, entry, lock=lease.lock, hwm=lease.hwm, owner=lease.owner,
                              occurred_ms=occurred_ms,
                              result={"status": result.status, "action": result.action, "detail": entry["detail"]})
        log.info("delivered", status=result.status, action=result.action, duration_ms=entry["duration_ms"])
        return "succeeded"

    def _after_failure(self, record: EventRecord, event: GradeEvent, destination: Destination, attempt: int,
                       exc: errors.DeliveryError, entry: dict[str, Any], started: float, probe: bool | None) -> str:
        """``probe``: whether this attempt was the breaker's probe; None: not the vendor's doing (a bug)."""
        error = exc.as_record()
        entry.update(self._timing(started), status=exc.status, error_class=error["error_class"],
                     message=exc.message, vendor_message=exc.vendor_message, excerpt=exc.excerpt)
        if probe is not None:  # a 429, or a failure of an unhealthy destination, spends no attempt
            settled = self.flow.settle_failure(record, destination, exc, probe=probe, entry=entry, error=error)
            if settled:
                return settled
        policy = RetryPolicy(destination.max_attempts, destination.retry_base_delay, destination.retry_max_delay)
        counted = attempt - int(record.fields.get("uncounted") or 0)
        decision = decide(exc, counted, policy, self.rand)
        entry["outcome"] = decision.action.value
        if decision.action is Action.SUPERSEDED:
            self.store.ledger.supersede(record, decision.reason, entry)
            self.store.stats.processed(event.destination, event.vendor, "superseded")
            log.info("superseded", reason=decision.reason)
            return "superseded"
        if decision.action is Action.RETRY:
            due = time.time() + decision.delay
            entry["retry_in"] = decision.delay
            self.store.ledger.schedule_retry(record, entry, token=new_token(), due=due, error=error)
            self.store.stats.processed(event.destination, event.vendor, "retried")
            log.warning("retry_scheduled", delay=decision.delay, status=exc.status, error_class=error["error_class"],
                        reason=decision.reason)
            return "retrying"
        return self._dead_letter(record, entry, decision.reason, error)

    def _dead_letter(self, record: EventRecord, entry: dict[str, Any] | None, reason: str,
                     error: dict[str, Any]) -> str:
        self.store.ledger.dead_letter(record, entry, reason=reason, error=error)
        self.store.stats.processed(record.destination, record.vendor, "dead_lettered")
        attempts = entry["n"] if entry else record.attempts
        log.error("dead_lettered", reason=reason, attempts=attempts, error_class=error.get("error_class"),
                  status=error.get("status"))
        hooks.fire_dead_letter(hooks.DeadLetterNotice(
            event_id=record.event_id, destination=record.destination, vendor=record.vendor, reason=reason,
            attempts=attempts, error=error,
        ))
        return "dead_lettered"
