"""The HTTP clients of the vendor adapters: one client per process (:func:`shared_client`) over its shared
connections (:class:`SharedTransport`, one per thread and origin), and a destination's view of it
(:class:`DestinationClient`: its base URL and timeout), built by :func:`make_client`; the rate-limit budget
headers of ordinary answers noted per thread (:func:`take_budget`).

The mapping of answers and transport errors onto :mod:`worker.errors` is :mod:`worker.adapters.http`'s.
"""

from __future__ import annotations

import functools
import ssl
import threading
from typing import Any

import httpx

from worker.adapters.base import HttpClient
from worker.settings import Destination

USER_AGENT = "gradesync/0.1 (+https://github.com/gradesync)"


#: distinct (base URL, request path) whose merged URL is kept (per process, or per client built with a
#: transport of its own; cleared when full)
URL_CACHE_SIZE = 1024


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing from responses."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class VendorClient(httpx.Client):
    """httpx's client, for one vendor's API, with two costs of the generic client taken out of every
    request (together about a fifth of a delivery's CPU, measured with cProfile):

    * the merge of ``base_url`` with a request path re-parses both URLs character by character (a
      line item URL inside a path is long); a destination asks for few distinct paths, so each merged
      URL is kept (:data:`URL_CACHE_SIZE` per client) and handed to httpx already absolute;
    * the cookie jar turns every response into a ``urllib`` request/response pair to look for
      ``Set-Cookie``. The vendor APIs authenticate every request with a header, and cookies kept by one
      shared client would carry state from one learner's request to the next, so this client keeps none.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._merged: dict[str, httpx.URL] = {}
        self._no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: Any) -> None:
        raise AttributeError("a vendor client keeps no cookies")

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        if isinstance(url, str):
            merged = self._merged.get(url)
            if merged is None:
                if len(self._merged) >= URL_CACHE_SIZE:
                    self._merged.clear()
                merged = self._merged[url] = self._merge_url(url)
            url = merged
        return super().build_request(method, url, **kwargs)


#: scheme, host, port of a request
Origin = tuple[bytes, bytes, int | None]


class PerThreadTransport(httpx.BaseTransport):
    """One keep-alive connection per delivery thread and origin (each its own one-connection pool).

    Why: httpcore's shared pool scans every pooled connection, under one lock, when a request takes a
    connection and again when its answer is read; with 64 delivery threads that bookkeeping was about
    half of the HTTP client's CPU in a GIL profile. A delivery thread makes its requests one after the
    other (an adapter reads each answer before the next request), so it never needs a second connection
    to one origin, and a one-connection pool has nothing to scan. A thread keeps at most
    :data:`ORIGINS_PER_THREAD` origins' connections (the least recently used is closed beyond that); an
    idle one is closed after ``keepalive_expiry`` on its thread's next request, all of them when the
    transport is closed.
    """

    def __init__(self, *, keepalive_expiry: float = 30.0) -> None:
        self._limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=keepalive_expiry)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[httpx.HTTPTransport] = []
        self._ssl: ssl.SSLContext | None = None  # one for all the threads (each holds the CA bundle)

    def _transport(self, origin: Origin) -> httpx.HTTPTransport:
        mine: dict[Origin, httpx.HTTPTransport] | None = getattr(self._local, "by_origin", None)
        if mine is None:
            mine = self._local.by_origin = {}
        transport = mine.pop(origin, None)
        if transport is None:
            with self._lock:
                if self._ssl is None:
                    self._ssl = httpx.create_ssl_context()  # what httpx.HTTPTransport() would build
                transport = httpx.HTTPTransport(verify=self._ssl, limits=self._limits)
                self._all.append(transport)
            if len(mine) >= ORIGINS_PER_THREAD:
                oldest = next(iter(mine))
                self._drop(mine.pop(oldest))
        mine[origin] = transport  # most recently used last
        return transport

    def _drop(self, transport: httpx.HTTPTransport) -> None:
        with self._lock:
            if transport in self._all:
                self._all.remove(transport)
        transport.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        return self._transport((url.raw_scheme, url.raw_host, url.port)).handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._all = self._all, []
            self._local = threading.local()
        for transport in transports:
            transport.close()


#: the rate-limit budget headers an ordinary answer may carry (read by :mod:`worker.flow.headers`)
BUDGET_HEADERS = ("X-Rate-Limit-Remaining", "X-RateLimit-Remaining", "X-Rate-Limit-Reset", "X-RateLimit-Reset",
                  "X-Request-Cost")
_budget = threading.local()


def _note_budget(response: httpx.Response) -> None:
    """Response hook: keep the budget headers of this thread's last ordinary answer (not a refusal's:
    a throttle is the flow control's business through its error)."""
    if response.status_code < 400:
        headers = response.headers
        seen = {name: headers[name] for name in BUDGET_HEADERS if name in headers}
        if seen:
            _budget.headers = seen


