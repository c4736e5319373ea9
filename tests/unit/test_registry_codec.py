"""The run-time registry's entries (worker.registry.codec): the file's validators, secrets given directly
encrypted and never shown, ``*_env`` references resolved per process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import TEST_SECRET_KEY
from worker.crypto import WireCipher, generate_key
from worker.registry.codec import EntryError, masked, materialize, prepare
from worker.vendors.base import MASK

CIPHER = WireCipher.parse(TEST_SECRET_KEY)
SECRET = "s3cret-value-0123456789"
LT = {"vendor": "ltiaas", "base_url": "https://acme.ltiaas.com/"}


def problems(entry: Any, *, cipher: WireCipher | None = CIPHER, limit: float | None = None) -> list[tuple[str, str]]:
    with pytest.raises(EntryError) as info:
        prepare("acme", entry, cipher=cipher, environ={}, attempt_time_limit=limit)
    return info.value.problems


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ({"vendor": "moodle", "base_url": "https://x"}, "vendor", "must be one of learningstudio"),
        ({"base_url": "https://x"}, "vendor", "required"),
        ({**LT, "base_url": "ftp://x", "api_key_env": "K"}, "base_url", "must start with http"),
        (LT, "api_key_env", "Field required"),
        ({**LT, "api_key_env": "K", "timeout": 0}, "timeout", "greater than 0"),
        ({**LT, "api_key_env": "K", "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ({**LT, "api_key": SECRET, "api_key_env": "K"}, "api_key", "not both"),
        ({**LT, "api_key": ""}, "api_key", "non-empty string"),
        ({**LT, "api_key": 12}, "api_key", "non-empty string"),
        ({**LT, "api_key_env": "K", "name": "other"}, "name", "not a key"),
        ("not a table", "", "must be a table"),
    ],
)
def test_invalid_entries_name_the_key(entry: Any, key: str, message: str) -> None:
    found = problems(entry)
    assert any(k == key and message in m for k, m in found), found


def test_the_settings_rules_that_need_the_settings_apply() -> None:
    found = problems({**LT, "api_key_env": "K", "timeout": 30}, limit=75)
    assert found and found[0][0] == "timeout" and "attempt time limit" in found[0][1]


def test_a_direct_secret_needs_the_encryption_key() -> None:
    found = problems({**LT, "api_key": SECRET}, cipher=None)
    assert found == [("api_key", found[0][1])] and "GRADESYNC_SECRET_KEY" in found[0][1]


def test_a_direct_secret_is_stored_encrypted_and_shown_masked() -> None:
    prepared = prepare("acme", {**LT, "api_key": SECRET}, cipher=CIPHER, environ={})
    assert SECRET not in prepared.stored
    assert prepared.secrets == {"api_key": SECRET}
    doc = json.loads(prepared.stored)
    assert doc["secrets"]["api_key"].startswith("fernet:") and "api_key" not in doc["config"]
    assert prepared.destination.secret("api_key").get_secret_value() == SECRET  # type: ignore[union-attr]
    assert SECRET not in repr(prepared.destination)
    view = masked(prepared.stored)
    assert view["api_key"] == MASK and SECRET not in json.dumps(view)
    back = materialize("acme", prepared.stored, cipher=CIPHER, environ={})
    assert back == prepared.destination and back.missing_secrets() == []


def test_an_env_reference_is_resolved_by_each_process() -> None:
    prepared = prepare("acme", {**LT, "api_key_env": "ACME_KEY"}, cipher=None, environ={})
    assert prepared.destination.missing_secrets() == ["api_key_env ($ACME_KEY)"]
    here = materialize("acme", prepared.stored, cipher=None, environ={"ACME_KEY": "from-env"})
    assert here.secret("api_key").get_secret_value() == "from-env"  # type: ignore[union-attr]
    assert masked(prepared.stored) == {**LT, "api_key_env": "ACME_KEY"}


def test_a_secret_encrypted_with_another_key_is_a_problem_not_a_crash() -> None:
    prepared = prepare("acme", {**LT, "api_key": SECRET}, cipher=CIPHER, environ={})
    with pytest.raises(EntryError) as info:
        materialize("acme", prepared.stored, cipher=WireCipher.parse(generate_key()), environ={})
    assert info.value.problems[0][0] == "api_key"
    with pytest.raises(EntryError):
        materialize("acme", "{not json", cipher=CIPHER, environ={})


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"vendor": "learningstudio", "base_url": "https://x", "application_id": "a", "consumer_key": "c",
          "shared_secret": "0123456789abcdef"}, "shared_secret"),
        ({"vendor": "edlink", "base_url": "https://ed.link", "integration_token": SECRET}, "integration_token"),
        ({"vendor": "thoughtindustries", "base_url": "https://x", "api_key": SECRET}, "api_key"),
    ],
)
def test_every_vendor_takes_its_secret_directly(entry: dict[str, Any], field: str) -> None:
    prepared = prepare("v", entry, cipher=CIPHER, environ={})
    value = entry[field]
    assert value not in prepared.stored
    assert prepared.destination.secret(field).get_secret_value() == value  # type: ignore[union-attr]
    assert masked(prepared.stored)[field] == MASK


def test_a_re_applied_table_is_unchanged_only_with_the_same_secret() -> None:
    from worker.registry.codec import unchanged

    old = prepare("acme", {**LT, "api_key": SECRET}, cipher=CIPHER, environ={})
    same = prepare("acme", {**LT, "api_key": SECRET}, cipher=CIPHER, environ={})
    assert same.stored != old.stored  # a new ciphertext each time ...
    assert unchanged(old.stored, same, CIPHER)  # ... yet the same entry
    assert not unchanged(old.stored, prepare("acme", {**LT, "api_key": SECRET + "x"}, cipher=CIPHER, environ={}),
                         CIPHER)
    assert not unchanged(old.stored, prepare("acme", {**LT, "api_key": SECRET, "timeout": 5}, cipher=CIPHER,
                                             environ={}), CIPHER)
    assert not unchanged(None, same, CIPHER)
    assert not unchanged(old.stored, same, WireCipher.parse(generate_key()))  # cannot tell: a change
