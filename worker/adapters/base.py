"""The adapter Protocol: what the worker needs from one LMS vendor.

An adapter delivers one :class:`~worker.events.GradeEvent` to its vendor in one call of
:meth:`Adapter.deliver`, returning a :class:`DeliveryResult` or raising a
:class:`~worker.errors.DeliveryError` subclass. It is built once per destination per worker process,
holds one pooled HTTP client (keep-alive), and is called from several threads at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx

from worker.events import GradeEvent
from worker.settings import Destination


@dataclass(frozen=True)
class DeliveryResult:
    """What the vendor answered to a successful delivery."""

    status: int
    #: what was done, e.g. ``grade.post``, ``grade.put``, ``score.post``, ``submit+grade``, ``activity.post``
    action: str
    #: vendor reference worth keeping (a grade id, a Location header, a request id)
    detail: str = ""


class Cache(Protocol):
    """A small shared JSON cache (Redis-backed in production), shared by all workers."""

    def get_json(self, namespace: str, key: str) -> Any | None: ...

    def set_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> None: ...

    def delete(self, namespace: str, key: str) -> None: ...

    def add_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> bool:
        """Set only if absent (Redis ``SET NX``): True when this caller set it (a lock across workers)."""
        ...


class NullCache:
    """A cache that remembers nothing (unit tests)."""

    def get_json(self, namespace: str, key: str) -> Any | None:
        return None

    def set_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> None:
        return None

    def delete(self, namespace: str, key: str) -> None:
        return None

    def add_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> bool:
        return True


#: called after each vendor HTTP request: (method, route label, status or None, seconds)
RequestObserver = Callable[[str, str, int | None, float], None]


def _ignore(method: str, route: str, status: int | None, seconds: float) -> None:
    return None


class HttpClient(Protocol):
    """What an adapter uses of its HTTP client (an ``httpx.Client``, or a destination's view of the
    process's one client, :class:`worker.adapters.client.DestinationClient`)."""

    def build_request(self, method: str, url: httpx.URL | str, *, content: Any = None, data: Any = None,
                      json: Any = None, params: Any = None, headers: Any = None) -> httpx.Request: ...

    def send(self, request: httpx.Request) -> httpx.Response: ...

    def close(self) -> None: ...


@dataclass
class AdapterContext:
    """What an adapter is given besides its destination."""

    http: HttpClient
    cache: Cache = field(default_factory=NullCache)
    observe: RequestObserver = _ignore


class Adapter(Protocol):
    """One LMS vendor."""

    vendor: ClassVar[str]

    def deliver(self, event: GradeEvent) -> DeliveryResult:
        """Deliver the event's grade; raise a ``DeliveryError`` subclass when the vendor does not take it."""
        ...

    def close(self) -> None:
        """Release the HTTP client."""
        ...


class AdapterFactory(Protocol):
    def __call__(self, destination: Destination, ctx: AdapterContext) -> Adapter: ...
