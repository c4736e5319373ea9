"""gradesync's lti_ags against independently written implementations from PyPI: ``lti1p3platform`` 0.1.8
(OpenLearningNet), a platform-side LTI 1.3 kit with a real token endpoint and a real AGS scores endpoint,
fronted by ``authlib`` 1.9.10's RFC 7523 client authentication (``JWTBearerClientAssertion``), as a
platform built from these libraries would be.

What ``authlib`` does here: verifies the client assertion's RS256 signature against the tool's JWKS
(selected by ``kid``), ``iss`` = ``sub``, ``aud`` (the token URL), ``exp`` (leeway 5 s) and refuses a
``jti`` it has seen.

What ``lti1p3platform`` does here (its code, unmodified):

* ``LTI1P3PlatformConfAbstract.get_access_token``: checks the client-credentials form (``grant_type``,
  ``client_assertion_type``, ``client_assertion``, ``scope``), fetches the tool's JWKS from gradesync's
  own ``/.well-known/jwks.json`` (served by ``gradesync serve``'s app) with ``requests``, picks the key by
  the assertion's ``kid`` and ``alg``, verifies the RS256 signature and ``exp`` with PyJWT, and issues a
  signed access token with the granted scopes;
* ``AssignmentsGradesService.handle_update_score``: verifies the bearer token (signature, ``iss``, ``exp``,
  an AGS scope) and maps the result of ``update_score`` to HTTP (201 created, 409 old timestamp).

What the glue below does (as the library asks of every platform): routes, the registration, storing
scores and deciding when a timestamp is old (``update_score`` is abstract). The library does not check
the assertion's ``aud``, ``iss``/``sub`` or ``jti`` (0.1.8 decodes with ``verify_aud=False``): authlib
does, and so does the simulator in :mod:`sandbox.lti_platform` (``test_lti_ags_sandbox.py``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import redis
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc.jwk import KeySet
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request as LtiRequest
from lti1p3platform.request import TRequest
from lti1p3platform.score import UpdateScoreStatus
from lti1p3platform.service_connector import AssignmentsGradesService
from pydantic import SecretStr

from sandbox.base import Request, Response, Running, SandboxApp, start
from sandbox.lti_demo import demo_key
from tests.integration.conftest import Cluster
from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.lti_ags import LtiAgsAdapter
from worker.adapters.lti_auth import ASSERTION_TYPE, build_assertion
from worker.events import GradeEvent
from worker.lti_keys import generate_key
from worker.ops.api import create_app
from worker.ops.serve import ServerThread
from worker.publish import Publisher
from worker.settings import reset_settings
from worker.store.cache import RedisCache
from worker.vendors.lti import LtiAgsDestination

pytestmark = pytest.mark.integration

ISS = "https://platform.lti1p3platform.test"
CLIENT_ID = "gradesync-tool-client"
T0 = datetime(2025, 6, 1, 9, 30, 0, 250000, tzinfo=UTC)


class Platform(LTI1P3PlatformConfAbstract):
    """The registration of gradesync as a tool: the library's abstract platform config, filled in."""

    def init_platform_config(self, **kwargs: Any) -> None:
        key = kwargs["platform_key"]
        reg = Registration()
        reg.set_iss(ISS).set_client_id(CLIENT_ID).set_deployment_id("deployment-1")
        reg.set_platform_private_key(key.private_pem().decode()).set_platform_public_key(key.public_pem().decode())
        reg.set_tool_key_set_url(kwargs["jwks_url"])  # the library fetches it with requests
        self._registration = reg

    def get_registration_by_params(self, **kwargs: Any) -> Registration:
        assert self._registration is not None
        return self._registration


class LibraryRequest(LtiRequest):
    def build_metadata(self, request: Any) -> TRequest:
        req: Request = request
        body = req.body.decode("utf-8")
        ctype = req.header("content-type") or ""
        return {"method": req.method, "path": req.path,
                "form_data": {k: v[0] for k, v in parse_qs(body).items()} if "form" in ctype else {},
                "get_data": {k: v[0] for k, v in req.query.items()},
                "headers": {"Authorization": req.header("authorization") or "", "Content-Type": ctype},
                "content_type": ctype, "json": json.loads(body) if "json" in ctype and body else None}


