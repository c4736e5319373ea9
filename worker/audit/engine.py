"""The audit engine: for every cell (destination, learner, item) whose latest delivered event succeeded
within the window, read the vendor's current grade and record a verdict (:mod:`worker.audit.compare`).

Cells come from the stale guard's high-water marks (``hwm:{dest}:{digest}``, one per delivered cell,
holding the newest applied event), the index the ledger already keeps: enumerating them is a ``SCAN``
plus two pipelined reads per batch, not a read of every event. A cell is read again at its turn through
its hwm key, so a cell delivered again since the enumeration is judged against its newest event.

:meth:`AuditRunner.run` runs one job: it takes the job's lease (renewed while it runs), enumerates the
cells of each destination not yet enumerated, then reads each destination's cells on a thread of its
own, paced by :class:`worker.audit.pace.AuditPace`, from the destination's cursor on. A job whose
process died is resumed from its cursors by any runner (:meth:`AuditRunner.resume_unfinished`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.audit.compare import Delivered, Outcome, Verdict, compare
from worker.audit.jobs import AuditJobs, AuditRequest, JobView
from worker.audit.pace import AuditPace
from worker.audit.resync import Publishes, log_action, resync
from worker.events import GradeEvent
from worker.known_secrets import destination_secrets, wire_secrets
from worker.readback import Reader, Unreadable, build_reader
from worker.readback.base import Found
from worker.redact import bind_secrets, redact, redact_text
from worker.settings import Destination, Settings
from worker.store import Store
from worker.store.ledger import EventState

log = structlog.get_logger("gradesync.audit")
#: seconds between looks for audits whose process died (their lease lapsed)
RESUME_EVERY = 30.0

SCAN_COUNT = 1000
BATCH = 100
#: reads of one cell answered 429 before it is recorded as an error
MAX_THROTTLED = 3
RENEW_EVERY = 5.0

ReaderFactory = Callable[[Destination, AdapterContext], Reader]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AuditRunner:
    def __init__(self, settings: Settings, store: Store, *, reader_factory: ReaderFactory = build_reader,
                 publisher: Publishes | None = None) -> None:
        self.settings = settings
        self.store = store
        #: republishes the job's ``resync`` cells when it ends (None: resync is not done here)
        self.publisher = publisher
        self.jobs = AuditJobs(store.redis, store.keys)
        self.reader_factory = reader_factory
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    # -- starting ------------------------------------------------------------------------------------
    def create(self, destinations: list[str] | None, since: float, *, actor: str,
               resync: tuple[str, ...] = ()) -> str:
        known = self.settings.destinations()
        names = destinations or sorted(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise errors.ConfigurationError(f"unknown destination(s): {', '.join(unknown)} "
                                            f"(configured: {', '.join(sorted(known))})")
        names = list(dict.fromkeys(names))
        job_id = self.jobs.create(AuditRequest(names, since, actor, resync))
        log_action(self.store, "audit", actor=actor, filters={"audit": job_id, "destinations": names,
                                                             "since": since, "resync": list(resync)})
        return job_id

    def start(self, job_id: str) -> threading.Thread:
        """Run the job on a background thread."""
        thread = threading.Thread(target=self.run, args=(job_id,), name=f"audit-{job_id}", daemon=True)
        thread.start()
        return thread

    def resume_unfinished(self) -> list[str]:
        """Start every unfinished job whose runner is gone (after a restart); their ids."""
        started = []
        for job_id in self.jobs.unfinished():
            self.start(job_id)
            started.append(job_id)
        return started

    def resume_forever(self, stop: threading.Event, every: float = RESUME_EVERY) -> None:
        """Every ``every`` seconds until ``stop``: carry on the audits whose process died (a CLI stopped, a
        worker or server restarted) from their checkpoint. Every worker process and ``gradesync serve``
        runs this; a job's lease lets one of them take it."""
        while True:
            try:
                self.resume_unfinished()
            except Exception as exc:  # Redis away: the next look retries
                log.warning("audit_resume_failed", error=type(exc).__name__)
            if stop.wait(every):
                return

    # -- running -------------------------------------------------------------------------------------
    def run(self, job_id: str, stop: threading.Event | None = None) -> JobView | None:
        """Run (or resume) the job to its end; None when another process runs it."""
        stop = stop or threading.Event()
        if not self.jobs.claim(job_id, self.owner):
            return None
        done = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(job_id, done, stop), daemon=True)
        renewer.start()
        try:
            view = self.jobs.get(job_id)
            if view is None or view.state not in ("pending", "running", "failed"):  # failed: --resume
                return view
            self.jobs.set_fields(job_id, state="running")
            log.info("audit_started", job=job_id, destinations=view.destinations, resumed=view.done > 0)
            destinations = self.settings.destinations()
            for name in view.destinations:
                if name not in view.enumerated:
                    self._enumerate(job_id, name, view.since)
            failures: list[str] = []
            threads = [threading.Thread(target=self._read_destination, args=(job_id, destinations[n], stop, failures),
                                        name=f"audit-{job_id}-{n}", daemon=True)
                       for n in view.destinations if n in destinations]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if stop.is_set():
                return self.jobs.get(job_id)
            if failures:
                self.jobs.finish(job_id, "failed", redact_text("; ".join(failures)))
                return self.jobs.get(job_id)
            if view.resync and self.publisher is not None:
                report = resync(self.settings, self.store, self.publisher, job_id, tuple(view.resync),
                                actor=view.actor)
                self.jobs.set_fields(job_id, resync_report=json.dumps(report.as_json()))
            self.jobs.finish(job_id, "done")
        except Exception as exc:
            log.exception("audit_failed", job=job_id)
            self.jobs.finish(job_id, "failed", redact_text(f"{type(exc).__name__}: {exc}"))
        finally:
            done.set()
            self.jobs.release(job_id, self.owner)
        final = self.jobs.get(job_id)
        if final is not None:
            log.info("audit_finished", job=job_id, state=final.state, **final.summary)
        return final

    def _renew(self, job_id: str, done: threading.Event, stop: threading.Event) -> None:
        while not done.wait(RENEW_EVERY):
            if not self.jobs.renew(job_id, self.owner):
                log.warning("audit_lease_lost", job=job_id)
                stop.set()
                return

    def _enumerate(self, job_id: str, destination: str, since: float) -> None:
        """The destination's cells whose newest applied event succeeded at or after ``since``."""
        self.jobs.reset_cells(job_id, destination)
        r, keys = self.store.redis, self.store.keys
        batch: list[str] = []
        for key in r.scan_iter(match=keys.hwm_pattern(destination), count=SCAN_COUNT):
            batch.append(_s(key))
            if len(batch) >= SCAN_COUNT:
                self.jobs.add_cells(job_id, destination, self._recent(batch, since))
                batch = []
        self.jobs.add_cells(job_id, destination, self._recent(batch, since))
        total = self.jobs.enumerated(job_id, destination)
        log.info("audit_cells", job=job_id, destination=destination, cells=total)

    def _recent(self, hwm_keys: list[str], since: float) -> list[str]:
        if not hwm_keys:
            return []
        r, keys = self.store.redis, self.store.keys
        marks = r.mget(hwm_keys)
        pairs = [(k, _s(m).partition("|")[2]) for k, m in zip(hwm_keys, marks, strict=True) if m is not None]
        with r.pipeline(transaction=False) as pipe:
            for _, eid in pairs:
                pipe.hmget(keys.event(eid), "state", "finished_at")
            found = pipe.execute()
        return [k for (k, _), (state, finished) in zip(pairs, found, strict=True)
                if state is not None and _s(state) == EventState.SUCCEEDED and float(_s(finished or 0)) >= since]

    def _read_destination(self, job_id: str, destination: Destination, stop: threading.Event,
                          failures: list[str]) -> None:
        name = destination.name
        def holding(reason: str) -> None:
            self.jobs.set_fields(job_id, **{f"holding:{name}": reason})

        bind_secrets(destination_secrets([destination]))  # its credentials masked in this thread's results
        pace = AuditPace(self.store, destination, share=self.settings.audit_rate_share,
                         unlimited_rate=self.settings.audit_unlimited_rate, stop=stop, on_hold=holding)
        try:
            reader = self.reader_factory(destination, AdapterContext(http=make_client(destination),
                                                                     cache=self.store.cache))
        except errors.GradeSyncError as exc:
            failures.append(f"{name}: {exc.message}")
            return
        try:
            cursor = int(self.jobs.field(job_id, f"done:{name}") or 0)
            while not stop.is_set():
                cells = self.jobs.cells(job_id, name, cursor, BATCH)
                if not cells:
                    return
                for hwm_key in cells:
                    result = self._audit_cell(reader, pace, destination, hwm_key, job_id)
                    if result is None:  # stopped while waiting for its turn
                        return
                    cursor += 1
                    self.jobs.record(job_id, name, cursor, result)
        except Exception as exc:  # Redis gone, a bug: the job fails (and can be resumed), never hangs
            log.exception("audit_destination_failed", job=job_id, destination=name)
            failures.append(f"{name}: {type(exc).__name__}")
        finally:
            reader.close()

    def _audit_cell(self, reader: Reader, pace: AuditPace, destination: Destination, hwm_key: str,
                    job_id: str) -> dict[str, Any] | None:
        mark = self.store.redis.get(hwm_key)
        record = self.store.ledger.load(_s(mark).partition("|")[2]) if mark is not None else None
        if record is None or not record.wire:
            why = record.wire_error if record is not None and record.wire_error else "the event expired from the ledger"
            return {"destination": destination.name, "learner_id": None, "target": None,
                    "event_id": record.event_id if record else None, "delivered": None, "found": None,
                    "verdict": Verdict.ERROR.value, "reason": why}
        event = GradeEvent.from_wire(record.wire, vendors=self.settings.vendors())
        found, outcome = self._read(reader, pace, destination, event, job_id)
        if outcome is None:
            return None
        result = {"destination": destination.name, "learner_id": event.learner_id,
                  "target": event.redacted()["target"], "event_id": str(event.event_id),
                  "delivered": Delivered.of(event).as_json(), "found": found.as_json() if found else None,
                  "verdict": outcome.verdict.value, "reason": outcome.reason}
        masked: dict[str, Any] = redact(result, extra_secrets=tuple(wire_secrets(record.wire)))
        return masked  # a vendor echoing the event's own credential never reaches the results

    def _read(self, reader: Reader, pace: AuditPace, destination: Destination, event: GradeEvent,
              job_id: str) -> tuple[Found | None, Outcome | None]:
        if not getattr(reader, "documented_read", True):
            return None, Outcome(Verdict.UNREADABLE, "the vendor documents no read of this grade")
        for _ in range(MAX_THROTTLED):
            if not pace.turn():
                return None, None
            try:
                found = reader.read_grade(event)
            except Unreadable as exc:
                return None, Outcome(Verdict.UNREADABLE, exc.message)
            except errors.RateLimited as exc:
                pace.throttled(exc.retry_after, exc.describe())
                continue
            except errors.DeliveryError as exc:
                return None, Outcome(Verdict.ERROR, redact_text(exc.describe()))
            except errors.ConfigurationError as exc:
                return None, Outcome(Verdict.ERROR, redact_text(exc.message))
            return found, compare(Delivered.of(event), found)
        return None, Outcome(Verdict.ERROR, f"the vendor answered 429 to {MAX_THROTTLED} reads")


def wait_finished(jobs: AuditJobs, job_id: str, timeout: float, poll: float = 0.2) -> JobView | None:
    """Poll until the job is done or failed (tests, the CLI); the view at the end."""
    deadline = time.monotonic() + timeout
    view = jobs.get(job_id)
    while time.monotonic() < deadline and (view is None or view.state in ("pending", "running")):
        time.sleep(poll)
        view = jobs.get(job_id)
    return view
