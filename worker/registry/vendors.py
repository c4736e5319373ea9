"""destination -> vendor and group for a process that holds no live view (``publish()`` in an application,
``gradesync publish``, the CLI's requeue): the run-time registry's, re-read only when its version moved,
else — nothing ever applied, or Redis not answering — the destinations file's. Inside a worker or
``gradesync serve`` the live view (:mod:`worker.registry.live`) answers instead.

The vendor validates an event (one version ``GET`` per published batch); the group routes its message to
the broker queue (:mod:`worker.routing`; the version is looked at no more than every
:data:`GROUP_CHECK_SECONDS`, not once per message). Before the group was read here, a producer routed by
the file alone: a destination registered at run time with a ``group`` went to the shared queue, and with
no destinations file at all every publish failed.
"""

from __future__ import annotations

import json
import threading
import time

import redis

from worker.registry.lazy import group_of
from worker.registry.store import Registry
from worker.settings import CommonSettings, has_live_destinations

#: how stale a producer's view of the destinations' groups may be (seconds)
GROUP_CHECK_SECONDS = 1.0


class VendorIndex:
    def __init__(self, settings: CommonSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._version = -1
        self._map: dict[str, str] = {}
        self._groups: dict[str, str] = {}  # only the destinations that have one
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, str]:
        if has_live_destinations(self.settings):
            return self.settings.vendors()
        try:
            if not self._refresh():
                return self.settings.vendors()
            return self._map
        except (redis.RedisError, OSError):
            return self.settings.vendors()

    def group(self, name: str) -> str | None:
        """The ``group`` of destination ``name`` (None: the shared queue; also for an unknown one)."""
        if has_live_destinations(self.settings):
            dests = self.settings.destinations()
            return group_of(dests, name) if name in dests else None
        try:
            if time.monotonic() - self._checked < GROUP_CHECK_SECONDS and self._version > 0:
                return self._groups.get(name)
            if self._refresh():
                return self._groups.get(name)
        except (redis.RedisError, OSError):
            pass
        dests = self.settings.destinations()
        return dests[name].group if name in dests else None

    def _refresh(self) -> bool:
        """Re-read the registry when its version moved; False when nothing was ever applied to it."""
        version = self.registry.version()
        self._checked = time.monotonic()
        if version == 0:
            return False
        with self._lock:
            if version != self._version:
                fresh: dict[str, str] = {}
                groups: dict[str, str] = {}
                for name, stored in self.registry.items():
                    try:
                        config = json.loads(stored)["config"]
                        fresh[name] = str(config["vendor"])
                    except (ValueError, KeyError, TypeError):
                        continue
                    if config.get("group"):
                        groups[name] = str(config["group"])
                self._map, self._groups, self._version = fresh, groups, version
        return True