class Scores(AssignmentsGradesService):
    """The storage half every platform writes; the HTTP/auth half is the library's."""

    store: dict[tuple[str, str], dict[str, Any]] = {}

    def update_score(self, line_item_id: str, score: Any) -> UpdateScoreStatus:
        key = (line_item_id, str(score["userId"]))
        stamp = datetime.fromisoformat(str(score["timestamp"]))
        current = self.store.get(key)
        if current is not None and stamp <= datetime.fromisoformat(current["timestamp"]):
            return UpdateScoreStatus.OLD_TIMESTAMP
        self.store[key] = dict(score)
        return UpdateScoreStatus.SUCCESS if current else UpdateScoreStatus.CREATED

    def find_lineitems(self, *a: Any, **k: Any) -> Any:
        return {"content": [], "has_next": False}

    def find_lineitem(self, line_item_id: str) -> Any:
        return {"id": line_item_id}

    def create_lineitem(self, creation_data: Any) -> Any:
        raise NotImplementedError

    def update_lineitem(self, update_data: Any) -> Any:
        raise NotImplementedError

    def delete_lineitem(self, line_item_id: str) -> None:
        raise NotImplementedError

    def get_results(self, *a: Any, **k: Any) -> Any:
        return {"content": [], "has_next": False}


class ToolClient:
    """authlib's client model: gradesync's registration."""

    client_id = CLIENT_ID

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_assertion_jwt" and endpoint == "token"


class ClientAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
    """authlib's RFC 7523 validator, given what it asks a server for: audiences, jti memory, the JWKS."""

    def __init__(self, audience: str, jwks_url: str, seen: set[str]) -> None:
        super().__init__(leeway=5)
        self.audience, self.jwks_url, self.seen = audience, jwks_url, seen

    def get_audiences(self) -> list[str]:
        return [self.audience]

    def validate_jti(self, claims: Any, jti: str) -> bool:
        if jti in self.seen:
            return False
        self.seen.add(jti)
        return True

    def resolve_client_public_key(self, client: Any) -> Any:
        return KeySet.import_key_set(httpx.get(self.jwks_url).json())


class FormRequest:
    def __init__(self, form: dict[str, str]) -> None:
        self.form = form
        self.client: Any = None


class LibraryServer(SandboxApp):
    """HTTP routing only; every decision below is the library's."""

    vendor = "lti1p3platform"

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url
        self.platform_key = generate_key()  # signs the access tokens the library issues
        self.refusals: list[str] = []
        self.seen_jti: set[str] = set()
        super().__init__()

    def register(self) -> None:
        self.route("POST", "/token")(self._token)
        self.route("POST", r"/ags/lineitems/(?P<id>\d+)/lineitem/scores")(self._score)

    def _token(self, req: Request, _m: re.Match[str]) -> Response:
        form = LibraryRequest(req).form_data
        try:  # RFC 7523 client authentication: authlib
            ClientAssertion(req.url, self.jwks_url, self.seen_jti)(
                lambda cid: ToolClient() if cid == CLIENT_ID else None, FormRequest(form))
        except InvalidClientError as exc:
            self.refusals.append(f"authlib: {exc.description}")
            return Response(401, {"error": "invalid_client", "error_description": exc.description})
        platform = Platform(jwks_url=self.jwks_url, platform_key=self.platform_key)
        try:  # the LTI token grant: lti1p3platform
            answer = platform.get_access_token(form)
        except Exception as exc:  # the library raises; a platform answers invalid_client
            self.refusals.append(f"{type(exc).__name__}: {exc}")
            return Response(401, {"error": "invalid_client", "error_description": type(exc).__name__})
        return Response(200, dict(answer))

    def _score(self, req: Request, m: re.Match[str]) -> Response:
        if req.param("type_id") != "3":  # a Moodle-style line item URL: the query string must survive
            return Response(404, {"error": "no such line item"})
        platform = Platform(jwks_url=self.jwks_url, platform_key=self.platform_key)
        service = Scores(LibraryRequest(req), platform, lineitems_url=f"http://{req.host}/ags/lineitems")
        try:
            result = service.handle_resp(service.handle_update_score, line_item_id=m["id"])
        except Exception as exc:  # validate_token raises on a bad token
            self.refusals.append(f"{type(exc).__name__}: {exc}")
            return Response(401, {"error": "invalid_token"})
        return Response(result.code, {"message": result.message})


