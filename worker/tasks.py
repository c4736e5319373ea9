"""The one Celery task, ``gradesync.deliver``, and the Celery signals that start and stop the worker
process's runtime (built by :mod:`worker.runtime`, as the in-process test worker's is)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

import structlog
from celery import signals

from worker import logs, shutdown
from worker.celery_app import app
from worker.dispatch.celery import CeleryDispatcher
from worker.heartbeat import Heartbeat
from worker.keys import DELIVER_TASK, Keys
from worker.kombu_redis import batch_kombu_acks, batch_kombu_take, harden_kombu_redis, reuse_kombu_clients
from worker.registry.lazy import group_of
from worker.registry.live import FOLLOW_REGISTRY
from worker.runtime import Runtime, build
from worker.settings import get_settings
from worker.store.durability import redis_risks

log = structlog.get_logger("gradesync.worker")
harden_kombu_redis()  # a Redis crash must not stop the worker (see worker.kombu_redis)
reuse_kombu_clients()  # no redis.Redis built per message taken and acknowledged
batch_kombu_acks()  # the event loop acknowledges once per pass, not once per message
batch_kombu_take()  # and takes what the prefetch window allows with them, in one script per pass


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()
_heartbeat: Heartbeat | None = None
#: this worker process's threads (the pool size given to `gradesync worker -c`) and the queues it
#: consumes, for the fair share
_slots: int | None = None
_served: list[str] = []


def runtime() -> Runtime:
    """This process's store, adapters and deliverer (built once by :func:`worker.runtime.build`, shared
    by the pool's threads)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = build(get_settings(), slots=_slots, served=_served)
        return _runtime


@app.task(name=DELIVER_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver(event_id: str, token: str, destination: str) -> str:
    """Deliver one grade event (the event itself is read from the ledger, not the message)."""
    logs.bind(event_id=event_id, destination=destination)
    try:
        return runtime().deliverer.run(event_id, token)
    finally:
        logs.clear()


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    logs.configure(settings.log_format, settings.log_level)


@signals.worker_init.connect
def _pool_size(sender: Any = None, **_: Any) -> None:
    global _slots
    global _served
    concurrency = getattr(sender, "concurrency", None)
    _slots = concurrency if isinstance(concurrency, int) and concurrency > 0 else None
    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    try:
        _served = sorted(q.name for q in queues.consume_from.values()) if queues is not None else []
    except AttributeError:
        _served = []


def _follow_registry(consumer: Any, current: Mapping[str, Any], changed: set[str]) -> None:
    """Serve a destination registered while this worker (one serving every destination) runs: the shared
    queue is consumed already; a new dedicated group's queue is added (Celery's ``add_task_queue`` does
    nothing for a queue it consumes). A removed destination needs nothing here: its events no longer
    validate, and its queue may carry other destinations' (the calls run on the consumer's event loop,
    not on the registry's polling thread)."""
    for name in sorted(changed):
        if name in current:
            consumer.call_soon(consumer.add_task_queue, Keys.queue(group_of(current, name)))


@signals.worker_ready.connect
def _start_pump(sender: Any = None, **_: Any) -> None:
    rt = runtime()
    if rt.live is not None and os.environ.get(FOLLOW_REGISTRY) == "1" and hasattr(sender, "add_task_queue"):
        rt.live.add_listener(lambda current, changed: _follow_registry(sender, current, changed))
    dispatcher = CeleryDispatcher(get_settings(), app=app, client=rt.store.redis)  # the worker's own connections
    pump = rt.start_pump(dispatcher)
    heartbeat_file = get_settings().heartbeat_file
    if heartbeat_file is not None:  # the liveness probe's file (worker.heartbeat)
        global _heartbeat
        _heartbeat = Heartbeat(heartbeat_file, healthy=pump.alive)
        _heartbeat.start()
    rt.start_sweeper(dispatcher, owner=f"{socket.gethostname()}:{os.getpid()}")
    rt.start_audits(dispatcher)
    log.info("worker_ready", queues=sorted(q.name for q in app.conf.task_queues))
    try:
        for risk in redis_risks(rt.store.redis):
            log.warning("redis_config_risk", problem=risk)
    except Exception as exc:  # a check, never a reason not to work
        log.warning("redis_config_unknown", error=type(exc).__name__)


@signals.worker_shutting_down.connect
def _stop_pump(**_: Any) -> None:
    shutdown.begin(get_settings().shutdown_grace)  # first: no new vendor call from here on
    if _heartbeat is not None:
        _heartbeat.stop()
    if _runtime is not None:
        _runtime.stop()
