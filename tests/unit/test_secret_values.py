"""Masking known secret values in every encoding, and the encryption of stored events (issue 9, 1-2)."""

from __future__ import annotations

import base64
import html
import json
from urllib.parse import quote, quote_plus

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from worker import errors
from worker.crypto import PREFIX, UndecryptableRecord, WireCipher, generate_key
from worker.events import GradeEvent
from worker.known_secrets import EVENT_SECRET_FIELDS, destination_secrets, event_secrets, scrub_error, wire_secrets
from worker.redact import MASK, known_secrets, mask_known, redact, redact_text
from worker.settings import ConfigError, Settings
from worker.vendors.ltiaas import LtiaasDestination

SECRET = 'sk/live+"q"&x=1'


@pytest.mark.parametrize("form", [
    SECRET,
    quote(SECRET, safe=""),
    quote_plus(SECRET),
    json.dumps(SECRET)[1:-1],
    base64.b64encode(f"{SECRET}:".encode()).decode(),
    base64.b64encode(f"ab:{SECRET}".encode()).decode(),
    base64.b64encode(f"a:{SECRET}".encode()).decode(),
    base64.urlsafe_b64encode(f"{SECRET}:".encode()).decode(),
    json.dumps(SECRET)[1:-1].replace("/", "\\/"),  # PHP-style escaped slashes
    html.escape(SECRET),
    quote(SECRET, safe="").lower(),
])
def test_a_bound_secret_is_masked_in_each_encoding(form: str) -> None:
    text = f"vendor said: Authorization rejected [{form}] for you"
    assert form in text
    with known_secrets([SECRET]):
        masked = redact_text(text)
        assert MASK in masked and form not in masked
        assert redact({"detail": [text]}) == {"detail": [masked]}
    assert redact_text(text) == text  # unbound again after the block


def test_short_values_are_not_masked_by_value_and_extra_secrets_work_without_binding() -> None:
    with known_secrets(["abc"]):
        assert mask_known("abc abc") == "abc abc"
    assert mask_known("the key is abcdef123", ["abcdef123"]) == f"the key is {MASK}"


def test_scrub_error_masks_message_vendor_message_and_excerpt() -> None:
    exc = errors.Forbidden(f"score.post: HTTP 403 {SECRET}", status=403, vendor_message=f"bad key {SECRET}",
                           excerpt=f'{{"echo": {json.dumps(SECRET)}}}')
    with known_secrets([SECRET]):
        scrub_error(exc)
    record = json.dumps(exc.as_record()) + exc.describe() + str(exc)
    assert SECRET not in record and json.dumps(SECRET)[1:-1] not in record and MASK in exc.excerpt  # type: ignore[operator]


def test_the_secrets_of_a_destination_and_an_event_are_collected() -> None:
    dest = LtiaasDestination(name="lt", vendor="ltiaas", base_url="https://x.example", api_key_env="K",
                             api_key=SecretStr("dest-api-key"))
    assert destination_secrets([dest]) == ["dest-api-key"]
    e = GradeEvent.model_validate(
        {"destination": "lt", "learner_id": "u", "target": {"line_item_id": "https://x.example/li", "ltik": "ltik-1"}},
        context={"vendors": {"lt": "ltiaas"}})
    assert event_secrets(e) == ["ltik-1"]
    assert wire_secrets(e.to_wire()) == ["ltik-1"] and wire_secrets("not json") == []
    assert EVENT_SECRET_FIELDS == ("ltik", "person_token", "service_key")  # found from the target models


# -- encryption at rest --------------------------------------------------------------------------------
def test_encrypt_decrypt_and_rotation_with_multiple_keys() -> None:
    old, new = generate_key(), generate_key()
    stored = WireCipher.parse(old).encrypt('{"service_key": "s3cret"}')
    assert stored.startswith(PREFIX) and "s3cret" not in stored
    both = WireCipher.parse(f"{new}, {old}")
    assert both.decrypt(stored) == '{"service_key": "s3cret"}'  # any listed key decrypts
    rotated = both.rotate(stored)
    assert WireCipher.parse(new).decrypt(rotated) == '{"service_key": "s3cret"}'  # first key encrypts
    with pytest.raises(UndecryptableRecord, match="not in GRADESYNC_SECRET_KEY"):
        WireCipher.parse(new).decrypt(stored)
    assert both.decrypt('{"plain": 1}') == '{"plain": 1}'  # a record from before encryption
    assert both.rotate('{"plain": 1}').startswith(PREFIX)


def test_tampered_ciphertext_is_refused() -> None:
    cipher = WireCipher.parse(generate_key())
    stored = cipher.encrypt("x" * 40)
    tampered = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]
    with pytest.raises(UndecryptableRecord):
        cipher.decrypt(tampered)


def test_missing_and_malformed_keys_are_clear_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"GRADESYNC_SECRET_KEY is not set.*gradesync keys generate"):
        WireCipher.from_settings(Settings(secret_key=None))
    with pytest.raises(ConfigError, match="key 1 of 1 is not a Fernet key"):
        WireCipher.from_settings(Settings(secret_key=SecretStr("too-short")))
    with pytest.raises(ConfigError, match="key 2 of 2"):
        WireCipher.parse(f"{Fernet.generate_key().decode()},{'A' * 43}")
    assert WireCipher.optional(Settings(secret_key=SecretStr("  "))) is None


def test_keys_generate_prints_a_usable_key() -> None:
    from click.testing import CliRunner

    from worker.cli import cli

    result = CliRunner().invoke(cli, ["keys", "generate"])
    assert result.exit_code == 0
    key = result.output.strip()
    assert WireCipher.parse(key).decrypt(WireCipher.parse(key).encrypt("x")) == "x"