@pytest.fixture
def jwks_server(cluster: Cluster) -> Iterator[ServerThread]:
    """`gradesync serve`'s app, publishing the lti destination's key at /.well-known/jwks.json."""
    settings = cluster.settings.model_copy(update={"api_token": SecretStr("independent-test-token-0123456789abcdef")})
    server = ServerThread(create_app(settings)).start()
    yield server
    server.stop()


@pytest.fixture
def library(jwks_server: ServerThread) -> Iterator[Running]:
    Scores.store = {}
    running = start(LibraryServer(f"{jwks_server.url}/.well-known/jwks.json"))
    yield running
    running.stop()


def adapter_for(library: Running, redis_client: redis.Redis, key_pem: str, kid: str) -> LtiAgsAdapter:
    dest = LtiAgsDestination(name="lti", vendor="lti_ags", base_url=library.url, client_id=CLIENT_ID,
                             token_url=f"{library.url}/token", private_key_env="K", private_key=SecretStr(key_pem),
                             kid=kid, timeout=10.0)
    return LtiAgsAdapter(dest, AdapterContext(http=make_client(dest), cache=RedisCache(redis_client, "indep")))


def score_event(library: Running, given: float, at: datetime) -> GradeEvent:
    return GradeEvent.model_validate(
        {"destination": "lti", "learner_id": "learner-9", "score_given": given, "score_maximum": 20,
         "occurred_at": at.isoformat(), "comment": "independent",
         "target": {"line_item_url": f"{library.url}/ags/lineitems/5/lineitem?type_id=3"}},
        context={"vendors": {"lti": "lti_ags"}})


def test_the_library_validates_our_assertion_and_accepts_the_score(
        library: Running, jwks_server: ServerThread, redis_client: redis.Redis) -> None:
    answer = httpx.get(f"{jwks_server.url}/.well-known/jwks.json")  # no API token: it is public
    assert answer.status_code == 200 and answer.headers["cache-control"] == "public, max-age=300"
    published = answer.json()
    assert [k["kid"] for k in published["keys"]] == [demo_key().kid]
    assert set(published["keys"][0]) == {"kty", "e", "n", "kid", "alg", "use"}  # the public half only
    adapter = adapter_for(library, redis_client, demo_key().private_pem().decode(), demo_key().kid)
    try:
        result = adapter.deliver(score_event(library, 17.5, T0))
        assert result.status == 201  # the library's UPDATE_SCORE_STATUSCODE[CREATED]
        stored = Scores.store[("5", "learner-9")]
        assert (stored["scoreGiven"], stored["scoreMaximum"], stored["timestamp"]) == (
            17.5, 20, "2025-06-01T09:30:00.250+00:00")
        assert adapter.deliver(score_event(library, 18, T0 + timedelta(seconds=1))).status == 200  # SUCCESS
        with pytest.raises(errors.Superseded):  # the library's 409 for OLD_TIMESTAMP
            adapter.deliver(score_event(library, 2, T0))
        assert Scores.store[("5", "learner-9")]["scoreGiven"] == 18
        assert library.app.refusals == []  # type: ignore[attr-defined]
        issued = jwt.decode(adapter.tokens.token(adapter.scopes).value,
                            library.app.platform_key.public, algorithms=["RS256"])  # type: ignore[attr-defined]
        assert issued["iss"] == ISS and issued["sub"] == CLIENT_ID  # a token the library minted
        assert "https://purl.imsglobal.org/spec/lti-ags/scope/score" in issued["scopes"]
    finally:
        adapter.close()


