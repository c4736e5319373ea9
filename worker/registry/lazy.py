"""A map of thousands of destinations whose memory does not grow with their number.

Why: a worker process kept every registered destination as a validated model (about 1.5 to 2.7 KB each), and
every destination it delivered to as an adapter with its HTTP client (about 3 KB): 10 000 destinations
grew each process by ~50 MB, though a process delivers to few of them in any minute. Now a process keeps,
per destination, its stored entry (the registry's JSON text, a few hundred bytes: ~3.5 MB for 10 000
destinations with their keys given directly), its vendor and its group; the :class:`Destination` model is
built from the text on first use (~50 µs with a secret to decrypt) and kept in a cache of the
:data:`CACHE_SIZE` most recently used (``GRADESYNC_DESTINATION_CACHE``). The adapters follow the same
bound (:class:`worker.delivery.AdapterPool`). Why the text and not a digest of it, read again from Redis
on use: that ``HGET`` was the largest Redis wait of a worker delivering to 10 000 destinations (py-spy).

Every entry was validated once when the process read it (:class:`worker.registry.live.LiveDestinations`):
an entry that does not validate here is not in the map, so ``name in map`` means "deliverable". Its
vendor and group are read without building the model, so routing (:mod:`worker.routing`) and event
validation (:meth:`DestinationMap.vendors`) never build 10 000 models.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

import structlog

from worker.crypto import WireCipher
from worker.registry.codec import EntryError, materialize
from worker.settings import CommonSettings, Destination

log = structlog.get_logger("gradesync.registry")

#: destination models kept per process (the most recently used)
CACHE_SIZE = 1000


class Known(NamedTuple):
    """What a process keeps of a destination it does not use now: its entry, to route it and rebuild it."""

    stored: str
    vendor: str
    group: str | None


def known(stored: str) -> Known:
    """The vendor and group of a stored entry, without validating it (it was validated when read)."""
    config = json.loads(stored).get("config") or {}
    group = config.get("group")  # both interned: a handful of distinct values among thousands of entries
    return Known(stored, sys.intern(str(config.get("vendor"))), sys.intern(str(group)) if group else None)


#: (name, stored entry) -> the destination it means here; :class:`EntryError` when it does not validate
Build = Callable[[str, str], Destination]


class DestinationMap(Mapping[str, Destination]):
    """name -> :class:`Destination`, built from the stored entry on first use, the most recently used
    ``cache_size`` kept (thread-safe: the delivery threads share it). A name whose entry no longer
    validates when it is built is not found (``KeyError``, as for a removed destination)."""

    def __init__(self, entries: Mapping[str, Known], build: Build, *, cache_size: int = CACHE_SIZE,
                 warm: Mapping[str, Destination] | None = None) -> None:
        self._entries = dict(sorted(entries.items()))
        self._build = build
        self._size = max(1, cache_size)
        self._cache: OrderedDict[str, Destination] = OrderedDict()
        self._lock = threading.Lock()
        self._vendors: dict[str, str] | None = None
        for name, dest in (warm or {}).items():
            if name in self._entries and len(self._cache) < self._size:
                self._cache[name] = dest

    # -- Mapping -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Destination:
        with self._lock:
            dest = self._cache.get(name)
            if dest is not None:
                self._cache.move_to_end(name)
                return dest
        entry = self._entries[name]  # KeyError: not a destination (here)
        try:
            dest = self._build(name, entry.stored)
        except EntryError as exc:
            log.warning("registry_entry_invalid", destination=name, problems=[f"{k}: {m}" for k, m in exc.problems])
            raise KeyError(name) from None
        with self._lock:
            self._cache[name] = dest
            self._cache.move_to_end(name)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return dest

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    # -- without building models ---------------------------------------------------------------
    def entries(self) -> Mapping[str, Known]:
        return self._entries

    def group(self, name: str) -> str | None:
        entry = self._entries.get(name)
        return entry.group if entry is not None else None

    def vendors(self) -> dict[str, str]:
        """destination name -> vendor (built once per map: the map is replaced, never changed)."""
        if self._vendors is None:
            self._vendors = {name: e.vendor for name, e in self._entries.items()}
        return self._vendors

    def groups(self) -> set[str | None]:
        return {e.group for e in self._entries.values()}

    def cached(self) -> dict[str, Destination]:
        """The models built and still kept (for the next map: an unchanged entry keeps its model)."""
        with self._lock:
            return dict(self._cache)


def vendors_of(destinations: Mapping[str, Destination]) -> dict[str, str]:
    """destination name -> vendor, without building a lazy map's models."""
    if isinstance(destinations, DestinationMap):
        return destinations.vendors()
    return {name: d.vendor for name, d in destinations.items()}


def group_of(destinations: Mapping[str, Destination], name: str) -> str | None:
    """The ``group`` of one destination, without building a lazy map's model."""
    if isinstance(destinations, DestinationMap):
        return destinations.group(name)
    return destinations[name].group


def groups_of(destinations: Mapping[str, Destination]) -> set[str | None]:
    """The ``group`` of every destination, without building a lazy map's models."""
    if isinstance(destinations, DestinationMap):
        return destinations.groups()
    return {d.group for d in destinations.values()}


def builder(settings: CommonSettings) -> Build:
    """How this process builds a destination from its stored entry (its environment, its key)."""
    cipher = WireCipher.optional(settings)
    limit = settings.attempt_time_limit

    def build(name: str, stored: str) -> Destination:
        return materialize(name, stored, cipher=cipher, environ=os.environ, attempt_time_limit=limit)

    return build


def read_map(settings: CommonSettings, raw: Mapping[str, str] | Iterable[tuple[str, str]],
             previous: Mapping[str, Destination] | None = None, invalid: dict[str, str] | None = None, *,
             validate: bool = True) -> tuple[DestinationMap, set[str]]:
    """The map of the stored entries ``raw`` (name -> JSON, or the registry's scan of (name, JSON)) and the
    names that changed since ``previous``.

    Each new or changed entry is validated here (``validate``), once, and left out with a warning when it
    does not validate in this process (a secret it cannot decrypt, an ``*_env`` not set here); its model is
    dropped at once unless the cache has room. ``invalid`` (name -> the entry refused) is kept up to date
    across the caller's polls, so a refused entry is said once. A scan is consumed as it comes.
    ``validate=False``: the entries were validated by the command that started this process
    (``gradesync worker``'s children)."""
    old = previous.entries() if isinstance(previous, DestinationMap) else {}
    kept = previous.cached() if isinstance(previous, DestinationMap) else {}
    size = settings.destination_cache
    build = builder(settings)
    refused = invalid if invalid is not None else {}
    warm: dict[str, Destination] = {}
    entries: dict[str, Known] = {}
    changed: set[str] = set()
    present: set[str] = set()
    for name, stored in (raw.items() if isinstance(raw, Mapping) else raw):
        present.add(name)
        before = old.get(name)
        if before is not None and before.stored == stored:
            entries[name] = before
            if name in kept and len(warm) < size:
                warm[name] = kept[name]
            continue
        if refused.get(name) == stored:
            continue
        changed.add(name)
        if validate:
            try:
                dest = build(name, stored)
            except EntryError as exc:
                refused[name] = stored
                log.warning("registry_entry_invalid", destination=name, problems=[f"{k}: {m}" for k, m in exc.problems])
                continue
            if len(warm) < size:
                warm[name] = dest
        refused.pop(name, None)
        entries[name] = known(stored)
    changed |= {n for n in old if n not in present}
    for name in [n for n in refused if n not in present]:
        del refused[name]
    return DestinationMap(entries, build, cache_size=size, warm=warm), changed
