"""The one redaction step."""

from __future__ import annotations

from worker.redact import MASK, excerpt, redact, redact_text


def test_secret_keys_are_masked_deeply() -> None:
    data = {"headers": {"Authorization": "Bearer abc", "X-Authorization": "OAuth realm=...", "Accept": "json"},
            "target": {"service_key": "sk", "ltik": "lk", "line_item_id": "https://x"},
            "api_key": "k", "items": [{"person_token": "pt"}], "count": 3}
    out = redact(data)
    assert out["headers"]["Authorization"] == MASK and out["headers"]["X-Authorization"] == MASK
    assert out["headers"]["Accept"] == "json"
    assert out["target"] == {"service_key": MASK, "ltik": MASK, "line_item_id": "https://x"}
    assert out["api_key"] == MASK and out["items"][0]["person_token"] == MASK and out["count"] == 3


def test_secrets_inside_text_are_scrubbed() -> None:
    text = ('sent Authorization: Bearer tok123 and SERVICE-AUTH-V1 apikey:servicekey to ?jwt=eyJhbGciOi.eyJzdWIi.sig '
            'with oauth_signature="abc%3D" and LTIK-AUTH-V2 k:l')
    out = redact_text(text)
    for secret in ("tok123", "apikey:servicekey", "eyJhbGciOi", "abc%3D", "k:l"):
        assert secret not in out
    assert "Bearer " + MASK in out


def test_excerpt_is_short_and_redacted() -> None:
    long = "Bearer secret-token " + "x" * 1000
    ex = excerpt(long, limit=50)
    assert ex is not None and len(ex) == 50 and "secret-token" not in ex
    assert excerpt(None) is None
    assert excerpt(b"ok") == "ok"
