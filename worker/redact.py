"""One redaction step for everything gradesync prints, logs or shows: headers, tokens, keys, signatures.

Used by the structlog processor chain, by vendor-answer excerpts and by the ops pages.

Two layers. **Patterns** mask what looks like a secret (``Bearer …``, ``oauth_signature=…``, a JWT,
a secret-named mapping key). **Known values** mask the secrets gradesync actually holds, wherever and
however they appear: the destinations' credentials (registered once per process with
:func:`register_secrets`) and the per-event ``service_key`` / ``ltik`` / ``person_token`` of the event
being delivered (bound for the delivery run with :func:`bind_secrets`). A value is also
masked in its common encodings (:func:`encodings`): URL-encoded, JSON-escaped, and inside base64 at any
alignment (a vendor echoing ``Authorization: Basic base64(key:…)``). Known values apply to every
:func:`redact` call — the log processor, the ledger records, the ops views — so one echo of a credential
in a vendor's error body is masked before it is stored or logged.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "**********"

#: a mapping key whose value is a secret (case-insensitive substring match)
_SECRET_KEY = re.compile(
    r"(authorization|token|secret|password|passwd|api[_-]?key|apikey|signature|ltik|service[_-]?key|"
    r"cookie|jwt|credential|private[_-]?key|consumer[_-]?key|session)",
    re.IGNORECASE,
)
#: secrets inside free text (a vendor's echo of our request, an exception message, a URL)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(Bearer|Basic|Access_Token(?:\s+access_token=)?)\s+[^\s\"',;]+"), r"\1 " + MASK),
    (re.compile(r"(?i)\b(SERVICE-AUTH-V1|LTIK-AUTH-V2|LTIK-AUTH-V1)\s+[^\s\"',;]+"), r"\1 " + MASK),
    (re.compile(r"(?i)(oauth_signature|oauth_nonce|signature)=(\"?)[^\",&\s]+"), r"\1=\2" + MASK),
    (re.compile(r"(?i)([?&](?:jwt|token|ltik|api_key|key|access_token)=)[^&\s\"']+"), r"\1" + MASK),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),  # a JWT
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL), MASK),
)

#: what every match of one of :data:`_PATTERNS` contains (case-insensitive): text without any of these
#: skips the substitutions (they ran on every string of every log line)
_MAY_MATCH = re.compile(r"(?i)bearer|basic|access_token|service-auth-v1|ltik-auth-v|=|eyj|-----begin")


#: known values shorter than this are not masked by value (they would mask ordinary words)
MIN_SECRET_LENGTH = 6
#: base64 runs shorter than this are not masked (too likely to occur by chance)
_MIN_B64 = 8

_LOWER_HEX = re.compile(r"%[0-9A-F]{2}")

_process_secrets: frozenset[str] = frozenset()
_bound_secrets: ContextVar[frozenset[str]] = ContextVar("gradesync_bound_secrets", default=frozenset())


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def register_secrets(values: Iterable[str | None]) -> None:
    """Secrets every :func:`redact` call of this process masks by value (the destinations' credentials)."""
    global _process_secrets
    _process_secrets = _process_secrets | {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}


def bind_secrets(values: Iterable[str | None]) -> None:
    """Mask ``values`` too, in this thread / task, until :func:`clear_secrets` (one event's credentials;
    the delivery task clears them with its log context, :func:`worker.logs.clear`)."""
    _bound_secrets.set(_bound_secrets.get() | {v for v in values if v and len(v) >= MIN_SECRET_LENGTH})


def clear_secrets() -> None:
    _bound_secrets.set(frozenset())


@contextmanager
def known_secrets(values: Iterable[str | None]) -> Iterator[None]:
    """Mask ``values`` too, in this thread / task, until the block ends."""
    token = _bound_secrets.set(_bound_secrets.get() | {v for v in values if v and len(v) >= MIN_SECRET_LENGTH})
    try:
        yield
    finally:
        _bound_secrets.reset(token)


def _b64_runs(raw: bytes) -> set[str]:
    """Substrings that every base64 encoding containing ``raw`` contains, one per byte alignment."""
    runs: set[str] = set()
    for skip in range(3):
        core = raw[skip:]
        core = core[: len(core) // 3 * 3]
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            run = encode(core).decode("ascii")
            if len(run) >= _MIN_B64:
                runs.add(run)
    return runs


@lru_cache(maxsize=1024)
def encodings(secret: str) -> tuple[str, ...]:
    """``secret`` and the forms it takes when echoed back, longest first."""
    escaped = json.dumps(secret)[1:-1]
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), escaped,
             escaped.replace("/", "\\/"), json.dumps(secret, ensure_ascii=False)[1:-1], html.escape(secret)}
    forms |= {_LOWER_HEX.sub(lambda m: m.group(0).lower(), f) for f in forms if "%" in f}
    forms |= _b64_runs(secret.encode("utf-8"))
    return tuple(sorted((f for f in forms if len(f) >= MIN_SECRET_LENGTH), key=len, reverse=True))


