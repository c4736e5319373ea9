"""The HTTP boundary shared by the vendor adapters: transport errors and status codes mapped onto
:mod:`worker.errors` (the clients themselves: :mod:`worker.adapters.client`, re-exported here).

Vendor modules call :func:`send` for every request and :func:`error_for_status` for every answer they
do not treat as success, passing the vendor's own message (parsed from its error body). Vendor-specific
exceptions to the mapping (a 404 that means "no grade yet", a 400 that means "stale score") are decided
in the vendor module before it falls back to :func:`error_for_status`.

:class:`HttpAdapter` is the scaffolding every adapter shares (the destination type check, its
credentials, ``close()``); :func:`path_segment` and :func:`compact_json` the two encodings they all use.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar, cast
from urllib.parse import quote

import httpx

from worker import errors, shutdown
from worker.adapters.base import AdapterContext, HttpClient, RequestObserver
from worker.redact import excerpt
from worker.settings import Destination
from worker.vendors.base import DestinationBase

#: a vendor's Retry-After beyond this is treated as this (sanity cap: one day)
MAX_RETRY_AFTER = 86_400.0


def send(
    client: HttpClient,
    request: httpx.Request,
    *,
    route: str,
    observe: RequestObserver | None = None,
) -> httpx.Response:
    """Send one request; a transport failure becomes ``VendorTimeout`` or ``NetworkError``.

    ``route`` is a low-cardinality label of the endpoint (``grade.get``), for metrics and logs.
    """
    shutdown.gate.check(route)  # never start a vendor request once the worker is shutting down
    started = time.perf_counter()
    try:
        response = client.send(request)
        response.read()
    except httpx.TimeoutException as exc:
        if observe:
            observe(request.method, route, None, time.perf_counter() - started)
        raise errors.VendorTimeout(f"{route}: no answer within the timeout ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        if observe:
            observe(request.method, route, None, time.perf_counter() - started)
        raise errors.NetworkError(f"{route}: {type(exc).__name__}: connection failed") from exc
    if observe:
        observe(request.method, route, response.status_code, time.perf_counter() - started)
    return response


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = datetime.now(UTC).timestamp() if now is None else now
        seconds = when.timestamp() - current
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


_BY_STATUS: dict[int, type[errors.DeliveryError]] = {
    400: errors.InvalidRequest,
    401: errors.AuthenticationFailed,
    403: errors.Forbidden,
    404: errors.NotFound,
    406: errors.InvalidRequest,
    408: errors.VendorTimeout,
    409: errors.Conflict,
    413: errors.InvalidRequest,
    415: errors.InvalidRequest,
    422: errors.InvalidRequest,
    425: errors.VendorUnavailable,
    429: errors.RateLimited,
}


#: a 403 whose text says this is a throttle (self-hosted Canvas: ``403 Forbidden (Rate Limit Exceeded)``)
RATE_LIMIT_WORDS = re.compile(r"rate[ _-]?limit(ed)?[ _-]?exceeded|too many requests|throttl", re.IGNORECASE)
#: the headers that report what is left of a vendor's rate-limit budget (Canvas/D2L; Thought Industries)
REMAINING_HEADERS = ("X-Rate-Limit-Remaining", "X-RateLimit-Remaining")


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None and value.strip() else None
    except ValueError:
        return None


def is_throttle(status: int, headers: Mapping[str, str], text: str = "") -> bool:
    """Whether an answer is a throttle, by its shape rather than its status alone:

    * 429, with or without ``Retry-After`` (hosted Canvas sends none, D2L and Thought Industries do);
    * 403 whose text says the rate limit was exceeded, or that reports ``X-Rate-Limit-Remaining: 0``
      (self-hosted Canvas: ``text/plain`` ``403 Forbidden (Rate Limit Exceeded)``, ``0.0`` remaining);
    * 503 with ``Retry-After`` (an overload answer that says when to come back).
    """
    if status == 429:
        return True
    if status == 403:
        if RATE_LIMIT_WORDS.search(text):
            return True
        return any((n := _number(headers.get(h))) is not None and n <= 0 for h in REMAINING_HEADERS)
    return status == 503 and bool(headers.get("Retry-After"))


def throttled(response: httpx.Response) -> bool:
    """:func:`is_throttle` of an answer (its body text read only for a 403)."""
    status = response.status_code
    if status not in (403, 429, 503):
        return False
    return is_throttle(status, response.headers, response.text[:2000] if status == 403 else "")


def error_class_for(status: int) -> type[errors.DeliveryError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return errors.VendorUnavailable
    if 400 <= status < 500:
        return errors.InvalidRequest
    return errors.UnexpectedResponse


def error_for_status(
    response: httpx.Response,
    *,
    route: str,
    vendor_message: str | None = None,
    cls: type[errors.DeliveryError] | None = None,
) -> errors.DeliveryError:
    """The project error for a non-success answer (``cls`` overrides the status mapping; a throttle, by
    its shape, is always :class:`~worker.errors.RateLimited`: see :func:`throttled`)."""
    status = response.status_code
    klass = errors.RateLimited if throttled(response) else cls or error_class_for(status)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    reason = response.reason_phrase or ""
    message = f"{route}: HTTP {status} {reason}".rstrip()
    if klass is errors.UnexpectedResponse:
        message = f"{route}: unexpected HTTP {status} {reason}".rstrip()
    elif klass is errors.RateLimited and status != 429:
        message += " (throttled: the vendor's rate limit)"
    return klass(
        message,
        status=status,
        vendor_message=vendor_message,
        retry_after=retry_after,
        excerpt=excerpt(response.text),
    )


def json_number(value: float) -> int | float:
    """``95.0`` as ``95`` on the wire; other values unchanged (``0`` stays a score)."""
    return int(value) if value.is_integer() else value


def json_or_none(response: httpx.Response) -> object | None:
    """The body as JSON, or None when it is not JSON."""
    try:
        body: object = response.json()
    except ValueError:
        return None
    return body


def path_segment(value: str) -> str:
    """``value`` as ONE path segment (``encodeURIComponent``: ``/``, ``?``, ``#``, ``%`` … encoded)."""
    return quote(value, safe="")


def compact_json(body: Any, *, ensure_ascii: bool = False) -> bytes:
    """The UTF-8 bytes of ``body`` as JSON without whitespace (``ensure_ascii``: ``\\uXXXX`` escapes)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=ensure_ascii).encode("utf-8")


D = TypeVar("D", bound=DestinationBase)


class HttpAdapter(Generic[D]):
    """What every vendor adapter does the same way: check it was given its vendor's destination, read
    a credential of it, and release the pooled client.

    A subclass sets ``vendor`` and ``destination_type`` and implements ``deliver``.
    """

    vendor: ClassVar[str]
    #: the destination model of the vendor (a destination of another vendor is a configuration error)
    destination_type: ClassVar[type[DestinationBase]]

    def __init__(self, destination: Destination, ctx: AdapterContext) -> None:
        if not isinstance(destination, self.destination_type):
            ctx.http.close()  # nothing keeps an adapter that failed to build
            raise errors.ConfigurationError(f"destination {destination.name!r} is not a {self.vendor} destination")
        self.destination: D = cast(D, destination)
        self.ctx = ctx

    def credential(self, field_name: str) -> str:
        """The secret ``field_name`` of the destination.

        :class:`worker.delivery.AdapterPool` refuses a destination with a missing secret before building
        its adapter; this guards an adapter built directly (a ``ConfigurationError`` naming the variable).
        """
        value = self.destination.secret(field_name)
        if value is None:
            env_key = f"{field_name}_env"
            raise errors.ConfigurationError(
                f"destination {self.destination.name!r}: environment variable not set for {env_key} "
                f"(${getattr(self.destination, env_key, '')})"
            )
        return value.get_secret_value()

    def close(self) -> None:
        """Release the HTTP client."""
        self.ctx.http.close()
