"""Authentication building blocks of the ops app: the API token rule, who the client is behind a proxy,
the failed-authentication limiter and the server-side dashboard sessions.

* **Token rule.** ``GRADESYNC_API_TOKEN`` must be at least :data:`MIN_TOKEN_LENGTH` characters with no
  surrounding whitespace: a short or blank token is refused at start-up with a clear message.
* **Proxies.** ``X-Forwarded-For`` / ``-Proto`` / ``-Host`` are believed only when the TCP peer is in
  ``GRADESYNC_TRUSTED_PROXIES`` (CIDRs). Otherwise a client could name any address (dodging the rate limit)
  or any host (passing the dashboard's ``Origin`` check).
* **Limiter.** Every wrong Bearer token and every wrong login counts against the client's address in
  Redis (so all web replicas share the count); over ``GRADESYNC_AUTH_FAIL_LIMIT`` in
  ``GRADESYNC_AUTH_FAIL_WINDOW`` seconds the client gets 429 with ``Retry-After`` until the window ends.
  A missing credential is refused (401) but not counted: it is not a guess.
* **Sessions.** A dashboard session is live only while its id is in Redis (TTL = the session lifetime),
  so logging out ends it on every replica at once, not 12 hours later.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis
import structlog

from worker.keys import Keys
from worker.settings import ConfigError

log = structlog.get_logger("gradesync.auth")

MIN_TOKEN_LENGTH = 32
#: the ``kind`` label values of gradesync_auth_failures_total
FAILURE_KINDS = ("bearer", "login", "rate_limited")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_token(token: str) -> str:
    """``token`` when it is acceptable as GRADESYNC_API_TOKEN, else :class:`ConfigError` saying why."""
    if not token.strip():
        raise ConfigError("GRADESYNC_API_TOKEN is blank (only whitespace): set a random token of at least "
                          f"{MIN_TOKEN_LENGTH} characters, e.g. `python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'`")
    if token != token.strip():
        raise ConfigError("GRADESYNC_API_TOKEN starts or ends with whitespace: remove it (a pasted newline?)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"GRADESYNC_API_TOKEN is {len(token)} characters: it must be at least "
                          f"{MIN_TOKEN_LENGTH} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return token


def parse_networks(spec: str) -> tuple[Network, ...]:
    """``GRADESYNC_TRUSTED_PROXIES`` (comma-separated CIDRs or addresses) as networks."""
    out: list[Network] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(f"GRADESYNC_TRUSTED_PROXIES: {part!r} is not an IP address or CIDR") from None
    return tuple(out)


@dataclass(frozen=True)
class Origin:
    """Who sent the request, as far as we may believe: client address, scheme, and the public host."""

    client: str
    scheme: str
    host: str


class TrustedProxies:
    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, spec: str) -> TrustedProxies:
        return cls(parse_networks(spec))

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def resolve(self, peer: str, scheme: str, headers: Mapping[str, str]) -> Origin:
        """The request's :class:`Origin`; ``headers`` are lower-case names (first value of each)."""
        host = headers.get("host", "")
        if not self.trusts(peer):
            return Origin(peer, scheme, host)
        client = peer
        hops = [h.strip() for h in headers.get("x-forwarded-for", "").split(",") if h.strip()]
        for hop in reversed(hops):  # the rightmost address no trusted proxy vouches for is the client
            client = hop
            if not self.trusts(hop):
                break
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        fwd_host = headers.get("x-forwarded-host", "").split(",")[0].strip()
        return Origin(client, proto if proto in ("http", "https") else scheme, fwd_host or host)


class AuthLimiter:
    """Failed authentications per client address, in Redis; fails open (with a warning) if Redis is down,
    because the token comparison still guards every route."""

    def __init__(self, client: redis.Redis, keys: Keys, *, limit: int, window: int) -> None:
        self.r = client
        self.keys = keys
        self.limit = limit
        self.window = window

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it is not blocked."""
        key = self.keys.auth_failures(client)
        try:
            with self.r.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.ttl(key)
                count, ttl = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("auth_limiter_unavailable", error=type(exc).__name__)
            return None
        if count is None or int(count) < self.limit:
            return None
        return max(1, int(ttl)) if ttl and int(ttl) > 0 else self.window

    def failed(self, client: str, kind: str) -> None:
        key = self.keys.auth_failures(client)
        try:
            with self.r.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, ex=self.window, nx=True)  # the window starts at the first failure
                pipe.incr(key)
                pipe.hincrby(self.keys.stats("auth_failures"), kind, 1)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("auth_limiter_unavailable", error=type(exc).__name__)
            return
        log.warning("auth_failed", kind=kind, client=client)

    def rate_limited(self, client: str) -> None:
        with contextlib.suppress(redis.RedisError, OSError):
            self.r.hincrby(self.keys.stats("auth_failures"), "rate_limited", 1)

    def totals(self) -> dict[str, int]:
        raw = self.r.hgetall(self.keys.stats("auth_failures"))
        out = dict.fromkeys(FAILURE_KINDS, 0)
        for k, v in raw.items():
            out[k.decode() if isinstance(k, bytes) else str(k)] = int(v)
        return out


class SessionStore:
    """The live dashboard session ids (a signed cookie is honoured only while its id is here)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    def add(self, sid: str, ttl: int) -> None:
        self.r.set(self.keys.session(sid), "1", ex=ttl)

    def alive(self, sid: str) -> bool:
        try:
            return bool(self.r.exists(self.keys.session(sid)))
        except (redis.RedisError, OSError) as exc:  # fail closed: no session without Redis
            log.warning("session_store_unavailable", error=type(exc).__name__)
            return False

    def revoke(self, sid: str) -> None:
        self.r.delete(self.keys.session(sid))