def take_budget() -> dict[str, str] | None:
    """The budget headers of this thread's last ordinary answer since the last call (then forgotten)."""
    seen: dict[str, str] | None = getattr(_budget, "headers", None)
    _budget.headers = None
    return seen


#: origins one delivery thread keeps a connection to (beyond: the least recently used is closed)
ORIGINS_PER_THREAD = 64


class SharedTransport(httpx.BaseTransport):
    """The process's one :class:`PerThreadTransport`, shared by every destination's client; closing a
    client leaves it open (its idle connections close after the keep-alive expiry; all with the process).

    Why: with a transport per destination, every (destination, thread) pair held its own connection and
    every destination its own TLS context (the CA bundle, about 1 MB): 1 000 destinations on one vendor
    host made a worker of 64 threads open a new connection for most requests and grow to ~950 MB a
    process. Destinations on one host now share each thread's connection to it.
    """

    _lock = threading.Lock()
    _shared: PerThreadTransport | None = None

    @classmethod
    def inner(cls) -> PerThreadTransport:
        with cls._lock:
            if cls._shared is None:
                cls._shared = PerThreadTransport(keepalive_expiry=30.0)
            return cls._shared

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner().handle_request(request)

    def close(self) -> None:
        return None


class DestinationClient:
    """One destination's HTTP client: its base URL and timeout over the process's one vendor client
    (:func:`shared_client`), which holds the headers, the response hook and the shared connections.

    Why not an ``httpx.Client`` per destination: building one took ~85 µs and ~3 KB (headers, URL, cookie
    jar, proxy mounts read from the environment) and a worker keeps the adapters of the destinations it
    used last (:class:`worker.delivery.AdapterPool`): with thousands of destinations, clients were built and
    dropped all day. This is a few attributes. Merged URLs are kept process-wide, bounded
    (:data:`URL_CACHE_SIZE` in all, not per destination)."""

    __slots__ = ("_base", "_client", "base_url", "timeout")

    def __init__(self, base_url: str, timeout: float, client: httpx.Client | None = None) -> None:
        self.base_url = base_url  # parsed only when a path of it is merged for the first time (_base)
        self._base: httpx.URL | None = None
        self.timeout = _timeout(timeout)
        self._client = client or shared_client()

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        kwargs.setdefault("timeout", self.timeout)
        return self._client.build_request(method, self._merge(url), **kwargs)

    def _merge(self, url: httpx.URL | str) -> httpx.URL:
        key = (self.base_url, url) if isinstance(url, str) else None
        merged = _MERGED.get(key) if key is not None else None
        if merged is None:
            given = httpx.URL(url)
            if given.is_relative_url:
                base = self._base
                if base is None:
                    base = httpx.URL(self.base_url)
                    if not base.raw_path.endswith(b"/"):  # as httpx.Client does with its base_url
                        base = base.copy_with(raw_path=base.raw_path + b"/")
                    self._base = base
                merged = base.copy_with(raw_path=base.raw_path + given.raw_path.lstrip(b"/"))
            else:
                merged = given
            if key is not None:
                if len(_MERGED) >= URL_CACHE_SIZE:
                    _MERGED.clear()
                _MERGED[key] = merged
        return merged

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        return self._client.send(request, **kwargs)

    def close(self) -> None:
        """Nothing to close: the connections are the process's (:class:`SharedTransport`)."""


#: (base URL, request path) -> the merged URL, for every destination of the process
_MERGED: dict[tuple[str, str], httpx.URL] = {}


@functools.lru_cache(maxsize=64)
def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds)
_shared_lock = threading.Lock()
_shared: VendorClient | None = None


def shared_client() -> VendorClient:
    """The process's one vendor client: redirects never followed, the User-Agent, the budget headers of its
    answers noted per thread (:func:`take_budget`), the shared connections (:class:`SharedTransport`)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = VendorClient(follow_redirects=False, headers={"User-Agent": USER_AGENT},
                                   transport=SharedTransport(), event_hooks={"response": [_note_budget]})
        return _shared


def make_client(destination: Destination, *, transport: httpx.BaseTransport | None = None,
                timeout: float | None = None) -> HttpClient:
    """The destination's client: its base URL and timeout (``timeout``: instead of the destination's),
    redirects never followed; over the process's one client (:class:`DestinationClient`), or, given a
    ``transport`` (tests), a client of its own on it."""
    seconds = destination.timeout if timeout is None else timeout
    if transport is None:
        return DestinationClient(destination.base_url, seconds)
    return VendorClient(
        base_url=destination.base_url,
        timeout=httpx.Timeout(seconds),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
        transport=transport,
        event_hooks={"response": [_note_budget]},
    )
