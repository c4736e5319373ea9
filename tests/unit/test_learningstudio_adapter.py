"""The LearningStudio adapter against a scripted vendor (httpx.MockTransport, no network)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from worker import errors
from worker.adapters import oauth1_cmac
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.learningstudio import CACHE_NAMESPACE, CACHE_TTL_SECONDS, LearningStudioAdapter
from worker.events import GradeEvent
from worker.vendors.learningstudio import LearningStudioDestination

SECRET = "s3cr3t-s3cr3t-16"
BASE = "https://api.learningstudio.test"
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def destination(secret: str | None = SECRET) -> LearningStudioDestination:
    return LearningStudioDestination(
        name="ls",
        vendor="learningstudio",
        base_url=BASE,
        application_id="app-id",
        consumer_key="consumer-key",
        shared_secret_env="LS_SECRET",
        shared_secret=SecretStr(secret) if secret is not None else None,
    )


def event(**overrides: Any) -> GradeEvent:
    data: dict[str, Any] = {
        "destination": "ls",
        "learner_id": "28456671",
        "score_given": 8,
        "score_maximum": 10,
        "letter_grade": "B",
        "comment": "Example grade comment.",
        "target": {"course_id": "31388494", "item_id": "100561235546"},
    }
    data.update(overrides)
    return GradeEvent.model_validate(
        {k: v for k, v in data.items() if v is not None}, context={"vendors": {"ls": "learningstudio"}}
    )


def timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def grade_json(grade_id: int | None = 18287, **fields: Any) -> dict[str, Any]:
    return {"grade": {"id": grade_id, "points": 10.0, "letterGrade": "A", "comments": "", **fields}}


class FakeLearningStudio:
    """Scripted answers per endpoint (defaults: item found, no grade yet, POST 201, PUT 204)."""

    def __init__(self, points_possible: float = 10) -> None:
        self.requests: list[httpx.Request] = []
        self.script: dict[str, list[Answer]] = defaultdict(list)
        self.item = {"id": "b24e5de6-ABEE-1334-XTZF-123456789000", "pointsPossible": points_possible}

    def on(self, key: str, *answers: Answer) -> None:
        self.script[key].extend(answers)

    @staticmethod
    def key(request: httpx.Request) -> str:
        if request.url.path.endswith("/gradebookItem"):
            return "item"
        return f"grade.{request.method}"

    def default(self, key: str) -> httpx.Response:
        return {
            "item": httpx.Response(200, json={"gradebookItem": self.item}),
            "grade.GET": httpx.Response(404, text="Grade not found"),
            "grade.POST": httpx.Response(201, json=grade_json(7), headers={"Location": f"{BASE}/x"}),
            "grade.PUT": httpx.Response(204),
        }[key]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = self.key(request)
        answer = self.script[key].pop(0) if self.script[key] else self.default(key)
        return answer(request) if callable(answer) else answer

    def calls(self) -> list[str]:
        return [self.key(r) for r in self.requests]


class DictCache:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Any] = {}
        self.ttls: dict[tuple[str, str], int] = {}

    def get_json(self, namespace: str, key: str) -> Any | None:
        return self.data.get((namespace, key))

    def set_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> None:
        self.data[(namespace, key)] = json.loads(json.dumps(value))
        self.ttls[(namespace, key)] = ttl_seconds

    def delete(self, namespace: str, key: str) -> None:
        self.data.pop((namespace, key), None)


@pytest.fixture
def fake() -> FakeLearningStudio:
    return FakeLearningStudio()


def adapter_for(fake: FakeLearningStudio, cache: DictCache | None = None,
                observed: list[tuple[str, str, int | None]] | None = None) -> LearningStudioAdapter:
    dest = destination()

    def observe(method: str, route: str, status: int | None, seconds: float) -> None:
        if observed is not None:
            observed.append((method, route, status))

    ctx = AdapterContext(http=make_client(dest, transport=httpx.MockTransport(fake)), observe=observe)
    if cache is not None:
        ctx.cache = cache
    return LearningStudioAdapter(dest, ctx)


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def assert_all_signed(requests: list[httpx.Request]) -> None:
    for request in requests:
        assert "authorization" not in request.headers
        header = request.headers["x-authorization"]
        oauth1_cmac.verify(
            request.method, str(request.url), request.content, header,
            consumer_key="consumer-key", application_id="app-id", secret=SECRET,
        )


def nonce_of(request: httpx.Request) -> str:
    return oauth1_cmac.parse_header(request.headers["x-authorization"]).nonce


# -- the flow ----------------------------------------------------------------------------------------
def test_no_grade_yet_posts(fake: FakeLearningStudio) -> None:
    observed: list[tuple[str, str, int | None]] = []
    result = adapter_for(fake, observed=observed).deliver(event())
    assert (result.status, result.action, result.detail) == (201, "grade.post", "grade 7")
    assert fake.calls() == ["item", "grade.GET", "grade.POST"]
    item, get, post = fake.requests
    assert item.url.path == "/courses/31388494/items/100561235546/gradebookItem"
    assert post.url.path == get.url.path == (
        "/users/28456671/courses/31388494/gradebookItems/b24e5de6-ABEE-1334-XTZF-123456789000/grade"
    )
    assert body_of(post) == {"grade": {"points": 8, "letterGrade": "B", "comments": "Example grade comment."}}
    assert post.headers["content-type"] == "application/json"
    assert_all_signed(fake.requests)
    assert [route for _, route, _ in observed] == ["ls.gradebook_item.get", "ls.grade.get", "ls.grade.post"]
    assert [status for _, _, status in observed] == [200, 404, 201]


def test_existing_grade_is_updated_with_put(fake: FakeLearningStudio) -> None:
    fake.on("grade.GET", httpx.Response(200, json=grade_json(18287)))
    result = adapter_for(fake).deliver(event(score_given=9.5))
    assert (result.status, result.action, result.detail) == (204, "grade.put", "grade 18287")
    assert fake.calls() == ["item", "grade.GET", "grade.PUT"]
    assert body_of(fake.requests[-1])["grade"]["points"] == 9.5
    assert_all_signed(fake.requests)


def test_blank_grade_is_updated_with_put(fake: FakeLearningStudio) -> None:
    blank = {"grade": {"id": 1051754261, "points": None, "letterGrade": "", "comments": ""}}
    fake.on("grade.GET", httpx.Response(200, json=blank))
    result = adapter_for(fake).deliver(event())
    assert (result.action, result.detail) == ("grade.put", "grade 1051754261")
    assert fake.calls() == ["item", "grade.GET", "grade.PUT"]


def test_grade_200_without_grade_wrapper_is_unexpected(fake: FakeLearningStudio) -> None:
    fake.on("grade.GET", httpx.Response(200, json={"id": 1}))
    with pytest.raises(errors.UnexpectedResponse):
        adapter_for(fake).deliver(event())


@pytest.mark.parametrize(
    ("given", "maximum", "possible", "points"),
    [(8, 10, 50, 40), (2, 3, 100, 66.67), (7.5, 10, 10, 7.5), (1, 3, 1, 0.33), (45, 50, 0, 45)],
)
def test_points_rescaled_to_points_possible(
    given: float, maximum: float, possible: float, points: float
) -> None:
    fake = FakeLearningStudio(points_possible=possible)
    adapter_for(fake).deliver(event(score_given=given, score_maximum=maximum))
    assert body_of(fake.requests[-1])["grade"]["points"] == points


def test_only_the_fields_the_event_has_are_sent(fake: FakeLearningStudio) -> None:
    adapter_for(fake).deliver(event(letter_grade=None, comment=None))
    assert body_of(fake.requests[-1]) == {"grade": {"points": 8}}
    adapter_for(fake).deliver(event(score_given=None, score_maximum=None, comment=None))
    assert body_of(fake.requests[-1]) == {"grade": {"letterGrade": "B"}}


def test_event_without_anything_to_send_is_refused_without_a_request(fake: FakeLearningStudio) -> None:
    with pytest.raises(errors.InvalidRequest):
        adapter_for(fake).deliver(
            event(score_given=None, score_maximum=None, letter_grade=None, comment=None)
        )
    assert fake.requests == []


def test_path_segments_are_percent_encoded(fake: FakeLearningStudio) -> None:
    fake.item = {"id": "g/1 ?", "pointsPossible": 10}
    adapter_for(fake).deliver(event(learner_id="a/b c#?~", target={"course_id": "c%1", "item_id": ".."}))
    item, get, _ = fake.requests
    assert item.url.raw_path == b"/courses/c%251/items/%2E%2E/gradebookItem"
    assert get.url.raw_path == b"/users/a%2Fb%20c%23%3F~/courses/c%251/gradebookItems/g%2F1%20%3F/grade"
    assert_all_signed(fake.requests)


# -- the gradebook item cache --------------------------------------------------------------------------
def test_gradebook_item_is_cached_for_a_day(fake: FakeLearningStudio) -> None:
    cache = DictCache()
    adapter_for(fake, cache).deliver(event())
    key = (CACHE_NAMESPACE, "ls:31388494:100561235546")
    assert cache.data[key] == {"id": fake.item["id"], "pointsPossible": 10}
    assert cache.ttls[key] == CACHE_TTL_SECONDS == 86_400


def test_cache_hit_skips_the_lookup(fake: FakeLearningStudio) -> None:
    cache = DictCache()
    cached = {"id": "cached-guid", "pointsPossible": 20}
    cache.set_json(CACHE_NAMESPACE, "ls:31388494:100561235546", cached, 60)
    adapter_for(fake, cache).deliver(event())
    assert fake.calls() == ["grade.GET", "grade.POST"]
    assert "/gradebookItems/cached-guid/grade" in fake.requests[0].url.path
    assert body_of(fake.requests[-1])["grade"]["points"] == 16  # rescaled to the cached pointsPossible


def test_stale_cached_item_is_looked_up_again(fake: FakeLearningStudio) -> None:
    cache = DictCache()
    cache.set_json(CACHE_NAMESPACE, "ls:31388494:100561235546", {"id": "gone", "pointsPossible": 10}, 60)
    fake.on("grade.POST", httpx.Response(404, text="Gradebook item not found"))
    result = adapter_for(fake, cache).deliver(event())
    assert result.action == "grade.post"
    assert fake.calls() == ["grade.GET", "grade.POST", "item", "grade.GET", "grade.POST"]
    assert cache.data[(CACHE_NAMESPACE, "ls:31388494:100561235546")]["id"] == fake.item["id"]


# -- a POST without an answer ---------------------------------------------------------------------------
def test_timed_out_post_reads_again_and_puts_when_it_landed(fake: FakeLearningStudio) -> None:
    fake.on("grade.POST", timeout)
    fake.on("grade.GET", httpx.Response(404, text="Grade not found"))
    fake.on("grade.GET", httpx.Response(200, json=grade_json(99)))
    result = adapter_for(fake).deliver(event())
    assert (result.action, result.detail) == ("grade.put", "grade 99")
    assert fake.calls() == ["item", "grade.GET", "grade.POST", "grade.GET", "grade.PUT"]
    assert_all_signed(fake.requests)
    assert len({nonce_of(r) for r in fake.requests}) == len(fake.requests)


def test_lost_post_that_did_not_land_is_posted_once_more(fake: FakeLearningStudio) -> None:
    fake.on("grade.POST", refused)
    result = adapter_for(fake).deliver(event())
    assert result.action == "grade.post"
    assert fake.calls() == ["item", "grade.GET", "grade.POST", "grade.GET", "grade.POST"]


def test_second_lost_post_is_retryable_and_not_posted_a_third_time(fake: FakeLearningStudio) -> None:
    fake.on("grade.POST", timeout, timeout, timeout)
    with pytest.raises(errors.VendorTimeout):
        adapter_for(fake).deliver(event())
    assert fake.calls().count("grade.POST") == 2


def test_post_refused_as_already_existing_switches_to_put(fake: FakeLearningStudio) -> None:
    fake.on("grade.POST", httpx.Response(400, json={"message": "Grade already exists"}))
    fake.on("grade.GET", httpx.Response(404, text="Grade not found"), httpx.Response(200, json=grade_json(5)))
    result = adapter_for(fake).deliver(event())
    assert result.action == "grade.put"


# -- 401 -------------------------------------------------------------------------------------------------
def test_401_is_retried_once_freshly_signed_then_permanent(fake: FakeLearningStudio) -> None:
    fake.on("item", httpx.Response(401, text="Invalid signature"))
    fake.on("item", httpx.Response(401, text="Invalid signature"))
    with pytest.raises(errors.AuthenticationFailed) as info:
        adapter_for(fake).deliver(event())
    assert info.value.status == 401
    assert info.value.vendor_message == "Invalid signature"
    assert fake.calls() == ["item", "item"]
    first, second = fake.requests
    assert nonce_of(first) != nonce_of(second)
    assert first.headers["x-authorization"] != second.headers["x-authorization"]


def test_401_then_success_delivers(fake: FakeLearningStudio) -> None:
    fake.on("grade.POST", httpx.Response(401, text="Timestamp expired"))
    result = adapter_for(fake).deliver(event())
    assert result.action == "grade.post"
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 2 and posts[0].content == posts[1].content
    assert nonce_of(posts[0]) != nonce_of(posts[1])
    assert_all_signed(fake.requests)


# -- error mapping ---------------------------------------------------------------------------------------
def test_429_is_rate_limited_with_retry_after(fake: FakeLearningStudio) -> None:
    fake.on("grade.GET", httpx.Response(429, headers={"Retry-After": "7"}, text="Too many requests"))
    with pytest.raises(errors.RateLimited) as info:
        adapter_for(fake).deliver(event())
    assert info.value.retry_after == 7.0
    assert isinstance(info.value, errors.RetryableError)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_vendor_unavailable(fake: FakeLearningStudio, status: int) -> None:
    fake.on("grade.PUT", httpx.Response(status, text="Service Unavailable"))
    fake.on("grade.GET", httpx.Response(200, json=grade_json()))
    with pytest.raises(errors.VendorUnavailable) as info:
        adapter_for(fake).deliver(event())
    assert info.value.status == status


def test_network_failure_is_retryable(fake: FakeLearningStudio) -> None:
    fake.on("item", refused)
    with pytest.raises(errors.NetworkError):
        adapter_for(fake).deliver(event())


@pytest.mark.parametrize(
    ("status", "body", "cls", "message"),
    [
        (400, {"message": "Points must be numeric"}, errors.InvalidRequest, "Points must be numeric"),
        (403, "Access to this course is forbidden", errors.Forbidden, "Access to this course is forbidden"),
        (406, {"error": {"message": "Invalid body format"}}, errors.InvalidRequest, "Invalid body format"),
        (422, {"errors": [{"message": "a"}, {"message": "b"}]}, errors.InvalidRequest, "a; b"),
        (404, {"error": "not_found", "error_description": "No user"}, errors.NotFound, "No user"),
    ],
)
def test_permanent_refusals_carry_the_vendor_message(
    fake: FakeLearningStudio, status: int, body: Any, cls: type[errors.DeliveryError], message: str
) -> None:
    if isinstance(body, dict):
        fake.on("grade.POST", httpx.Response(status, json=body))
    else:
        fake.on("grade.POST", httpx.Response(status, text=body))
    with pytest.raises(cls) as info:
        adapter_for(fake).deliver(event())
    assert isinstance(info.value, errors.PermanentError)
    assert (info.value.status, info.value.vendor_message) == (status, message)
    assert fake.calls().count("grade.POST") == 1


def test_unknown_item_is_not_found(fake: FakeLearningStudio) -> None:
    fake.on("item", httpx.Response(404, text="Item not found"))
    with pytest.raises(errors.NotFound) as info:
        adapter_for(fake).deliver(event())
    assert info.value.vendor_message == "Item not found"
    assert fake.calls() == ["item"]


def test_item_answer_without_an_id_is_unexpected(fake: FakeLearningStudio) -> None:
    fake.on("item", httpx.Response(200, json={"gradebookItem": {"title": "x"}}))
    with pytest.raises(errors.UnexpectedResponse):
        adapter_for(fake).deliver(event())


# -- secrets ---------------------------------------------------------------------------------------------
def test_secrets_never_reach_errors(fake: FakeLearningStudio) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        signed = request.headers["x-authorization"]
        fragment = signed[signed.index("oauth_signature="):]
        return httpx.Response(400, text=f"Bad request: secret {SECRET}, {fragment}, header {signed}")

    fake.on("grade.POST", echo)
    with pytest.raises(errors.InvalidRequest) as info:
        adapter_for(fake).deliver(event())
    header = oauth1_cmac.parse_header(fake.requests[-1].headers["x-authorization"])
    signature = header.params["oauth_signature"]
    rendered = json.dumps(info.value.as_record()) + info.value.describe() + str(info.value)
    assert "Bad request: secret **********" in rendered
    assert SECRET not in rendered
    assert signature not in rendered
    assert oauth1_cmac.java_urlencode(signature) not in rendered


@pytest.mark.parametrize("secret", [None, "too-short", "x" * 20])
def test_bad_secret_is_a_configuration_error(secret: str | None) -> None:
    if secret is not None and len(secret) not in (16, 24, 32):
        # the settings refuse such a key (tests/unit/test_config_rules.py); the adapter guards
        # a destination built without them
        with pytest.raises(ValidationError, match="16, 24 or 32 bytes") as refused:
            destination(secret)
        assert secret not in str(refused.value)
    dest = (destination(secret) if secret is None else LearningStudioDestination.model_construct(
        **{**destination().model_dump(), "shared_secret": SecretStr(secret)}))
    with pytest.raises(errors.ConfigurationError) as info:
        LearningStudioAdapter(dest, AdapterContext(http=make_client(dest)))
    assert "ls" in info.value.message
    assert secret is None or secret not in info.value.message