@lru_cache(maxsize=256)
def _needles(secrets: frozenset[str]) -> tuple[str, ...]:
    forms = {form for secret in secrets for form in encodings(secret)}
    return tuple(sorted(forms, key=len, reverse=True))


def _current_needles(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Every form of every secret known here and now (process, bound to this task, ``extra``), longest
    first."""
    secrets = _process_secrets | _bound_secrets.get()
    extra_set = frozenset(e for e in extra if e and len(e) >= MIN_SECRET_LENGTH) if extra else frozenset()
    if extra_set:
        secrets = secrets | extra_set
    return _needles(frozenset(secrets)) if secrets else ()


def _mask(text: str, needles: tuple[str, ...]) -> str:
    if len(text) < MIN_SECRET_LENGTH:  # no masked form is this short
        return text
    for needle in needles:
        if needle in text:
            text = text.replace(needle, MASK)
    return text


def mask_known(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every known secret value (and its encodings) replaced by the mask."""
    if len(text) < MIN_SECRET_LENGTH:
        return text
    return _mask(text, _current_needles(extra))


def _patterns(text: str) -> str:
    if _MAY_MATCH.search(text):
        for pattern, repl in _PATTERNS:
            text = pattern.sub(repl, text)
    return text


@lru_cache(maxsize=4096)
def _key(key: str) -> tuple[bool, str]:
    """A mapping key: whether its value is a secret, and the key with the patterns applied (keys come
    from a small vocabulary, so both are cached; known values are still masked per call)."""
    return is_secret_key(key), _patterns(key)


def redact_text(text: str) -> str:
    return mask_known(_patterns(text))


def redact(value: Any, *, extra_secrets: tuple[str, ...] = ()) -> Any:
    """A deep copy of ``value`` with secret-named keys masked and secret-looking or known-secret text
    scrubbed (``extra_secrets``: more values to mask by value)."""
    return _redact(value, _current_needles(extra_secrets))


_PLAIN = (int, float, bool, type(None))


def _redact(value: Any, needles: tuple[str, ...]) -> Any:
    # exact-type checks first: this runs on every value of every log line, and an isinstance() against
    # the Mapping ABC costs more than the rest of the work for a number
    kind = type(value)
    if kind is str:
        return _mask(_patterns(value), needles)
    if kind in _PLAIN:
        return value
    if kind is dict or isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str):
                secret_key, cleaned = _key(k)
                if secret_key and v not in (None, "", MASK):
                    out[k] = MASK
                else:
                    out[_mask(cleaned, needles)] = _redact(v, needles)
            else:
                out[k] = _redact(v, needles)
        return out
    if isinstance(value, (list, tuple)):
        return [_redact(v, needles) for v in value]
    if isinstance(value, str):  # a str subclass
        return _mask(_patterns(value), needles)
    return value


def excerpt(text: str | bytes | None, limit: int = 300) -> str | None:
    """A short, redacted excerpt of a vendor's answer, for the ledger."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = redact_text(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"
