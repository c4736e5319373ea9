"""One redaction step for everything gradesync prints, logs or shows: headers, tokens, keys, signatures.

Used by the structlog processor chain, by vendor-answer excerpts and by the ops pages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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
)


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def redact_text(text: str) -> str:
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact(value: Any, *, extra_secrets: tuple[str, ...] = ()) -> Any:
    """A deep copy of ``value`` with secret-named keys masked and secret-looking text scrubbed."""
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if isinstance(k, str) and is_secret_key(k) and v not in (None, "", MASK):
                out[k] = MASK
            else:
                out[k] = redact(v, extra_secrets=extra_secrets)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(v, extra_secrets=extra_secrets) for v in value]
    if isinstance(value, str):
        text = redact_text(value)
        for secret in extra_secrets:
            if secret and len(secret) >= 4:
                text = text.replace(secret, MASK)
        return text
    return value


def excerpt(text: str | bytes | None, limit: int = 300) -> str | None:
    """A short, redacted excerpt of a vendor's answer, for the ledger."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = redact_text(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"
