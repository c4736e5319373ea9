"""The LearningStudio adapter against the real simulator (served in-thread) with a real Redis cache."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from sandbox import DEMO_CREDENTIALS, make_app
from sandbox.base import Running, start
from sandbox.control import SandboxClient
from worker import errors
from worker.adapters import oauth1_cmac
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.learningstudio import CACHE_NAMESPACE, LearningStudioAdapter
from worker.events import GradeEvent
from worker.store.cache import RedisCache
from worker.vendors.learningstudio import LearningStudioDestination

pytestmark = pytest.mark.integration

CREDS = DEMO_CREDENTIALS["learningstudio"]
PREFIX = "lstest"


def destination(
    url: str, *, secret: str = CREDS["shared_secret"], timeout: float = 5.0
) -> LearningStudioDestination:
    return LearningStudioDestination(
        name="ls",
        vendor="learningstudio",
        base_url=url,
        timeout=timeout,
        application_id=CREDS["application_id"],
        consumer_key=CREDS["consumer_key"],
        shared_secret_env="LS_SECRET",
        shared_secret=SecretStr(secret),
    )


def event(**overrides: Any) -> GradeEvent:
    data: dict[str, Any] = {
        "destination": "ls",
        "learner_id": "28456671",
        "score_given": 8,
        "score_maximum": 10,
        "letter_grade": "B",
        "comment": "Nice work",
        "target": {"course_id": "31388494", "item_id": "100561235546"},
        **overrides,
    }
    return GradeEvent.model_validate(data, context={"vendors": {"ls": "learningstudio"}})


@pytest.fixture(scope="module")
def served() -> Iterator[Running]:
    running = start(make_app("learningstudio"))
    yield running
    running.stop()


@pytest.fixture
def sandbox(served: Running) -> Running:
    """The module's simulator, reset: no grades, items, nonces, faults or request log."""
    client = SandboxClient(served.url)
    client.reset()
    client.close()
    return served


@pytest.fixture
def control(sandbox: Running) -> Iterator[SandboxClient]:
    client = SandboxClient(sandbox.url)
    yield client
    client.close()


@pytest.fixture
def cache(redis_client: redis.Redis) -> RedisCache:
    return RedisCache(redis_client, PREFIX)


def build(url: str, cache: RedisCache, **kw: Any) -> LearningStudioAdapter:
    dest = destination(url, **kw)
    return LearningStudioAdapter(dest, AdapterContext(http=make_client(dest), cache=cache))


@pytest.fixture
def adapter(sandbox: Running, cache: RedisCache) -> Iterator[LearningStudioAdapter]:
    made = build(sandbox.url, cache)
    yield made
    made.close()


@pytest.fixture
def http(sandbox: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, timeout=5.0) as client:
        yield client


def header_for(http: httpx.Client, method: str, path: str, body: bytes | None = None, **sign_kw: Any) -> str:
    """The X-Authorization value the adapter would send for this request."""
    return oauth1_cmac.sign(
        method, f"{http.base_url}".rstrip("/") + path, body, consumer_key=CREDS["consumer_key"],
        application_id=CREDS["application_id"], secret=CREDS["shared_secret"], **sign_kw,
    )


def signed(
    http: httpx.Client, method: str, path: str, body: bytes | None = None, *,
    header: str | None = None, content_type: str = "application/json", **sign_kw: Any,
) -> tuple[httpx.Response, str]:
    """Send one request signed as the adapter would (or with ``header``); return it and the header."""
    request = http.build_request(method, path, content=body,
                                 headers={"Content-Type": content_type} if body is not None else {})
    assert str(request.url) == f"{http.base_url}".rstrip("/") + path
    header = header or header_for(http, method, path, body, **sign_kw)
    request.headers["X-Authorization"] = header
    return http.send(request), header


def grade_path(http: httpx.Client, course: str = "c1", item: str = "i1", user: str = "u1") -> str:
    """Provision the gradebook item (signed GET) and return the student's grade path."""
    response, _ = signed(http, "GET", f"/courses/{course}/items/{item}/gradebookItem")
    assert response.status_code == 200
    return f"/users/{user}/courses/{course}/gradebookItems/{response.json()['gradebookItem']['id']}/grade"


