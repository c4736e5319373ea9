"""`gradesync serve` publishes the lti_ags destinations' public keys at /.well-known/jwks.json."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
import redis
from pydantic import SecretStr

from worker.adapters.lti_jwks import NAMESPACE, publish_public_keys
from worker.lti_keys import generate_key, load_key
from worker.ops.api import create_app
from worker.ops.serve import ServerThread
from worker.settings import Settings, reset_settings
from worker.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def served(redis_url: str, redis_client: redis.Redis, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """The server of three lti_ags destinations, on an empty Redis (the run-time registry keeps what an
    earlier server applied: its destinations' keys would be published too)."""
    signing_a, signing_b, next_b = generate_key(), generate_key(), generate_key()
    monkeypatch.setenv("A_KEY", signing_a.private_pem().decode())
    monkeypatch.setenv("B_KEY", signing_b.private_pem().decode())
    monkeypatch.setenv("B_NEXT", next_b.public_pem().decode())  # a rotation key may be public only
    dest = tmp_path / "destinations.toml"
    common = 'vendor = "lti_ags"\nbase_url = "https://lms.example"\ntoken_url = "https://lms.example/token"\n'
    dest.write_text(
        f'[destinations.a]\n{common}client_id = "a"\nprivate_key_env = "A_KEY"\nkid = "{signing_a.kid}"\n\n'
        f'[destinations.b]\n{common}client_id = "b"\nprivate_key_env = "B_KEY"\nkid = "{signing_b.kid}"\n'
        f'rotation_keys = [{{ kid = "{next_b.kid}", key_env = "B_NEXT" }}]\n\n'
        f'[destinations.a2]\n{common}client_id = "a2"\nprivate_key_env = "A_KEY"\nkid = "{signing_a.kid}"\n'
    )
    reset_settings()
    settings = Settings(redis_url=redis_url, destinations_file=dest, api_token=SecretStr("t" * 40))
    server = ServerThread(create_app(settings)).start()
    yield server.url, [signing_a.kid, signing_b.kid, next_b.kid]
    server.stop()


def test_jwks_lists_every_public_key_once_without_auth(served: tuple[str, list[str]]) -> None:
    url, kids = served
    answer = httpx.get(f"{url}/.well-known/jwks.json")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=300"
    keys = answer.json()["keys"]
    assert sorted(k["kid"] for k in keys) == sorted(kids)  # a and a2 share one key: published once
    for jwk in keys:
        assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}
        assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    assert httpx.get(f"{url}/v1/overview").status_code == 401  # the rest of the app still wants the token


def test_the_published_key_verifies_what_the_worker_signs(served: tuple[str, list[str]]) -> None:
    url, kids = served
    keys = {k["kid"]: k for k in httpx.get(f"{url}/.well-known/jwks.json").json()["keys"]}
    signing = load_key(os.environ["A_KEY"], kid=kids[0])
    token = jwt.encode({"iss": "a"}, signing.private, algorithm="RS256", headers={"kid": signing.kid})
    public = jwt.PyJWK(keys[jwt.get_unverified_header(token)["kid"]]).key
    assert jwt.decode(token, public, algorithms=["RS256"]) == {"iss": "a"}


def test_a_web_app_without_the_private_keys_serves_what_the_workers_published(
        redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the Kubernetes manifests: the web pod holds no vendor credential, the worker pods do."""
    signing, other = generate_key(), generate_key()
    dest = tmp_path / "destinations.toml"
    dest.write_text(f'[destinations.a]\nvendor = "lti_ags"\nbase_url = "https://lms.example"\n'
                    f'token_url = "https://lms.example/token"\nclient_id = "a"\nprivate_key_env = "A_KEY"\n'
                    f'kid = "{signing.kid}"\n')
    monkeypatch.delenv("A_KEY", raising=False)
    reset_settings()
    settings = Settings(redis_url=redis_url, destinations_file=dest, api_token=SecretStr("t" * 40))
    store = Store.connect(settings)
    server = ServerThread(create_app(settings)).start()
    try:
        url = f"{server.url}/.well-known/jwks.json"
        assert httpx.get(url).json() == {"keys": []}  # no worker has started yet
        store.cache.set_json(NAMESPACE, signing.kid, other.jwk(), 60)  # a wrong key under that kid: ignored
        assert httpx.get(url).json() == {"keys": []}
        worker_side = settings.destinations()["a"].model_copy(
            update={"private_key": SecretStr(signing.private_pem().decode())})
        publish_public_keys(worker_side, store.cache)  # what every worker's lti_ags adapter does at start
        assert httpx.get(url).json() == {"keys": [signing.jwk()]}
    finally:
        server.stop()
