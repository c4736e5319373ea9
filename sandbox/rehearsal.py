"""Rehearse vendor pressure with the sandbox: a rate limit per vendor and timed outages, as
``gradesync sandbox --rate-limit VENDOR=PER_MIN[:BURST] --outage VENDOR=SECONDS[@DELAY]`` and the demo
set them up. They go through each simulator's control API (``POST /_sandbox/ratelimit``, ``POST
/_sandbox/faults`` with ``for_seconds``; see :mod:`sandbox.base`), like any other client would.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog

from sandbox.control import SandboxClient

log = structlog.get_logger("gradesync.sandbox")
_RATE = re.compile(r"^(?P<vendor>[a-z_]+)=(?P<per_minute>\d+(?:\.\d+)?)(?::(?P<burst>\d+))?$")
_OUTAGE = re.compile(r"^(?P<vendor>[a-z_]+)=(?P<seconds>\d+(?:\.\d+)?)(?:@(?P<delay>\d+(?:\.\d+)?))?$")


class RehearsalError(Exception):
    """The sandbox refused a rehearsal (e.g. a simulator without that control endpoint)."""


@dataclass(frozen=True)
class RateLimit:
    vendor: str
    per_minute: float
    burst: int | None = None

    def describe(self) -> str:
        burst = f", burst {self.burst}" if self.burst is not None else ""
        return f"rate limit {self.per_minute:g}/min{burst} (429 + Retry-After beyond it)"


@dataclass(frozen=True)
class Outage:
    vendor: str
    seconds: float
    delay: float = 0.0

    def describe(self) -> str:
        start = f"in {self.delay:g}s" if self.delay else "now"
        return f"outage: 503 to every request for {self.seconds:g}s, starting {start}"


def parse_rate_limit(text: str, vendors: tuple[str, ...]) -> RateLimit:
    """``thoughtindustries=600`` or ``thoughtindustries=600:100``; ValueError naming the problem."""
    m = _RATE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r}: use VENDOR=PER_MIN[:BURST], e.g. thoughtindustries=600:100")
    vendor, per_minute = m["vendor"], float(m["per_minute"])
    if vendor not in vendors:
        raise ValueError(f"{text!r}: unknown vendor {vendor!r} (one of {', '.join(vendors)})")
    if per_minute <= 0:
        raise ValueError(f"{text!r}: the rate must be more than 0 per minute")
    burst = int(m["burst"]) if m["burst"] else None
    if burst is not None and burst < 1:
        raise ValueError(f"{text!r}: the burst must be at least 1")
    return RateLimit(vendor, per_minute, burst)


def parse_outage(text: str, vendors: tuple[str, ...]) -> Outage:
    """``ltiaas=60`` (a 60 s outage now) or ``ltiaas=60@30`` (starting in 30 s); ValueError naming the problem."""
    m = _OUTAGE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r}: use VENDOR=SECONDS[@DELAY], e.g. ltiaas=60@30")
    vendor, seconds = m["vendor"], float(m["seconds"])
    if vendor not in vendors:
        raise ValueError(f"{text!r}: unknown vendor {vendor!r} (one of {', '.join(vendors)})")
    if seconds <= 0:
        raise ValueError(f"{text!r}: the outage must last more than 0 seconds")
    return Outage(vendor, seconds, float(m["delay"]) if m["delay"] else 0.0)


def _call(action: Callable[[], object], base_url: str) -> None:
    """Run one control call, turning a refusal into a :class:`RehearsalError` that names the sandbox."""
    try:
        action()
    except httpx.HTTPStatusError as exc:
        raise RehearsalError(f"{base_url}{exc.request.url.path} answered {exc.response.status_code}: "
                             f"{exc.response.text[:200]}") from None


def apply_rate_limit(base_url: str, limit: RateLimit) -> None:
    client = SandboxClient(base_url)
    try:
        _call(lambda: client.rate_limit(limit.per_minute, limit.burst), base_url)
    finally:
        client.close()


def start_outage(base_url: str, seconds: float, status: int = 503) -> None:
    """Every vendor route answers ``status`` for ``seconds`` from now (the sandbox ends it by itself)."""
    client = SandboxClient(base_url)
    try:
        _call(lambda: client.outage(seconds, status), base_url)
    finally:
        client.close()


def _log_failure(exc: Exception) -> None:
    log.error("sandbox_outage_failed", error=str(exc))


def schedule_outage(base_url: str, outage: Outage,
                    on_error: Callable[[Exception], None] = _log_failure) -> threading.Timer | None:
    """Start ``outage`` now, or after its delay from a timer thread (returned, so callers can cancel it)."""
    if not outage.delay:
        start_outage(base_url, outage.seconds)
        return None

    def fire() -> None:
        try:
            start_outage(base_url, outage.seconds)
        except (RehearsalError, httpx.HTTPError) as exc:
            on_error(exc)

    timer = threading.Timer(outage.delay, fire)
    timer.daemon = True
    timer.start()
    return timer


def rehearse(urls: dict[str, str], rate_limits: tuple[str, ...], outages: tuple[str, ...]) -> list[str]:
    """Apply ``--rate-limit`` / ``--outage`` specs to the simulators at ``urls`` (vendor -> URL) and return
    what to print. Every spec is parsed before any is applied; ValueError for a bad spec or a refusal."""
    vendors = tuple(urls)
    limits = [parse_rate_limit(t, vendors) for t in rate_limits]
    planned = [parse_outage(t, vendors) for t in outages]
    lines = []
    try:
        for limit in limits:
            apply_rate_limit(urls[limit.vendor], limit)
            lines.append(f"{limit.vendor:<18} {limit.describe()}")
        for outage in planned:
            schedule_outage(urls[outage.vendor], outage)
            lines.append(f"{outage.vendor:<18} {outage.describe()}")
    except RehearsalError as exc:
        raise ValueError(str(exc)) from None
    return lines
