"""The worker's liveness signal: a heartbeat file, and the probes that read it (Kubernetes, Docker).

A worker process touches ``GRADESYNC_HEARTBEAT_FILE`` (off when unset; the image sets
``/tmp/gradesync/heartbeat``) every :data:`INTERVAL` seconds from a thread of its own, but only while its
retry pump thread is alive. The liveness probe (``python -m worker.heartbeat worker``) fails when the
file is older than :data:`MAX_AGE` — the process is wedged or its pump died — and Kubernetes restarts it.

Why a file and not ``celery inspect ping``: a ping goes through the broker, so during a Redis (or
RabbitMQ) outage every worker would fail its liveness probe and be restarted, which cannot fix the
outage and throws away the work in flight. The heartbeat never talks to Redis: an outage leaves the
workers running, reconnecting on their own, and readiness is not needed for a worker (it takes no
traffic; KEDA scales it on the queue length).

``python -m worker.heartbeat http://127.0.0.1:8000/livez`` is the same kind of probe for the web app.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger("gradesync.heartbeat")

INTERVAL = 10.0
MAX_AGE = 60.0
DEFAULT_FILE = Path("/tmp/gradesync/heartbeat")  # noqa: S108 - the image's emptyDir, see the Dockerfile


class Heartbeat:
    """Touches ``path`` every ``interval`` seconds while ``healthy()`` says so."""

    def __init__(self, path: Path, healthy: Callable[[], bool], interval: float = INTERVAL) -> None:
        self.path = path
        self.healthy = healthy
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        if not self.healthy():
            log.warning("heartbeat_skipped", reason="retry pump thread is not running")
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except OSError as exc:
                log.warning("heartbeat_failed", path=str(self.path), error=type(exc).__name__)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="gradesync-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def file_is_fresh(path: Path, max_age: float = MAX_AGE, now: float | None = None) -> bool:
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return False
    return ((time.time() if now is None else now) - mtime) <= max_age


def http_ok(url: str, timeout: float = 3.0) -> bool:
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise ValueError("the probe only asks this container (http://127.0.0.1:…)")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - checked above
            return int(response.status) == 200
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """``worker [path]``: the heartbeat file is fresh; ``http://127.0.0.1:…``: the URL answers 200."""
    if not argv:
        print("usage: python -m worker.heartbeat worker [PATH] | http://127.0.0.1:PORT/livez", file=sys.stderr)
        return 2
    if argv[0] == "worker":
        path = Path(argv[1]) if len(argv) > 1 else DEFAULT_FILE
        ok = file_is_fresh(path)
        if not ok:
            print(f"heartbeat {path} missing or older than {MAX_AGE:.0f} s", file=sys.stderr)
        return 0 if ok else 1
    return 0 if http_ok(argv[0]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
