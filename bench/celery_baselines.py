"""The plain-Celery workers that ``bench_delivery.py`` measures gradesync against (not part of gradesync).

Each is a Celery app on the same private Redis, consuming ``grades.bench`` with late acknowledgement
and prefetch 1, as gradesync does:

* ``noop``      a task that does nothing (the floor: what Celery itself costs per message);
* ``thin``      the same LTIAAS score POST as gradesync, over one shared ``httpx.Client`` (threads pool);
* ``textbook``  the same POST with ``httpx.post`` per task (the usual tutorial worker, prefork pool).

Configured by ``BENCH_BROKER``, ``BENCH_VENDOR`` (the sandbox URL), ``BENCH_API_KEY``, ``BENCH_SERVICE_KEY``
and ``BENCH_DONE_DIR`` (where the no-op worker writes its completion times).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from celery import Celery, signals

BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0")
VENDOR = os.environ.get("BENCH_VENDOR", "http://127.0.0.1:8802")
AUTH = f"SERVICE-AUTH-V1 {os.environ.get('BENCH_API_KEY', '')}:{os.environ.get('BENCH_SERVICE_KEY', '')}"
DONE_DIR = Path(os.environ.get("BENCH_DONE_DIR", "."))


def _app(name: str) -> Celery:
    app = Celery(name, broker=BROKER, set_as_current=False)
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                    task_serializer="json", accept_content=["json"], worker_hijack_root_logger=False,
                    broker_connection_retry_on_startup=True)
    return app


def _path(line_item: str) -> str:
    return f"/api/lineitems/{quote(line_item, safe='')}/scores"


def _headers() -> dict[str, str]:
    return {"Authorization": AUTH, "Content-Type": "application/json", "Accept": "application/json"}


noop = _app("noop")
_done: list[float] = []
_done_lock = threading.Lock()


@noop.task(name="bench.deliver", shared=False)
def noop_deliver(line_item: str, body: dict[str, Any]) -> None:
    with _done_lock:
        _done.append(time.time())


def _dump_done(**_: Any) -> None:
    with _done_lock:
        if _done:
            (DONE_DIR / f"done-{os.getpid()}.txt").write_text("\n".join(f"{t:.6f}" for t in _done))
            _done.clear()


atexit.register(_dump_done)
signals.worker_process_shutdown.connect(_dump_done, weak=False)
signals.worker_shutdown.connect(_dump_done, weak=False)

thin = _app("thin")
_client = httpx.Client(base_url=VENDOR, timeout=10.0)


@thin.task(name="bench.deliver", shared=False)
def thin_deliver(line_item: str, body: dict[str, Any]) -> None:
    response = _client.post(_path(line_item), json=body, headers=_headers())
    response.raise_for_status()


textbook = _app("textbook")


@textbook.task(name="bench.deliver", shared=False)
def textbook_deliver(line_item: str, body: dict[str, Any]) -> None:
    response = httpx.post(VENDOR + _path(line_item), json=body, headers=_headers(), timeout=10.0)
    response.raise_for_status()
