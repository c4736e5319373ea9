"""lti_ags against the LTI 1.3 platform simulator over real HTTP, with the shared cache in a real Redis:
the assertion the platform verifies, token sharing and refresh, scopes, Moodle/Canvas URLs, stale
timestamps, container paging and the line item creation race between workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
import redis
from pydantic import SecretStr

from sandbox import DEMO_CREDENTIALS, make_app
from sandbox.base import Running, start
from sandbox.control import SandboxClient
from sandbox.lti_demo import demo_jwks, demo_key
from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.lti_ags import LtiAgsAdapter
from worker.adapters.lti_auth import ASSERTION_TYPE, build_assertion
from worker.events import GradeEvent
from worker.lti_keys import generate_key, jwks
from worker.store.cache import RedisCache
from worker.vendors.lti import LtiAgsDestination

pytestmark = pytest.mark.integration

CLIENT_ID = DEMO_CREDENTIALS["lti_ags"]["client_id"]
VENDORS = {"vendors": {"lti": "lti_ags"}}
AGS = "https://purl.imsglobal.org/spec/lti-ags/scope/"
T0 = datetime(2025, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
Build = Callable[..., LtiAgsAdapter]


@pytest.fixture(scope="module")
def platform() -> Iterator[Running]:
    running = start(make_app("lti_ags", jwks=demo_jwks()))
    yield running
    running.stop()


@pytest.fixture
def control(platform: Running) -> Iterator[SandboxClient]:
    client = SandboxClient(platform.url)
    client.reset()
    yield client
    client.close()


@pytest.fixture
def build(platform: Running, redis_client: redis.Redis) -> Iterator[Build]:
    made: list[LtiAgsAdapter] = []

    def make(**over: Any) -> LtiAgsAdapter:
        k = demo_key()
        data: dict[str, Any] = {"name": "lti", "vendor": "lti_ags", "base_url": platform.url, "client_id": CLIENT_ID,
                                "token_url": f"{platform.url}/login/oauth2/token", "private_key_env": "K",
                                "private_key": SecretStr(k.private_pem().decode()), "kid": k.kid, "timeout": 5.0}
        data.update(over)
        dest = LtiAgsDestination(**data)
        adapter = LtiAgsAdapter(dest, AdapterContext(http=make_client(dest), cache=RedisCache(redis_client, "it")))
        made.append(adapter)
        return adapter

    yield make
    for a in made:
        a.close()


def seed(control: SandboxClient, platform: Running, style: str = "canvas", n: int = 1, **item: Any) -> list[str]:
    host = platform.url.split("://", 1)[1]
    spec = {"host": host, "course": "7", "style": style, "resourceLinkId": "rl-1", "label": "Essay",
            "scoreMaximum": 10, **item}
    ids: list[str] = control.configure(seed=[spec] * n)["seeded"]
    return ids


def ev(target: dict[str, Any], **over: Any) -> GradeEvent:
    data: dict[str, Any] = {"destination": "lti", "learner_id": "lti-user-1", "score_given": 7, "score_maximum": 10,
                            "occurred_at": T0.isoformat(), "comment": "Good", "target": target}
    data.update(over)
    return GradeEvent.model_validate(data, context=VENDORS)


def test_score_to_a_moodle_line_item_and_the_assertion_the_platform_verified(
        build: Build, control: SandboxClient, platform: Running) -> None:
    (line_item,) = seed(control, platform, style="moodle")
    assert "?type_id=" in line_item
    result = build().deliver(ev({"line_item_url": line_item}))
    assert result.status == 204
    state = control.state()
    (score,) = state["scores"]
    assert score["lineItem"] == line_item and score["timestamp"] == "2025-05-01T12:00:00.123+00:00"
    assert (score["scoreGiven"], score["scoreMaximum"], score["comment"]) == (7, 10, "Good")
    (assertion,) = state["assertions"]
    assert assertion["header"] == {"alg": "RS256", "typ": "JWT", "kid": demo_key().kid}
    claims = assertion["claims"]
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == f"{platform.url}/login/oauth2/token"
    assert claims["exp"] - claims["iat"] == 300
    (post,) = control.requests(method="POST", path="/scores$")
    assert post["path"].endswith("/lineitem/scores") and post["query"] == {"type_id": ["1"]}
    assert post["headers"]["content-type"] == "application/vnd.ims.lis.v1.score+json"


@pytest.mark.parametrize(("style", "refused", "accepted"), [
    # Moodle compares whole seconds: equal, older, and even 0.5 s newer within the same second are refused
    ("moodle", [timedelta(0), timedelta(minutes=-5), timedelta(milliseconds=500)], timedelta(seconds=1)),
    # Canvas refuses only an older timestamp; an equal one replaces the score
    ("canvas", [timedelta(minutes=-5), timedelta(milliseconds=-1)], timedelta(0)),
])
def test_stale_timestamps_as_each_platform_checks_them(style: str, refused: list[timedelta], accepted: timedelta,
                                                       build: Build, control: SandboxClient,
                                                       platform: Running) -> None:
    (line_item,) = seed(control, platform, style=style)
    adapter = build()
    adapter.deliver(ev({"line_item_url": line_item}, score_given=9))
    for delta in refused:
        with pytest.raises(errors.Superseded):
            adapter.deliver(ev({"line_item_url": line_item}, score_given=3, occurred_at=(T0 + delta).isoformat()))
    assert [s["scoreGiven"] for s in control.state()["scores"]] == [9]
    assert control.state()["refused_stale"] == len(refused)
    adapter.deliver(ev({"line_item_url": line_item}, score_given=5, occurred_at=(T0 + accepted).isoformat()))
    assert [s["scoreGiven"] for s in control.state()["scores"]] == [5]


def test_one_token_is_shared_by_workers_and_refreshed_once_when_refused(
        build: Build, control: SandboxClient, platform: Running) -> None:
    (line_item,) = seed(control, platform)
    a, b = build(), build()  # two workers: two HTTP clients, one Redis
    a.deliver(ev({"line_item_url": line_item}, learner_id="u1"))
    b.deliver(ev({"line_item_url": line_item}, learner_id="u2"))
    assert control.state()["tokens_issued"] == 1
    control.configure(expire_tokens=True)  # the platform revokes it: next call gets a 401
    a.deliver(ev({"line_item_url": line_item}, learner_id="u3"))
    b.deliver(ev({"line_item_url": line_item}, learner_id="u4"))  # takes a's new token from Redis: no 401
    state = control.state()
    assert state["tokens_issued"] == 2 and len(state["scores"]) == 4
    assert [r["status"] for r in control.requests(path="/scores$")] == [200, 200, 401, 200, 200]


def test_a_scope_the_platform_does_not_grant_is_permanent_and_named(
        build: Build, control: SandboxClient, platform: Running) -> None:
    (line_item,) = seed(control, platform)
    control.configure(allowed_scopes=[f"{AGS}lineitem"])
    with pytest.raises(errors.Forbidden) as info:
        build().deliver(ev({"line_item_url": line_item}))
    assert f"{AGS}score" in info.value.message and "granted: " + f"{AGS}lineitem" in info.value.message
    assert [r["status"] for r in control.requests(path="/scores$")] == [403, 403]


def test_a_key_the_platform_does_not_know_is_refused(build: Build, control: SandboxClient) -> None:
    other = generate_key()
    with pytest.raises(errors.AuthenticationFailed) as info:
        build(private_key=SecretStr(other.private_pem().decode()), kid=other.kid).deliver(
            ev({"line_item_url": f"{control.base_url}/api/lti/courses/7/line_items/1"}))
    assert "invalid_client" in (info.value.vendor_message or "")
    assert control.state()["token_refusals"] == [f"invalid_client: no RS256 key with kid {other.kid!r} in the "
                                                 f"tool's JWKS"]


def test_the_platform_fetches_the_jwks_url_for_an_unknown_kid(
        build: Build, control: SandboxClient, platform: Running) -> None:
    rotated = generate_key()
    served = start(make_app("lti_ags"))  # any HTTP server will do: a fault answers the JWKS document
    try:
        SandboxClient(served.url).fault(status=200, body=jwks([demo_key(), rotated]), path="jwks", times=-1)
        control.configure(jwks={"keys": []}, jwks_url=f"{served.url}/.well-known/jwks.json")
        (line_item,) = seed(control, platform)
        build(private_key=SecretStr(rotated.private_pem().decode()), kid=rotated.kid).deliver(
            ev({"line_item_url": line_item}))
        assert control.state()["jwks_fetches"] == 1
    finally:
        control.configure(jwks=demo_jwks(), jwks_url=None)
        served.stop()


def _token_request(platform: Running, assertion: str, scope: str = f"{AGS}score") -> httpx.Response:
    return httpx.post(f"{platform.url}/login/oauth2/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion, "scope": scope})


def test_the_token_endpoint_is_strict(platform: Running, control: SandboxClient) -> None:
    aud = f"{platform.url}/login/oauth2/token"
    now = time.time()
    good = build_assertion(client_id=CLIENT_ID, audience=aud, key=demo_key(), now=now)
    assert _token_request(platform, good).status_code == 200
    replay = _token_request(platform, good)
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    assert "jti" in replay.json()["error_description"]
    cases = {
        "aud": build_assertion(client_id=CLIENT_ID, audience="https://other/token", key=demo_key(), now=now),
        "expired": build_assertion(client_id=CLIENT_ID, audience=aud, key=demo_key(), now=now - 400),
        "future": build_assertion(client_id=CLIENT_ID, audience=aud, key=demo_key(), now=now + 120),
        "lifetime": jwt.encode({"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": aud, "iat": int(now),
                                "exp": int(now) + 3600, "jti": "long-lived"}, demo_key().private,
                               algorithm="RS256", headers={"kid": demo_key().kid}),
    }
    for name, assertion in cases.items():
        answer = _token_request(platform, assertion)
        assert (answer.status_code, answer.json()["error"]) == (400, "invalid_grant"), name
    wrong_client = build_assertion(client_id="someone-else", audience=aud, key=demo_key(), now=now)
    assert _token_request(platform, wrong_client).json()["error"] == "invalid_client"
    forged = good[: good.rindex(".") + 1] + "AAAA"
    assert _token_request(platform, forged).json()["error"] == "invalid_client"
    fresh = build_assertion(client_id=CLIENT_ID, audience=aud, key=demo_key(), now=now)
    assert _token_request(platform, fresh, scope="https://example/other").json()["error"] == "invalid_scope"
    as_json = httpx.post(aud, json={"grant_type": "client_credentials"})
    assert as_json.json()["error"] == "invalid_request"


def test_media_types_are_enforced(platform: Running, control: SandboxClient) -> None:
    (line_item,) = seed(control, platform)
    aud = f"{platform.url}/login/oauth2/token"
    token = _token_request(platform, build_assertion(client_id=CLIENT_ID, audience=aud, key=demo_key(),
                                                     now=time.time()), scope=f"{AGS}score {AGS}lineitem").json()
    auth = {"Authorization": f"Bearer {token['access_token']}"}
    score = {"userId": "u", "activityProgress": "Completed", "gradingProgress": "FullyGraded",
             "timestamp": "2025-05-01T12:00:00.123Z", "scoreGiven": 1, "scoreMaximum": 2}
    assert httpx.post(f"{line_item}/scores", json=score, headers=auth).status_code == 415
    container = line_item.rsplit("/", 1)[0]
    assert httpx.get(container, headers={**auth, "Accept": "application/json"}).status_code == 406
    assert httpx.post(container, json={"label": "x", "scoreMaximum": 1}, headers=auth).status_code == 415
    no_ms = {**score, "timestamp": "2025-05-01T12:00:00Z"}
    answer = httpx.post(f"{line_item}/scores", json=no_ms,
                        headers={**auth, "Content-Type": "application/vnd.ims.lis.v1.score+json"})
    assert answer.status_code == 422 and "sub-second" in answer.text


def test_scores_after_the_query_string_are_refused_by_moodle(platform: Running, control: SandboxClient) -> None:
    (line_item,) = seed(control, platform, style="moodle")
    aud = f"{platform.url}/login/oauth2/token"
    token = _token_request(platform, build_assertion(client_id=CLIENT_ID, audience=aud, key=demo_key(),
                                                     now=time.time())).json()["access_token"]
    wrong = f"{line_item}/scores"  # …/lineitem?type_id=1/scores
    answer = httpx.post(wrong, content=b"{}", headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/vnd.ims.lis.v1.score+json"})
    assert answer.status_code == 405  # that is the line item itself, which takes no POST
    assert control.state()["scores"] == []


def test_resolution_follows_link_next_and_is_cached(build: Build, control: SandboxClient, platform: Running) -> None:
    seed(control, platform, n=12, resourceLinkId="rl-other")
    (wanted,) = seed(control, platform, resourceLinkId="rl-wanted", tag="grade")
    control.configure(page_size=5, ignore_filters=True)  # a platform that ignores the query filters
    container = f"{platform.url}/api/lti/courses/7/line_items"
    adapter = build()
    target = {"lineitems_url": container, "resource_link_id": "rl-wanted", "tag": "grade"}
    assert adapter.deliver(ev(target)).detail == wanted
    gets = control.requests(method="GET", path="line_items$")
    assert [g["query"].get("page") for g in gets] == [None, ["2"], ["3"]]
    assert gets[0]["query"]["resource_link_id"] == ["rl-wanted"] and gets[0]["query"]["tag"] == ["grade"]
    adapter.deliver(ev(target, learner_id="u2"))
    build().deliver(ev(target, learner_id="u3"))  # another worker: the URL is in Redis
    assert len(control.requests(method="GET", path="line_items$")) == 3
    assert len(control.state()["line_items"]) == 13  # nothing created


def test_many_workers_create_a_missing_line_item_exactly_once(
        build: Build, control: SandboxClient, platform: Running) -> None:
    container = f"{platform.url}/api/lti/courses/7/line_items"
    control.fault(method="POST", path="line_items$", latency=0.5, times=-1)  # a slow create widens the race
    adapters = [build() for _ in range(6)]
    results: list[Any] = [None] * len(adapters)
    start_line = threading.Barrier(len(adapters))

    def run(i: int) -> None:
        start_line.wait()
        try:
            results[i] = adapters[i].deliver(ev({"lineitems_url": container, "resource_link_id": "rl-new",
                                                 "label": "Quiz 3", "score_maximum": 10}, learner_id=f"u{i}"))
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(adapters))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(not isinstance(r, Exception) for r in results), results
    state = control.state()
    assert len(state["line_items"]) == 1 and state["line_items"][0]["label"] == "Quiz 3"
    assert len(control.requests(method="POST", path="line_items$")) == 1
    assert len(state["scores"]) == len(adapters)


@pytest.mark.parametrize(("fault", "cls"), [
    ({"status": 503, "path": "/scores$"}, errors.VendorUnavailable),
    ({"status": 429, "retry_after": 7, "path": "/scores$"}, errors.RateLimited),
    ({"drop": True, "path": "/scores$"}, errors.NetworkError),
    ({"latency": 1.5, "path": "/scores$"}, errors.VendorTimeout),
    ({"status": 503, "retry_after": 3, "path": "/token$"}, errors.RateLimited),  # an overload saying when
    ({"drop": True, "path": "/token$"}, errors.NetworkError),
])
def test_faults_over_the_wire_are_retryable(fault: dict[str, Any], cls: type[errors.DeliveryError], build: Build,
                                             control: SandboxClient, platform: Running) -> None:
    (line_item,) = seed(control, platform)
    control.fault(**fault)
    with pytest.raises(errors.RetryableError) as info:
        build(timeout=0.5).deliver(ev({"line_item_url": line_item}))
    assert type(info.value) is cls
    if "retry_after" in fault:
        assert info.value.retry_after == fault["retry_after"]
    assert control.state()["scores"] == []


def test_an_unreachable_jwks_url_is_retryable(build: Build, control: SandboxClient, platform: Running) -> None:
    from sandbox.localredis import free_port

    (line_item,) = seed(control, platform)
    control.configure(jwks={"keys": []}, jwks_url=f"http://127.0.0.1:{free_port()}/.well-known/jwks.json")
    try:
        with pytest.raises(errors.VendorUnavailable) as info:
            build().deliver(ev({"line_item_url": line_item}))
        assert "temporarily_unavailable" in (info.value.vendor_message or "")
    finally:
        control.configure(jwks=demo_jwks(), jwks_url=None)


def test_the_canvas_submission_extension_reaches_the_platform(build: Build, control: SandboxClient,
                                                               platform: Running) -> None:
    (line_item,) = seed(control, platform)
    adapter = build()
    adapter.deliver(ev({"line_item_url": line_item, "canvas_submission": True}))
    adapter.deliver(ev({"line_item_url": line_item, "canvas_submission": True, "regrade": True},
                       occurred_at=(T0 + timedelta(minutes=5)).isoformat(), score_given=9))
    (score,) = control.state()["scores"]
    assert score["scoreGiven"] == 9
    assert score["submission"] == {"submitted_at": "2025-05-01T12:05:00.123+00:00", "new_submission": False}
