"""destination -> vendor for a producer that holds no live view (``publish()`` in an application,
``gradesync publish``): the run-time registry's, re-read only when its version moved (one ``GET`` per
batch), else — nothing ever applied, or Redis not answering — the destinations file's. Inside a worker or
``gradesync serve`` the live view (:mod:`worker.registry.live`) answers instead.
"""

from __future__ import annotations

import json
import threading

import redis

from worker.registry.store import Registry
from worker.settings import CommonSettings, has_live_destinations


class VendorIndex:
    def __init__(self, settings: CommonSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self._version = -1
        self._map: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, str]:
        if has_live_destinations(self.settings):
            return self.settings.vendors()
        try:
            version = self.registry.version()
            if version == 0:
                return self.settings.vendors()
            with self._lock:
                if version != self._version:
                    fresh: dict[str, str] = {}
                    for name, stored in self.registry.items():
                        try:
                            fresh[name] = str(json.loads(stored)["config"]["vendor"])
                        except (ValueError, KeyError, TypeError):
                            continue
                    self._map, self._version = fresh, version
                return self._map
        except (redis.RedisError, OSError):
            return self.settings.vendors()
