"""The lti_ags destination config: key rules as settings validators (worker and config check agree),
rotation keys, the target model, and the published JWK Set."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.unit.lti_support import BASE, TOKEN_URL, VENDORS, key
from worker.events import GradeEvent
from worker.kube.plan import ClusterConfig, load_config, make_plan
from worker.lti_keys import KeyProblem, jwks, load_key, thumbprint
from worker.settings import ConfigError, parse_destinations
from worker.vendors.lti import LtiAgsDestination


def raw(**over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"vendor": "lti_ags", "base_url": BASE, "client_id": "c-1", "token_url": TOKEN_URL,
                             "private_key_env": "LTI_KEY", "kid": key().kid}
    entry.update(over)
    return {"destinations": {"canvas": entry}}


def env(**extra: str) -> dict[str, str]:
    return {"LTI_KEY": key().private_pem().decode(), **extra}


def test_a_valid_destination_and_its_defaults() -> None:
    (dest,) = parse_destinations(raw(), environ=env()).values()
    assert isinstance(dest, LtiAgsDestination)
    assert dest.audience is None and dest.rotation_keys == ()
    assert dest.scopes == ("https://purl.imsglobal.org/spec/lti-ags/scope/score",
                           "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem")
    assert dest.missing_secrets() == []


def test_the_kid_must_be_the_keys_thumbprint() -> None:
    with pytest.raises(ConfigError) as info:
        parse_destinations(raw(kid="my-key-2024"), environ=env())
    text = str(info.value)
    assert "'canvas'" in text and "kid 'my-key-2024' does not match the key" in text and key().kid in text
    assert "BEGIN" not in text  # never the key material


def test_a_non_rsa_or_short_or_garbled_key_is_refused() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - refused on purpose
    short_pem = short.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    for pem, words in ((ec_pem, "not RSA"), (short_pem, "1024 bits"),
                       ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "does not parse"),
                       ("just text", "no '-----BEGIN")):
        with pytest.raises(ConfigError, match=words):
            parse_destinations(raw(), environ={"LTI_KEY": pem})
    with pytest.raises(KeyProblem, match="not RSA"):
        load_key(ec_pem)


def test_a_missing_key_variable_is_a_missing_secret_not_a_parse_error() -> None:
    (dest,) = parse_destinations(raw(rotation_keys=[{"kid": key(1).kid, "key_env": "LTI_NEXT"}]), environ={}).values()
    assert dest.missing_secrets() == ["private_key_env ($LTI_KEY)", "rotation_keys.key_env ($LTI_NEXT)"]


def test_rotation_keys_may_be_public_and_must_match_their_kid() -> None:
    public = key(1).public_pem().decode()
    (dest,) = parse_destinations(raw(rotation_keys=[{"kid": key(1).kid, "key_env": "LTI_NEXT"}]),
                                 environ=env(LTI_NEXT=public)).values()
    assert isinstance(dest, LtiAgsDestination) and dest.rotation_keys[0].key is not None
    with pytest.raises(ConfigError, match=r"rotation_keys\[0\]"):
        parse_destinations(raw(rotation_keys=[{"kid": key().kid, "key_env": "LTI_NEXT"}]),
                           environ=env(LTI_NEXT=public))


def test_keys_are_never_written_in_the_file() -> None:
    with pytest.raises(ConfigError, match="secrets are never written"):
        parse_destinations(raw(private_key="-----BEGIN PRIVATE KEY-----"), environ=env())
    with pytest.raises(ConfigError, match="never written in the file"):
        parse_destinations(raw(rotation_keys=[{"kid": "k", "key_env": "X", "key": "pem"}]), environ=env())


def test_the_signing_key_must_be_private() -> None:
    with pytest.raises(ConfigError, match="private key PEM"):
        parse_destinations(raw(), environ={"LTI_KEY": key().public_pem().decode()})


def test_jwks_publishes_public_halves_once_per_kid() -> None:
    doc = jwks([key(), key(1), key()])
    assert [k["kid"] for k in doc["keys"]] == [key().kid, key(1).kid]
    first = doc["keys"][0]
    assert set(first) == {"kty", "n", "e", "kid", "alg", "use"} and first["alg"] == "RS256"
    assert "d" not in first and "p" not in first
    assert thumbprint(key().public) == key().kid


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 §3.1: the thumbprint of its example key is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs
    modulus = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
        "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1"
        "n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw=="
    )
    n = int.from_bytes(base64.urlsafe_b64decode(modulus), "big")
    public = rsa.RSAPublicNumbers(65537, n).public_key()
    assert thumbprint(public) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_target_needs_one_way_to_name_the_line_item() -> None:
    def make(target: dict[str, Any]) -> GradeEvent:
        return GradeEvent.model_validate({"destination": "lti", "learner_id": "u", "target": target}, context=VENDORS)

    assert make({"line_item_url": f"{BASE}/li/1?type_id=2"}).item_key() == f"{BASE}/li/1?type_id=2"
    by_link = make({"lineitems_url": f"{BASE}/li", "resource_link_id": "rl", "tag": "grade"})
    assert by_link.item_key() == f"{BASE}/li#rl##grade"
    for bad in ({}, {"lineitems_url": f"{BASE}/li"}, {"line_item_url": "ftp://x/y"},
                {"line_item_url": f"{BASE}/a", "lineitems_url": f"{BASE}/li", "resource_link_id": "r"}):
        with pytest.raises(ValueError):
            make(bad)


def test_a_private_key_pem_in_text_is_redacted() -> None:
    from worker.redact import MASK, redact, redact_text

    pem = key().private_pem().decode().strip()
    assert redact_text(f"oops: {pem} end") == f"oops: {MASK} end"
    assert redact_text(f"cut short {pem[:80]}") == f"cut short {MASK}"
    assert redact({"private_key": pem, "note": pem}) == {"private_key": MASK, "note": MASK}


def test_the_kubernetes_plan_gives_workers_every_lti_key_variable() -> None:
    """A worker refuses to start without its rotation keys' variables, so its pod must get them too."""
    root = Path(__file__).resolve().parents[2]
    example = load_config(root / "deploy" / "kubernetes" / "cluster.example.toml")
    config = ClusterConfig.model_validate({**example.model_dump(), "groups": {}})
    text = (f'[destinations.canvas]\nvendor = "lti_ags"\nbase_url = "{BASE}"\nclient_id = "c"\n'
            f'token_url = "{TOKEN_URL}"\nprivate_key_env = "CANVAS_KEY"\nkid = "{key().kid}"\n'
            f'rotation_keys = [{{ kid = "{key(1).kid}", key_env = "CANVAS_NEXT" }}]\n')
    plan = make_plan(config, text)
    (dest,) = [d for g in plan.groups for d in g.destinations]
    assert dest.secret_envs == ("CANVAS_KEY", "CANVAS_NEXT")
