"""The RS256 client assertion and the shared token cache of lti_ags (httpx.MockTransport, in-memory cache)."""

from __future__ import annotations

import httpx
import jwt
import pytest

from tests.unit.lti_support import (
    CLIENT_ID,
    LINEITEM,
    SCORE,
    TOKEN_URL,
    DictCache,
    Platform,
    context,
    destination,
    key,
    token_answer,
)
from worker import errors
from worker.adapters.lti_auth import (
    ASSERTION_TYPE,
    TOKEN_LOCK_NAMESPACE,
    TOKEN_NAMESPACE,
    AccessToken,
    TokenSource,
    build_assertion,
    refresh_margin,
)

SCOPES = (SCORE, LINEITEM)


def decode(assertion: str, audience: str = TOKEN_URL) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(assertion, key().public, algorithms=["RS256"], audience=audience,
                                           options={"verify_exp": False})
    return claims


def test_assertion_claims_header_and_lifetime() -> None:
    assertion = build_assertion(client_id=CLIENT_ID, audience=TOKEN_URL, key=key(), now=1_700_000_000.7)
    header = jwt.get_unverified_header(assertion)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": key().kid}
    claims = decode(assertion)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert claims["iat"] == 1_700_000_000
    assert claims["exp"] == 1_700_000_300  # 5 minutes, the ceiling
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 20


def test_assertion_expires_and_jti_is_unique() -> None:
    a = build_assertion(client_id=CLIENT_ID, audience=TOKEN_URL, key=key(), now=1_000_000.0)
    b = build_assertion(client_id=CLIENT_ID, audience=TOKEN_URL, key=key(), now=1_000_000.0)
    assert decode(a)["jti"] != decode(b)["jti"]
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(a, key().public, algorithms=["RS256"], audience=TOKEN_URL)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(a, key(1).public, algorithms=["RS256"], audience=TOKEN_URL, options={"verify_exp": False})


def test_token_request_form_and_configured_audience() -> None:
    platform = Platform()
    dest = destination(audience="https://api.brightspace.com/auth/token")
    source = TokenSource(dest, context(platform, dest))
    token = source.token(SCOPES)
    assert token.value == "tok-1"
    assert token.granted == SCOPES
    (form,) = platform.token_requests
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == ASSERTION_TYPE
    assert form["scope"] == f"{SCORE} {LINEITEM}"
    assert decode(form["client_assertion"], "https://api.brightspace.com/auth/token")["aud"] == dest.audience


def test_tokens_are_cached_per_scope_set_until_the_margin() -> None:
    now = [1000.0]
    platform = Platform(tokens=[token_answer("tok-1"), token_answer("tok-2"), token_answer("tok-3")])
    cache = DictCache()
    source = TokenSource(destination(), context(platform, cache=cache), clock=lambda: now[0])
    assert source.token(SCOPES).value == "tok-1"
    assert source.token(tuple(reversed(SCOPES))).value == "tok-1"  # same set, any order
    # a second worker (another TokenSource on the same shared cache) reuses it
    other = TokenSource(destination(), context(platform, cache=cache), clock=lambda: now[0])
    assert other.token(SCOPES).value == "tok-1"
    assert len(platform.token_requests) == 1
    assert source.token((SCORE,)).value == "tok-2"  # another scope set, another token
    ttl = cache.ttls[(TOKEN_NAMESPACE, source.cache_key(SCOPES))]
    assert ttl == 3600 - refresh_margin(3600) == 3300
    now[0] += 3300  # refreshed *before* expiry
    assert source.token(SCOPES).value == "tok-3"
    assert len(platform.token_requests) == 3


def test_refresh_replaces_a_refused_token_once_or_takes_another_workers() -> None:
    platform = Platform(tokens=[token_answer("tok-1"), token_answer("tok-2"), token_answer("tok-3")])
    cache = DictCache()
    source = TokenSource(destination(), context(platform, cache=cache))
    first = source.token(SCOPES)
    second = source.refresh(SCOPES, first)
    assert second.value == "tok-2"
    # a worker still holding tok-1 gets tok-2 from the cache without asking the platform
    assert source.refresh(SCOPES, first).value == "tok-2"
    assert len(platform.token_requests) == 2


def test_invalid_grant_is_retried_once_with_a_fresh_assertion() -> None:
    refused = httpx.Response(400, json={"error": "invalid_grant", "error_description": "iat in the future"})
    platform = Platform(tokens=[refused, token_answer("tok-ok")])
    assert TokenSource(destination(), context(platform)).token(SCOPES).value == "tok-ok"
    a, b = (f["client_assertion"] for f in platform.token_requests)
    assert decode(a)["jti"] != decode(b)["jti"]


