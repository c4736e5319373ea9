"""The one place that builds a worker: its store, adapters and deliverer (:func:`build`), and the
background threads every worker runs beside its deliveries (:meth:`Runtime.start`: the retry pump with
the flow pump, the stranded-event sweeper).

Two callers, built the same way: the Celery task module (:mod:`worker.tasks`, one runtime per worker
process, on the Celery dispatcher) and the in-process test worker (:class:`worker.testing.LocalWorker`,
on the in-memory dispatcher). Why one place: the test worker used to assemble its own copy and had
drifted (it skipped the encryption-key check), so a test could pass on a worker production never runs.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from worker.crypto import WireCipher
from worker.delivery import AdapterPool, Deliverer
from worker.dispatch import Dispatcher
from worker.flow.share import FairShare
from worker.known_secrets import register_destinations
from worker.pump import RetryPump, build_pump
from worker.registry.live import LiveDestinations
from worker.registry.store import Registry
from worker.settings import Settings
from worker.store import Store
from worker.store.durability import worker_client
from worker.sweeper import Sweeper


@dataclass
class Runtime:
    """A worker's parts. ``pump`` and ``sweeper`` exist once :meth:`start` ran."""

    settings: Settings
    store: Store
    adapters: AdapterPool
    deliverer: Deliverer
    live: LiveDestinations | None = None
    pump: RetryPump | None = field(default=None, init=False)
    sweeper: Sweeper | None = field(default=None, init=False)
    audits_stop: threading.Event = field(default_factory=threading.Event, init=False)

    def start_pump(self, dispatcher: Dispatcher) -> RetryPump:
        """Start the retry pump (with the flow pump), which queues due retries through ``dispatcher``."""
        self.pump = build_pump(self.store, dispatcher, self.settings)
        self.pump.start()
        return self.pump

    def start_sweeper(self, dispatcher: Dispatcher, owner: str | None = None) -> Sweeper:
        """Start the stranded-event sweeper (``owner``: its leader-lease name)."""
        self.sweeper = Sweeper(self.store, dispatcher, self.settings, owner=owner)
        self.sweeper.start()
        return self.sweeper

    def start_audits(self, dispatcher: Dispatcher) -> None:
        """Carry on audits whose process died (:meth:`worker.audit.engine.AuditRunner.resume_forever`): an
        audit started by a CLI that was stopped, or run by a worker that restarted, goes on from its
        checkpoint in whichever worker (or ``gradesync serve``) takes its lease first."""
        from worker.audit.engine import AuditRunner  # only the Celery worker runs it: the test worker need not
        from worker.publish import Publisher

        runner = AuditRunner(self.settings, self.store, publisher=Publisher(self.settings, dispatcher=dispatcher))
        threading.Thread(target=runner.resume_forever, args=(self.audits_stop,), name="audit-resume",
                         daemon=True).start()

    def start(self, dispatcher: Dispatcher, owner: str | None = None) -> None:
        """Start both background threads."""
        self.start_pump(dispatcher)
        self.start_sweeper(dispatcher, owner)

    def stop(self) -> None:
        """Stop the background threads (deliveries in flight are the caller's to finish)."""
        if self.pump is not None:
            self.pump.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        self.audits_stop.set()

    def close(self) -> None:
        """Stop, then close the adapters' HTTP clients and the Redis connections."""
        self.stop()
        if self.live is not None:
            self.live.close()
        self.adapters.close()
        self.store.redis.close()


def build(settings: Settings, *, slots: int | None = None, served: Sequence[str] = (),
          worker: str | None = None, client: redis.Redis | None = None) -> Runtime:
    """A worker's store, adapters and deliverer.

    ``slots``: the delivery threads (default ``worker_concurrency``), for the fair share; ``served``: the
    queues it consumes (informational: the share is work-conserving and needs no count); ``worker``: the
    name in attempt records (default the host name); ``client``: the Redis client (default
    :func:`worker_client`, which rides out a Redis restart)."""
    WireCipher.from_settings(settings)  # no key, no delivery: refuse rather than dead-letter everything
    store = Store.connect(settings, client or worker_client(settings))
    # the destinations file applied to the run-time registry, which is then polled (< 10 s to see a change)
    live = LiveDestinations(settings, Registry(store.redis, store.keys)).install()
    register_destinations(settings)  # their credentials are masked in every record and log line
    adapters = AdapterPool(settings, store)
    share = FairShare(slots or settings.worker_concurrency)  # work-conserving: no per-destination count
    deliverer = Deliverer(settings, store, adapters, worker=worker or socket.gethostname(), share=share)
    return Runtime(settings, store, adapters, deliverer, live)