# -- the flow ----------------------------------------------------------------------------------------------
def test_create_then_update_a_grade(adapter: LearningStudioAdapter, control: SandboxClient) -> None:
    created = adapter.deliver(event())
    assert (created.status, created.action) == (201, "grade.post")
    (key, grade), = control.state()["grades"].items()
    assert key.startswith("28456671/31388494/")
    assert (grade["points"], grade["letterGrade"], grade["comments"]) == (80, "B", "Nice work")
    assert created.detail == f"grade {grade['id']}"

    updated = adapter.deliver(event(score_given=9.5, letter_grade="A", comment=None))
    assert (updated.status, updated.action, updated.detail) == (204, "grade.put", f"grade {grade['id']}")
    after = control.state()["grades"][key]
    assert (after["id"], after["points"], after["letterGrade"]) == (grade["id"], 95, "A")
    assert after["comments"] == "Nice work"  # not in the second event: kept

    log = [(r["method"], r["path"].rsplit("/", 1)[-1], r["status"]) for r in control.requests()]
    assert log == [
        ("GET", "gradebookItem", 200), ("GET", "grade", 404), ("POST", "grade", 201),
        ("GET", "grade", 200), ("PUT", "grade", 204),  # the item came from Redis the second time
    ]
    for request in control.requests():
        assert "x-authorization" in request["headers"] and "authorization" not in request["headers"]


def test_gradebook_item_is_cached_in_redis(
    sandbox: Running, adapter: LearningStudioAdapter, control: SandboxClient, redis_client: redis.Redis,
    cache: RedisCache,
) -> None:
    adapter.deliver(event())
    redis_key = f"{PREFIX}:cache:{CACHE_NAMESPACE}:ls:31388494:100561235546"
    item = control.state()["gradebook_items"]["31388494/100561235546"]
    assert json.loads(redis_client.get(redis_key) or b"null") == {"id": item["id"], "pointsPossible": 100}
    assert 86_000 < redis_client.ttl(redis_key) <= 86_400
    other_worker = build(sandbox.url, cache)
    try:
        other_worker.deliver(event(score_given=3))
    finally:
        other_worker.close()
    assert len(control.requests(method="GET", path="/gradebookItem$")) == 1


def test_stale_cached_gradebook_item_recovers(adapter: LearningStudioAdapter, control: SandboxClient,
                                              cache: RedisCache) -> None:
    stale = {"id": "deleted-guid", "pointsPossible": 100}
    cache.set_json(CACHE_NAMESPACE, "ls:31388494:100561235546", stale, 60)
    assert adapter.deliver(event()).action == "grade.post"
    assert len(control.state()["grades"]) == 1
    fresh = cache.get_json(CACHE_NAMESPACE, "ls:31388494:100561235546")
    assert fresh["id"] == control.state()["gradebook_items"]["31388494/100561235546"]["id"]


def test_seeded_points_possible_rescales(adapter: LearningStudioAdapter, control: SandboxClient) -> None:
    control.configure(items={"31388494/100561235546": {"pointsPossible": 50}})
    adapter.deliver(event(score_given=7, score_maximum=9))
    (grade,) = control.state()["grades"].values()
    assert grade["points"] == 38.89


def test_blank_grade_is_updated(adapter: LearningStudioAdapter, control: SandboxClient) -> None:
    control.configure(blank_grades=["28456671/31388494/100561235546"])
    (blank,) = control.state()["grades"].values()
    assert (blank["points"], blank["letterGrade"], blank["comments"]) == (None, "", "")
    result = adapter.deliver(event())
    assert (result.action, result.detail) == ("grade.put", f"grade {blank['id']}")
    (grade,) = control.state()["grades"].values()
    assert (grade["id"], grade["points"], grade["letterGrade"]) == (blank["id"], 80, "B")