@pytest.mark.parametrize(("answer", "cls"), [
    (httpx.Response(401, json={"error": "invalid_client", "error_description": "unknown kid"}),
     errors.AuthenticationFailed),
    (httpx.Response(400, json={"error": "invalid_scope"}), errors.AuthenticationFailed),
    (httpx.Response(400, json={"error": "invalid_grant"}), errors.AuthenticationFailed),
    (httpx.Response(503), errors.VendorUnavailable),
    (httpx.Response(503, headers={"Retry-After": "7"}), errors.RateLimited),  # an overload that says when
    (httpx.Response(429, headers={"Retry-After": "3"}), errors.RateLimited),
    (httpx.Response(200, json={"token_type": "Bearer"}), errors.UnexpectedResponse),
    (httpx.Response(200, json={"access_token": "x", "token_type": "mac"}), errors.UnexpectedResponse),
])
def test_token_errors(answer: httpx.Response, cls: type[errors.DeliveryError]) -> None:
    platform = Platform(tokens=[answer])
    with pytest.raises(errors.DeliveryError) as info:
        TokenSource(destination(), context(platform)).token(SCOPES)
    assert type(info.value) is cls
    if cls is errors.AuthenticationFailed:
        assert CLIENT_ID in info.value.message and SCORE in info.value.message
    if "Retry-After" in answer.headers:
        assert info.value.retry_after == float(answer.headers["Retry-After"])


def test_a_token_never_appears_in_errors() -> None:
    platform = Platform(tokens=[httpx.Response(400, json={"error": "invalid_client", "error_description": "bad"})])
    with pytest.raises(errors.AuthenticationFailed) as info:
        TokenSource(destination(), context(platform)).token(SCOPES)
    record = str(info.value.as_record())
    assert "BEGIN" not in record and "client_assertion" not in record


def test_cached_token_round_trip() -> None:
    token = AccessToken("v", (SCORE,), 12.5)
    assert AccessToken.from_json(token.as_json()) == token
    assert AccessToken.from_json({"nope": 1}) is None


class LockedCache(DictCache):
    """Another worker holds the token lock; its token lands in the cache after ``after`` polls (or never)."""

    def __init__(self, token: AccessToken | None, after: int, released_after: int | None = None) -> None:
        super().__init__()
        self.token, self.after, self.polls = token, after, 0
        self.released_after, self.lock_checks = released_after, 0

    def add_json(self, namespace: str, key: str, value: object, ttl_seconds: int) -> bool:
        return False

    def get_json(self, namespace: str, key: str) -> object | None:
        if namespace == TOKEN_NAMESPACE:
            self.polls += 1
            if self.token is not None and self.polls > self.after:
                return self.token.as_json()
        if namespace == TOKEN_LOCK_NAMESPACE:
            self.lock_checks += 1
            return None if self.released_after is not None and self.lock_checks > self.released_after else 1
        return super().get_json(namespace, key)


def test_one_worker_asks_while_the_others_wait_for_its_token() -> None:
    platform = Platform()
    theirs = AccessToken("their-token", SCOPES, 10_000_000_000.0)
    sleeps: list[float] = []
    source = TokenSource(destination(), context(platform, cache=LockedCache(theirs, after=3)), sleep=sleeps.append)
    assert source.token(SCOPES).value == "their-token"
    assert platform.token_requests == [] and len(sleeps) == 3


def test_a_waiting_worker_asks_itself_when_the_lock_holder_never_answers() -> None:
    platform = Platform()
    sleeps: list[float] = []
    source = TokenSource(destination(), context(platform, cache=LockedCache(None, after=0)), sleep=sleeps.append)
    assert source.token(SCOPES).value == "tok-1"
    # it waited two request timeouts (+1 s) of the destination (10 s default) before asking itself
    assert len(platform.token_requests) == 1 and sum(sleeps) == pytest.approx(21.0)


def test_expires_in_as_a_string_is_understood() -> None:
    answer = httpx.Response(200, json={"access_token": "t", "token_type": "bearer", "expires_in": "600"})
    cache = DictCache()
    source = TokenSource(destination(), context(Platform(tokens=[answer]), cache=cache), clock=lambda: 0.0)
    assert source.token(SCOPES).expires_at == 600 - refresh_margin(600) == 540


def test_a_waiting_worker_asks_at_once_when_the_asking_worker_gives_up() -> None:
    platform = Platform()
    sleeps: list[float] = []
    source = TokenSource(destination(), context(platform, cache=LockedCache(None, after=0, released_after=2)),
                         sleep=sleeps.append)
    assert source.token(SCOPES).value == "tok-1"
    assert len(platform.token_requests) == 1 and len(sleeps) == 3


def test_the_lock_winner_looks_again_before_asking() -> None:
    """The previous holder stored its token and released the lock between our cache miss and our lock."""
    platform = Platform()

    class JustReleased(DictCache):
        def add_json(self, namespace: str, key: str, value: object, ttl_seconds: int) -> bool:
            self.set_json(TOKEN_NAMESPACE, key, AccessToken("fresh", SCOPES, 10_000_000_000.0).as_json(), 60)
            return super().add_json(namespace, key, value, ttl_seconds)

    source = TokenSource(destination(), context(platform, cache=JustReleased()))
    assert source.token(SCOPES).value == "fresh"
    assert platform.token_requests == []
