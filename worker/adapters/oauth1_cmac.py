"""Pearson's OAuth 1.0a with CMAC-AES signatures: pure functions, no I/O.

The algorithm is the one of Pearson's Java SDK (``OAuth1SignatureService``), step by step:

1. OAuth params, in this order for the header: ``oauth_consumer_key``, ``application_id``,
   ``oauth_signature_method`` = ``CMAC-AES``, ``oauth_timestamp`` (epoch seconds), ``oauth_nonce``
   (32 random alphanumerics). There is no ``oauth_version``.
2. Normalized params: those (no signature) plus the URL's query params (values as they appear in the
   URL), sorted by key case-insensitively. POST and PUT add ``body`` = Base64(body bytes), URL-encoded
   twice.
3. ``key=value`` joined with ``&``, then the whole string URL-encoded once.
4. Base string: ``METHOD&urlencode(raw path)&<step 3>``.
5. Signature: Base64(AES-CMAC(key = the shared secret's UTF-8 bytes, message = base string UTF-8)).
6. Header: ``OAuth realm="<URL without query>",k="urlencode(v)",…,oauth_signature="…"`` (no spaces).

URL-encoding is Java's ``URLEncoder.encode(s, "UTF-8")`` throughout (see :func:`java_urlencode`).
:func:`verify` is the server side, used by the simulator.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus, urlsplit

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from worker.errors import ConfigurationError

SIGNATURE_METHOD = "CMAC-AES"
NONCE_LENGTH = 32
#: accepted clock difference between signer and verifier, in seconds
DEFAULT_MAX_SKEW = 300.0
#: the header's OAuth params, in the SDK's order (the signature comes last)
OAUTH_PARAMS: tuple[str, ...] = (
    "oauth_consumer_key",
    "application_id",
    "oauth_signature_method",
    "oauth_timestamp",
    "oauth_nonce",
)
AES_KEY_SIZES = (16, 24, 32)

_ALPHANUMERIC = string.ascii_letters + string.digits
_JAVA_UNRESERVED = frozenset(_ALPHANUMERIC + ".-*_")
_HEADER_PARAM = re.compile(r'\s*([A-Za-z0-9_]+)="([^"]*)"\s*(?:,|$)')


class SignatureInvalid(ValueError):
    """The X-Authorization header is missing, malformed or does not verify (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def java_urlencode(value: str) -> str:
    """``java.net.URLEncoder.encode(value, "UTF-8")``.

    Letters, digits and ``.-*_`` stay; a space becomes ``+``; every other character becomes its UTF-8
    bytes as upper-case ``%XX`` (``~`` included, unlike :func:`urllib.parse.quote`).
    """
    out: list[str] = []
    for ch in value:
        if ch in _JAVA_UNRESERVED:
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8", errors="replace"))
    return "".join(out)


def secret_key(secret: str) -> bytes:
    """The AES key: the shared secret's UTF-8 bytes, which must be 16, 24 or 32 bytes long."""
    key = secret.encode("utf-8")
    if len(key) not in AES_KEY_SIZES:
        raise ConfigurationError(
            f"the shared secret must be 16, 24 or 32 bytes of UTF-8 (an AES key), "
            f"not {len(key)} bytes"
        )
    return key


def aes_cmac(key: bytes, message: bytes) -> bytes:
    """AES-CMAC (RFC 4493) of ``message``: the 16-byte tag."""
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


def make_nonce() -> str:
    """32 random alphanumerics from :mod:`secrets`."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(NONCE_LENGTH))


def split_url(url: str) -> tuple[str, str, str]:
    """``(realm, raw path, raw query)``: the realm is the URL up to its ``?``, as the SDK cuts it."""
    parts = urlsplit(url)
    return url.split("?", 1)[0], parts.path, parts.query


def _query_params(query: str) -> list[tuple[str, str]]:
    """The query's ``key=value`` pairs as written in the URL (not decoded), like the SDK's split."""
    pairs: list[tuple[str, str]] = []
    for item in query.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((key, value.split("=", 1)[0]))
    return pairs


def normalized_params(method: str, oauth_params: Mapping[str, str], query: str, body: bytes | None) -> str:
    """Steps 2 and 3: the sorted ``k=v&…`` string, URL-encoded once."""
    # a case-insensitive map, like the SDK's TreeMap: lower-cased key -> (first spelling, value)
    params: dict[str, tuple[str, str]] = {}

    def put(key: str, value: str) -> None:
        first = params.get(key.lower(), (key, ""))[0]
        params[key.lower()] = (first, value)

    for key, value in oauth_params.items():
        put(key, value)
    for key, value in _query_params(query):
        put(key, value)
    if method.upper() in ("POST", "PUT"):
        encoded = base64.b64encode(body or b"").decode("ascii")
        put("body", java_urlencode(java_urlencode(encoded)))
    joined = "&".join(f"{key}={value}" for _, (key, value) in sorted(params.items()))
    return java_urlencode(joined)


def base_string(method: str, url: str, oauth_params: Mapping[str, str], body: bytes | None) -> str:
    """Step 4: ``METHOD&urlencode(raw path)&normalized params``."""
    _, path, query = split_url(url)
    method = method.upper()
    return f"{method}&{java_urlencode(path)}&{normalized_params(method, oauth_params, query, body)}"


def signature(base: str, secret: str) -> str:
    """Step 5: Base64 of the AES-CMAC of the base string, keyed with the shared secret."""
    return base64.b64encode(aes_cmac(secret_key(secret), base.encode("utf-8"))).decode("ascii")


def format_header(realm: str, params: Mapping[str, str]) -> str:
    """Step 6: the ``X-Authorization`` value (the realm as is, every param value URL-encoded)."""
    pairs = ",".join(f'{key}="{java_urlencode(value)}"' for key, value in params.items())
    return f'OAuth realm="{realm}",{pairs}'


def sign(
    method: str,
    url: str,
    body: bytes | None,
    *,
    consumer_key: str,
    application_id: str,
    secret: str,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> str:
    """The ``X-Authorization`` header value for one request.

    ``url`` is the absolute URL exactly as it is sent (path percent-encoding kept); ``body`` the exact
    bytes sent (only signed for POST and PUT). A fresh nonce and the current time are used unless given.
    """
    params = {
        "oauth_consumer_key": consumer_key,
        "application_id": application_id,
        "oauth_signature_method": SIGNATURE_METHOD,
        "oauth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "oauth_nonce": make_nonce() if nonce is None else nonce,
    }
    params["oauth_signature"] = signature(base_string(method, url, params, body), secret)
    realm, _, _ = split_url(url)
    return format_header(realm, params)


@dataclass(frozen=True)
class AuthorizationHeader:
    """A parsed ``X-Authorization: OAuth …`` value (param values URL-decoded)."""

    realm: str
    params: dict[str, str]

    @property
    def nonce(self) -> str:
        return self.params["oauth_nonce"]

    @property
    def timestamp(self) -> int:
        return int(self.params["oauth_timestamp"])


def parse_header(value: str) -> AuthorizationHeader:
    """Parse an ``OAuth realm="…",k="v",…`` header; :class:`SignatureInvalid` when malformed."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "oauth" or not rest:
        raise SignatureInvalid("the X-Authorization header is not an OAuth header")
    fields: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _HEADER_PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            raise SignatureInvalid("the X-Authorization header is malformed")
        key, raw = match.group(1), match.group(2)
        if key in fields:
            raise SignatureInvalid(f"the OAuth parameter {key} is repeated")
        fields[key] = raw
        pos = match.end()
    if "realm" not in fields:
        raise SignatureInvalid("the OAuth realm is missing")
    realm = fields.pop("realm")
    return AuthorizationHeader(realm, {k: unquote_plus(v) for k, v in fields.items()})


def verify(
    method: str,
    url: str,
    body: bytes | None,
    header: str,
    *,
    consumer_key: str,
    application_id: str,
    secret: str,
    now: float | None = None,
    max_skew: float = DEFAULT_MAX_SKEW,
) -> AuthorizationHeader:
    """Check a request's ``X-Authorization`` as Pearson's API does; raise :class:`SignatureInvalid`.

    ``url`` is the absolute URL the client addressed (with its query, if any). Nonce reuse is the
    caller's to check (it needs state): the parsed header is returned for that.
    """
    parsed = parse_header(header)
    params = parsed.params
    expected_names = (*OAUTH_PARAMS, "oauth_signature")
    missing = [name for name in expected_names if not params.get(name)]
    if missing:
        raise SignatureInvalid(f"missing OAuth parameter {missing[0]}")
    unexpected = sorted(set(params) - set(expected_names))
    if unexpected:
        raise SignatureInvalid(f"unexpected OAuth parameter {unexpected[0]}")
    realm, _, _ = split_url(url)
    if parsed.realm != realm:
        raise SignatureInvalid("the OAuth realm does not match the request URL")
    if params["oauth_signature_method"] != SIGNATURE_METHOD:
        raise SignatureInvalid(f"unsupported signature method (expected {SIGNATURE_METHOD})")
    if not hmac.compare_digest(params["oauth_consumer_key"].encode(), consumer_key.encode()):
        raise SignatureInvalid("invalid consumer key")
    if params["application_id"] != application_id:
        raise SignatureInvalid("invalid application id")
    if not params["oauth_timestamp"].isascii() or not params["oauth_timestamp"].isdigit():
        raise SignatureInvalid("the OAuth timestamp is not a number of seconds")
    current = time.time() if now is None else now
    if abs(current - parsed.timestamp) > max_skew:
        raise SignatureInvalid("the OAuth timestamp has expired or is in the future")
    nonce = params["oauth_nonce"]
    if len(nonce) > NONCE_LENGTH or not all(ch in _ALPHANUMERIC for ch in nonce):
        raise SignatureInvalid(f"the OAuth nonce must be at most {NONCE_LENGTH} alphanumerics")
    oauth_params = {name: params[name] for name in OAUTH_PARAMS}
    expected = signature(base_string(method, url, oauth_params, body), secret)
    if not hmac.compare_digest(expected.encode(), params["oauth_signature"].encode()):
        raise SignatureInvalid("invalid signature")
    return parsed