@pytest.mark.parametrize("item_id", ["unknown-42", "configured-unknown"])
def test_unknown_item_is_not_found(
    adapter: LearningStudioAdapter, control: SandboxClient, item_id: str
) -> None:
    control.configure(unknown_items=["31388494/configured-unknown"])
    with pytest.raises(errors.NotFound) as info:
        adapter.deliver(event(target={"course_id": "31388494", "item_id": item_id}))
    assert info.value.vendor_message == "Item not found"


def test_odd_ids_round_trip(adapter: LearningStudioAdapter, control: SandboxClient) -> None:
    adapter.deliver(event(learner_id="jo smith/~1", target={"course_id": "c?1", "item_id": "#i%2"}))
    (key,) = control.state()["grades"]
    assert key.startswith("jo smith/~1/c?1/")


# -- authentication ----------------------------------------------------------------------------------------
def test_wrong_secret_is_refused_after_one_fresh_retry(sandbox: Running, control: SandboxClient,
                                                       cache: RedisCache) -> None:
    wrong = build(sandbox.url, cache, secret="not-the-secret16")
    try:
        with pytest.raises(errors.AuthenticationFailed) as info:
            wrong.deliver(event())
    finally:
        wrong.close()
    assert info.value.vendor_message == "Unauthorized: invalid signature"
    refused = control.requests()
    assert [r["status"] for r in refused] == [401, 401]
    nonces = {oauth1_cmac.parse_header(r["headers"]["x-authorization"]).nonce for r in refused}
    assert len(nonces) == 2


def test_tampered_requests_are_refused(http: httpx.Client) -> None:
    path = grade_path(http)
    body = b'{"grade":{"points":5}}'
    header = header_for(http, "POST", path, body)
    tampered, _ = signed(http, "POST", path, b'{"grade":{"points":100}}', header=header)
    assert (tampered.status_code, tampered.text) == (401, "Unauthorized: invalid signature")
    elsewhere, _ = signed(http, "POST", path.replace("/users/u1/", "/users/u2/"), body, header=header)
    assert elsewhere.status_code == 401 and "realm" in elsewhere.text
    sig = oauth1_cmac.parse_header(header).params["oauth_signature"]
    forged = header.replace(oauth1_cmac.java_urlencode(sig), oauth1_cmac.java_urlencode(sig[::-1]))
    assert signed(http, "POST", path, body, header=forged)[0].status_code == 401
    assert signed(http, "POST", path, body)[0].status_code == 201  # the untampered request passes


def test_nonce_replay_is_refused(http: httpx.Client) -> None:
    first, header = signed(http, "GET", "/courses/c1/items/i1/gradebookItem")
    assert first.status_code == 200
    replay, _ = signed(http, "GET", "/courses/c1/items/i1/gradebookItem", header=header)
    assert replay.status_code == 401
    assert "nonce" in replay.text


@pytest.mark.parametrize("skew", [-400, 400])
def test_timestamp_outside_the_window_is_refused(http: httpx.Client, skew: int) -> None:
    response, _ = signed(http, "GET", "/courses/c1/items/i1/gradebookItem", timestamp=int(time.time()) + skew)
    assert response.status_code == 401 and "timestamp" in response.text


def test_authorization_header_is_not_read(http: httpx.Client) -> None:
    request = http.build_request("GET", "/courses/c1/items/i1/gradebookItem")
    request.headers["Authorization"] = oauth1_cmac.sign(
        "GET", str(request.url), None, consumer_key=CREDS["consumer_key"],
        application_id=CREDS["application_id"], secret=CREDS["shared_secret"],
    )
    response = http.send(request)
    assert response.status_code == 401 and "X-Authorization" in response.text


# -- the grade resource -----------------------------------------------------------------------------------
def test_post_on_an_existing_grade_is_refused(http: httpx.Client) -> None:
    path = grade_path(http)
    created, _ = signed(http, "POST", path, b'{"grade":{"points":5,"comments":"first"}}')
    assert created.status_code == 201
    assert created.headers["Location"].endswith(path)
    assert created.json()["grade"]["points"] == 5 and isinstance(created.json()["grade"]["id"], int)
    again, _ = signed(http, "POST", path, b'{"grade":{"points":6}}')
    assert again.status_code == 400 and "already exists" in again.text
    got, _ = signed(http, "GET", path.replace("/gradebookItems/", "/gradebook/gradebookItems/"))
    assert got.status_code == 200 and got.json()["grade"]["points"] == 5  # the alias serves the same grade


