"""LTI 1.3 service auth (1EdTech Security Framework §4): an OAuth 2.0 client-credentials grant whose
client authentication is a JWT signed with the tool's RSA key (RFC 7523 ``private_key_jwt``).

The assertion: header ``{"alg": "RS256", "typ": "JWT", "kid": <signing key's kid>}``; claims ``iss`` =
``sub`` = client id, ``aud`` = the token URL (or the platform's configured audience: D2L, Blackboard),
``iat`` = now, ``exp`` = now + 5 min (the ceiling of the spec), and a fresh random ``jti`` per request,
so a platform that remembers ``jti`` values never sees one twice.

Tokens are cached per destination and scope set in the shared cache (Redis), so a fleet of workers asks
the platform for one token per hour, not one per event (Canvas rate-limits tools that do the latter).
When no token is cached, one worker asks (a ``SET NX`` lock) while the others wait for its answer in the
cache. A cached token is dropped :data:`refresh margin <refresh_margin>` before it expires. When the platform
refuses a token (401), :meth:`TokenSource.refresh` replaces it once — unless another worker already did,
in which case its newer token is used.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog

from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.http import error_for_status, json_or_none, send
from worker.lti_keys import KeyProblem, ToolKey, load_key
from worker.redact import redact_text
from worker.vendors.lti import LtiAgsDestination

log = structlog.get_logger("gradesync.lti_auth")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: seconds an assertion is valid (the Security Framework's ceiling is 5 minutes)
ASSERTION_LIFETIME = 300
TOKEN_NAMESPACE = "lti_token"  # noqa: S105 - a cache namespace, not a secret
TOKEN_LOCK_NAMESPACE = "lti_token_lock"  # noqa: S105 - a cache namespace, not a secret
#: seconds a worker waits at least for another worker's token request before asking itself (at most the
#: request's own time limit: two timeouts, for the one retry on invalid_grant)
FETCH_WAIT = 5.0
ROUTE = "token.post"
#: OAuth error codes that mean the registration is wrong: another try fails the same way
_CONFIG_ERRORS = {"invalid_client", "unauthorized_client", "invalid_scope", "invalid_request",
                  "unsupported_grant_type", "access_denied"}


def refresh_margin(expires_in: float) -> float:
    """Seconds before expiry a cached token is dropped: 10 % of its life, between 5 s and 5 min."""
    return min(300.0, max(5.0, expires_in * 0.1))


def build_assertion(*, client_id: str, audience: str, key: ToolKey, now: float, jti: str | None = None) -> str:
    """The signed client assertion (compact JWS)."""
    if key.private is None:
        raise errors.ConfigurationError(f"key {key.kid!r} cannot sign: no private key")
    issued = int(now)
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "iat": issued,
              "exp": issued + ASSERTION_LIFETIME, "jti": jti or secrets.token_urlsafe(24)}
    return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT"})


@dataclass(frozen=True)
class AccessToken:
    value: str
    #: what the platform granted (the ``scope`` of its answer; the requested ones when it gave none)
    granted: tuple[str, ...]
    expires_at: float

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "granted": list(self.granted), "expires_at": self.expires_at}

    @classmethod
    def from_json(cls, raw: Any) -> AccessToken | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("value"), str):
            return None
        return cls(str(raw["value"]), tuple(str(s) for s in raw.get("granted") or ()), float(raw["expires_at"]))


def _oauth_error(response: httpx.Response) -> tuple[str, str]:
    body = json_or_none(response)
    if isinstance(body, dict):
        return str(body.get("error") or ""), redact_text(str(body.get("error_description") or ""))
    return "", ""


class TokenSource:
    """Access tokens of one LTI destination, cached in the shared cache."""

    def __init__(self, destination: LtiAgsDestination, ctx: AdapterContext,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.destination = destination
        self.ctx = ctx
        self.clock = clock
        self.sleep = sleep
        if destination.private_key is None:
            raise errors.ConfigurationError(
                f"destination {destination.name!r}: the tool's private key is not set (${destination.private_key_env})"
            )
        try:
            self.key = load_key(destination.private_key.get_secret_value(), kid=destination.kid)
        except KeyProblem as exc:
            raise errors.ConfigurationError(f"destination {destination.name!r}: {exc}") from None

    @property
    def audience(self) -> str:
        return self.destination.audience or self.destination.token_url

    def cache_key(self, scopes: Sequence[str]) -> str:
        d = self.destination
        basis = "\x00".join([d.client_id, d.token_url, self.audience, d.kid, *sorted(set(scopes))])
        return f"{d.name}:{hashlib.sha256(basis.encode()).hexdigest()[:32]}"

    def _cached(self, scopes: Sequence[str], other_than: str | None = None) -> AccessToken | None:
        cached = AccessToken.from_json(self.ctx.cache.get_json(TOKEN_NAMESPACE, self.cache_key(scopes)))
        if cached is None or cached.expires_at <= self.clock() or cached.value == other_than:
            return None
        return cached

    def token(self, scopes: Sequence[str]) -> AccessToken:
        """A valid token for ``scopes``: the cached one, or a new one from the platform."""
        return self._cached(scopes) or self._single_flight(scopes, None)

    def refresh(self, scopes: Sequence[str], stale: AccessToken) -> AccessToken:
        """A token other than ``stale`` (refused by the platform): another worker's newer one, or a new one."""
        return self._cached(scopes, stale.value) or self._single_flight(scopes, stale.value)

    def _single_flight(self, scopes: Sequence[str], other_than: str | None) -> AccessToken:
        """One worker asks the platform while the others wait for its token in the cache (Canvas
        rate-limits tools that fetch a token per request); when it takes longer than it may (the lock's
        TTL), they ask themselves."""
        key = self.cache_key(scopes)
        wait = max(FETCH_WAIT, 2 * self.destination.timeout + 1)
        if self.ctx.cache.add_json(TOKEN_LOCK_NAMESPACE, key, 1, int(wait) + 1):
            try:  # look again under the lock: the previous holder may have stored its token just now
                return self._cached(scopes, other_than) or self.fetch(scopes)
            finally:
                self.ctx.cache.delete(TOKEN_LOCK_NAMESPACE, key)
        for _ in range(int(wait / 0.05)):
            self.sleep(0.05)
            found = self._cached(scopes, other_than)
            if found is not None:
                return found
            if self.ctx.cache.get_json(TOKEN_LOCK_NAMESPACE, key) is None:
                # the asking worker is done: its token (stored before the lock went), or it failed
                return self._cached(scopes, other_than) or self.fetch(scopes)
        return self.fetch(scopes)

    def fetch(self, scopes: Sequence[str]) -> AccessToken:
        """Ask the platform for a token (one retry with a fresh assertion on ``invalid_grant``: clock skew)."""
        try:
            return self._request(scopes)
        except errors.AuthenticationFailed as exc:
            if "invalid_grant" not in (exc.vendor_message or ""):
                raise
            log.info("lti_token_retry", destination=self.destination.name, reason="invalid_grant")
            return self._request(scopes)

    def _request(self, scopes: Sequence[str]) -> AccessToken:
        d = self.destination
        now = self.clock()
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": build_assertion(client_id=d.client_id, audience=self.audience, key=self.key, now=now),
            "scope": " ".join(scopes),
        }
        request = self.ctx.http.build_request("POST", d.token_url, data=form, headers={"Accept": "application/json"})
        response = send(self.ctx.http, request, route=ROUTE, observe=self.ctx.observe)
        if response.status_code == 200:
            return self._store(scopes, response, now)
        code, description = _oauth_error(response)
        said = f"{code}: {description}".strip(": ") or None
        if code in _CONFIG_ERRORS or code == "invalid_grant" or response.status_code == 401:
            exc = error_for_status(response, route=ROUTE, vendor_message=said, cls=errors.AuthenticationFailed)
            exc.message = (f"{ROUTE}: the platform refused a token to client {d.client_id!r} for "
                           f"{' '.join(scopes)} (HTTP {response.status_code} {code or 'no OAuth error code'})")
            raise exc
        raise error_for_status(response, route=ROUTE, vendor_message=said)

    def _store(self, scopes: Sequence[str], response: httpx.Response, now: float) -> AccessToken:
        body = json_or_none(response)
        if (not isinstance(body, dict) or not isinstance(body.get("access_token"), str)
                or str(body.get("token_type", "")).lower() != "bearer"):
            raise error_for_status(response, route=ROUTE, cls=errors.UnexpectedResponse,
                                   vendor_message="token answer without a bearer access_token")
        raw_expires = body.get("expires_in", 3600)
        if isinstance(raw_expires, str) and raw_expires.isdigit():  # some platforms send it as a string
            raw_expires = int(raw_expires)
        expires_in = float(raw_expires) if isinstance(raw_expires, int | float) and raw_expires > 0 else 3600.0
        granted = tuple(str(body["scope"]).split()) if body.get("scope") else tuple(scopes)
        token = AccessToken(body["access_token"], granted, now + expires_in - refresh_margin(expires_in))
        ttl = max(1, int(token.expires_at - now))
        self.ctx.cache.set_json(TOKEN_NAMESPACE, self.cache_key(scopes), token.as_json(), ttl)
        log.info("lti_token", destination=self.destination.name, granted=" ".join(granted), expires_in=expires_in)
        return token