def test_the_library_refuses_a_key_the_tool_does_not_publish(library: Running, redis_client: redis.Redis) -> None:
    stranger = generate_key()
    adapter = adapter_for(library, redis_client, stranger.private_pem().decode(), stranger.kid)
    try:
        with pytest.raises(errors.AuthenticationFailed):
            adapter.deliver(score_event(library, 1, T0))
    finally:
        adapter.close()
    (refusal,) = library.app.refusals  # type: ignore[attr-defined]
    assert refusal.startswith("authlib: ")  # no key with that kid in the published JWKS
    assert Scores.store == {}


def test_authlib_refuses_a_replayed_jti_and_a_wrong_audience(library: Running) -> None:
    token_url = f"{library.url}/token"

    def ask(assertion: str) -> httpx.Response:
        return httpx.post(token_url, data={"grant_type": "client_credentials", "client_assertion": assertion,
                                           "client_assertion_type": ASSERTION_TYPE,
                                           "scope": "https://purl.imsglobal.org/spec/lti-ags/scope/score"})

    good = build_assertion(client_id=CLIENT_ID, audience=token_url, key=demo_key(), now=time.time())
    assert ask(good).status_code == 200
    assert ask(good).status_code == 401  # replayed jti
    assert ask(build_assertion(client_id=CLIENT_ID, audience="https://elsewhere/token", key=demo_key(),
                               now=time.time())).status_code == 401
    assert ask(build_assertion(client_id=CLIENT_ID, audience=token_url, key=demo_key(),
                               now=time.time() - 600)).status_code == 401  # expired
    refusals = library.app.refusals  # type: ignore[attr-defined]
    assert len(refusals) == 3 and all(r.startswith("authlib: ") for r in refusals)
    assert "JWT ID" in refusals[0] and "aud" in refusals[1].lower() and "expired" in refusals[2].lower(), refusals


def test_the_library_refuses_a_forged_bearer_token(library: Running) -> None:
    answer = httpx.post(f"{library.url}/ags/lineitems/5/lineitem/scores?type_id=3",
                        headers={"Authorization": "Bearer not.a.token",
                                 "Content-Type": "application/vnd.ims.lis.v1.score+json"},
                        content=b'{"userId":"x"}')
    assert answer.status_code == 401
    assert Scores.store == {}


def test_a_real_worker_delivers_to_the_library_platform(library: Running, cluster: Cluster) -> None:
    """The whole pipeline: publish → `gradesync worker` process → lti1p3platform (JWKS from gradesync serve)."""
    with cluster.destinations.open("a") as f:
        f.write(f'\n[destinations.indep]\nvendor = "lti_ags"\nbase_url = "{library.url}"\n'
                f'client_id = "{CLIENT_ID}"\ntoken_url = "{library.url}/token"\nprivate_key_env = "IT_LTI_KEY"\n'
                f'kid = "{demo_key().kid}"\nmax_attempts = 2\nretry_base_delay = 0.2\nretry_max_delay = 1.0\n')
    reset_settings()
    publisher = Publisher(cluster.settings)
    try:
        cluster.start_worker(concurrency=2)
        item = f"{library.url}/ags/lineitems/8/lineitem?type_id=3"
        first = publisher.publish({"destination": "indep", "learner_id": "learner-w", "score_given": 4,
                                   "score_maximum": 5, "occurred_at": T0.isoformat(),
                                   "target": {"line_item_url": item}})
        assert cluster.wait_for([first]) == {first: "succeeded"}
        older = publisher.publish({"destination": "indep", "learner_id": "learner-w", "score_given": 1,
                                   "score_maximum": 5, "occurred_at": (T0 - timedelta(days=1)).isoformat(),
                                   "target": {"line_item_url": item}})
        assert cluster.wait_for([older]) == {older: "superseded"}  # the worker's stale guard: never sent
    finally:
        publisher.close()
    assert Scores.store[("8", "learner-w")]["scoreGiven"] == 4
    assert library.app.refusals == []  # type: ignore[attr-defined]