def test_grade_resource_rules(http: httpx.Client) -> None:
    path = grade_path(http)
    missing, _ = signed(http, "GET", path)
    assert (missing.status_code, missing.text) == (404, "Grade not found")
    assert signed(http, "PUT", path, b'{"grade":{"points":1}}')[0].status_code == 404
    assert signed(http, "POST", path, b"not json")[0].status_code == 406
    as_text, _ = signed(http, "POST", path, b'{"grade":{"points":1}}', content_type="text/plain")
    assert as_text.status_code == 406
    assert signed(http, "POST", path, b'{"points":1}')[0].status_code == 400
    assert signed(http, "POST", path, b'{"grade":{"points":"ten"}}')[0].status_code == 400
    assert signed(http, "POST", path, b'{"grade":{"points":-1}}')[0].status_code == 400
    assert signed(http, "POST", path, b'{"grade":{"score":1}}')[0].status_code == 400
    assert signed(http, "POST", path, b'{"grade":{"points":1}}')[0].status_code == 201
    assert signed(http, "PUT", path, b'{"grade":{"points":2}}')[0].status_code == 204
    assert signed(http, "GET", path)[0].json()["grade"]["points"] == 2
    unknown_item = path.rsplit("/gradebookItems/", 1)[0] + "/gradebookItems/nope/grade"
    assert signed(http, "GET", unknown_item)[0].status_code == 404


# -- injected faults ---------------------------------------------------------------------------------------
def test_injected_503_is_vendor_unavailable(adapter: LearningStudioAdapter, control: SandboxClient) -> None:
    control.fault(status=503, path="/grade$", method="GET")
    with pytest.raises(errors.VendorUnavailable) as info:
        adapter.deliver(event())
    assert info.value.status == 503 and info.value.vendor_message == "injected fault"


def test_injected_429_is_rate_limited(adapter: LearningStudioAdapter, control: SandboxClient) -> None:
    control.fault(status=429, retry_after=5, path="/gradebookItem$")
    with pytest.raises(errors.RateLimited) as info:
        adapter.deliver(event())
    assert info.value.retry_after == 5.0


def test_dropped_connection_is_a_network_error(
    adapter: LearningStudioAdapter, control: SandboxClient
) -> None:
    control.fault(drop=True, path="/gradebookItem$")
    with pytest.raises(errors.NetworkError):
        adapter.deliver(event())


def test_dropped_post_is_read_again_and_posted_once_more(adapter: LearningStudioAdapter,
                                                         control: SandboxClient) -> None:
    control.fault(drop=True, method="POST")
    assert adapter.deliver(event()).action == "grade.post"
    log = [(r["method"], r.get("fault"), r["status"]) for r in control.requests(path="/grade$")]
    assert log == [("GET", None, 404), ("POST", "drop", None), ("GET", None, 404), ("POST", None, 201)]
    assert len(control.state()["grades"]) == 1


def test_timed_out_post_never_makes_two_grades(
    sandbox: Running, control: SandboxClient, cache: RedisCache
) -> None:
    slow = build(sandbox.url, cache, timeout=0.3)
    control.fault(latency=0.8, method="POST")  # the POST lands, but after the client gave up
    try:
        result = slow.deliver(event())
    finally:
        slow.close()
    assert result.action in ("grade.post", "grade.put")
    deadline = time.time() + 3
    while time.time() < deadline and len(control.requests(method="POST")) < 2:
        time.sleep(0.05)
    posts = [r["status"] for r in control.requests(method="POST")]
    assert sorted(posts) == [201, 400]  # the late one was refused as already existing
    assert len(control.state()["grades"]) == 1
