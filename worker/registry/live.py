"""The registry as a running process sees it: every worker and ``gradesync serve`` hold one
:class:`LiveDestinations`, which applies the destinations file at start-up, then polls the registry's
version every :data:`POLL_SECONDS` and rebuilds its map when it moved — so a new, changed or removed
destination is seen within ``POLL_SECONDS`` + one read (well under 10 s) without a restart.

Once installed (:meth:`LiveDestinations.install`), ``settings.destinations()`` of the settings object the
worker or the server was built with returns the current map, so every part built with them (the
deliverer, the flow pump, the ops pages, the server's ingest validation) sees the same; other producers
read the registry themselves (:mod:`worker.registry.vendors`). The map is a
:class:`worker.registry.lazy.DestinationMap`: per destination it keeps the stored entry, and builds the
model on use (memory that does not grow with thousands of destinations). Only the entries that changed
are validated; an unchanged one keeps its model while cached, a changed one is a new model (the adapter
pool rebuilds that destination's adapter), a removed one is gone (its events no longer validate: no
delivery). A destination's credentials are masked wherever it is used (bound to each delivery and
audit read, :func:`worker.redact.bind_secrets`), not registered for the whole process: with 10 000
destinations of their own keys that was 100 000 values searched in every string logged.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import redis
import structlog

from worker import memtrim
from worker.registry.lazy import read_map
from worker.registry.service import FILE_APPLIED, apply_file, registry_for
from worker.registry.store import Registry
from worker.settings import (
    CommonSettings,
    Destination,
    install_live_destinations,
    load_destinations,
    uninstall_live_destinations,
)

log = structlog.get_logger("gradesync.registry")

#: seconds between two looks at the registry's version
POLL_SECONDS = 2.0
#: set (to ``1``) by ``gradesync worker`` without ``--destinations``: its processes consume the queue of
#: every destination, including those registered while they run (:mod:`worker.tasks`)
FOLLOW_REGISTRY = "GRADESYNC_WORKER_FOLLOW_REGISTRY"

Listener = Callable[[Mapping[str, Destination], set[str]], None]


class LiveDestinations:
    """The current destinations of one registry in this process (callable: the current map)."""

    def __init__(self, settings: CommonSettings, registry: Registry | None = None, *,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self.settings = settings
        self.registry = registry or registry_for(settings)
        self.poll_seconds = poll_seconds
        self.version = -1
        self._map: Mapping[str, Destination] = {}
        self._invalid: dict[str, str] = {}  # name -> the entry that did not validate here (said once)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Listener] = []
        self._file_pending = False  # the file is still to be applied (Redis was down at start)
        # the first read of a process started by `gradesync worker` need not validate every entry: its parent
        # validated them all moments ago, with the same environment (10 000 of them: ~1 s a process)
        self._validate = os.environ.get(FILE_APPLIED) != "1"

    def __call__(self) -> Mapping[str, Destination]:
        return self._map

    def add_listener(self, listener: Listener) -> None:
        """``listener(current, changed_names)`` after each rebuild (changed: new, changed or removed)."""
        self._listeners.append(listener)

    def apply_file_at_start(self, path: Path | None = None) -> dict[str, str]:
        """Apply the destinations file (``GRADESYNC_DESTINATIONS``) when it exists: file-only deployments
        need no change. A missing file is fine when the registry has destinations."""
        path = path or self.settings.destinations_file
        if not path.exists():
            log.info("destinations_file_absent", path=str(path))
            return {}
        # the file's own rules first (no secret value in it: only *_env), as `gradesync config check`
        load_destinations(path, attempt_time_limit=self.settings.attempt_time_limit)
        return apply_file(self.settings, self.registry, path, actor="startup", audit=False)

    def refresh(self) -> bool:
        """Rebuild the map when the registry's version moved; True when it did.

        Only the entries that changed are validated (each model is dropped at once unless the new map's
        cache has room: memory stays that of the stored entries, :mod:`worker.registry.lazy`)."""
        with self._lock:
            version = self.registry.version()
            if version == self.version:
                return False
            for _ in range(5):  # a consistent read: again when the version moved during the scan
                invalid = dict(self._invalid)
                fresh, changed = read_map(self.settings, self.registry.items(), self._map, invalid,
                                          validate=self._validate)
                after = self.registry.version()
                if after == version:
                    break
                version = after
            self._map, self._invalid, self.version = fresh, invalid, version
            self._validate = True
        if changed:
            log.info("destinations_changed", version=version, count=len(self._map), changed=len(changed))
        for listener in self._listeners:
            try:
                listener(self._map, changed)
            except Exception:
                log.exception("destinations_listener_failed")
        return True

    def install(self) -> LiveDestinations:
        """Apply the file, read the registry, make it what ``settings.destinations()`` returns, and poll."""
        try:
            if os.environ.get(FILE_APPLIED) != "1":  # not done by the command that started this process
                self.apply_file_at_start()
            self.refresh()
        except (redis.RedisError, OSError) as exc:  # Redis down at start: the file until it answers
            log.warning("registry_unavailable_at_start", error=type(exc).__name__)
            path = self.settings.destinations_file
            self._map = load_destinations(path, attempt_time_limit=self.settings.attempt_time_limit) \
                if path.exists() else {}
            self._file_pending = True
        install_live_destinations(self.settings, self)
        memtrim.trim()  # the start-up's snapshot and validations are garbage now
        self._thread = threading.Thread(target=self._poll, name="gradesync-registry", daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                if self._file_pending:
                    self.apply_file_at_start()
                    self._file_pending = False
                moved = self.refresh()
            except (redis.RedisError, OSError) as exc:  # keep the last map; try again next time
                log.warning("registry_poll_failed", error=type(exc).__name__)
                continue
            # the old map and the snapshot are garbage now; otherwise what deliveries left (worker.memtrim)
            memtrim.trim(at_most_every=0.0 if moved else memtrim.TRIM_EVERY)

    def close(self) -> None:
        self._stop.set()
        uninstall_live_destinations(self.settings, self)
        if self._thread is not None:
            self._thread.join(timeout=5)
