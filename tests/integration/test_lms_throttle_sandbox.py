"""The LTI platform simulator's throttle switches over real HTTP (rate_limit_style, leaky_bucket), and
lti_ags recognising each shape as a throttle (RateLimited, no token refresh)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from sandbox import DEMO_CREDENTIALS, make_app
from sandbox.base import Running, start
from sandbox.control import SandboxClient
from sandbox.lti_demo import demo_jwks, demo_key
from tests.integration.test_lti_ags_sandbox import Build, ev, seed
from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.http import make_client
from worker.adapters.lti_ags import LtiAgsAdapter
from worker.store.cache import RedisCache
from worker.vendors.lti import LtiAgsDestination

pytestmark = pytest.mark.integration


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
        dest = LtiAgsDestination(**{
            "name": "lti", "vendor": "lti_ags", "base_url": platform.url,
            "client_id": DEMO_CREDENTIALS["lti_ags"]["client_id"], "token_url": f"{platform.url}/login/oauth2/token",
            "private_key_env": "K", "private_key": SecretStr(k.private_pem().decode()), "kid": k.kid, "timeout": 5.0,
            **over})
        adapter = LtiAgsAdapter(dest, AdapterContext(http=make_client(dest), cache=RedisCache(redis_client, "thr")))
        made.append(adapter)
        return adapter

    yield make
    for a in made:
        a.close()


@pytest.mark.parametrize(("style", "status", "retry_after", "text"), [
    ("retry_after", 429, True, "rate limit exceeded"),
    ("canvas403", 403, False, "403 Forbidden (Rate Limit Exceeded)\n"),
    ("canvas429", 429, False, "429 Too Many Requests (Rate Limit Exceeded)\n"),
    ("d2l", 429, True, ""),
])
def test_each_style_over_the_limit(style: str, status: int, retry_after: bool, text: str, build: Build,
                                   control: SandboxClient, platform: Running) -> None:
    (line_item,) = seed(control, platform)
    control.configure(rate_limit_style=style)
    control.rate_limit(6, burst=2)  # the token and one score, then refused for ~10 s
    adapter = build()
    adapter.deliver(ev({"line_item_url": line_item}))
    ok = control.requests(method="POST", path="/scores$")[-1]
    assert ok["status"] == 200
    with pytest.raises(errors.RateLimited):
        adapter.deliver(ev({"line_item_url": line_item}, learner_id="lti-user-2"))
    answer = httpx.post(f"{platform.url}/api/lti/courses/7/line_items/1/scores")
    assert answer.status_code == status and text in answer.text
    assert ("Retry-After" in answer.headers) is retry_after
    if style.startswith("canvas"):
        assert answer.headers["X-Rate-Limit-Remaining"] == "0.0"
    else:
        assert "X-Rate-Limit-Remaining" not in answer.headers
    state = control.state()
    assert state["tokens_issued"] == 1  # a throttle never asked for a fresh token
    assert control.counts()["throttled"] == 2


def test_d2l_ordinary_answers_carry_the_budget(control: SandboxClient, platform: Running) -> None:
    control.configure(rate_limit_style="d2l")
    control.rate_limit(600, burst=50)
    answer = httpx.post(f"{platform.url}/login/oauth2/token", data={"grant_type": "x"})
    assert answer.status_code == 400
    assert answer.headers["X-Request-Cost"] == "10"
    assert int(answer.headers["X-Rate-Limit-Remaining"]) == 490
    assert int(answer.headers["X-Rate-Limit-Reset"]) >= 1


def test_the_leaky_bucket_reports_cost_and_remaining_then_refuses_like_canvas(
        control: SandboxClient, platform: Running) -> None:
    control.configure(rate_limit_style="canvas403", leaky_bucket={"per_minute": 6})  # cost 100 a request
    remaining = []
    for _ in range(6):
        answer = httpx.post(f"{platform.url}/login/oauth2/token", data={"grant_type": "x"})
        assert answer.status_code == 400 and float(answer.headers["X-Request-Cost"]) == 100.0
        remaining.append(float(answer.headers["X-Rate-Limit-Remaining"]))
    assert remaining == sorted(remaining, reverse=True) and remaining[-1] < 10
    refused = httpx.post(f"{platform.url}/login/oauth2/token", data={"grant_type": "x"})
    assert refused.status_code == 403 and refused.text == "403 Forbidden (Rate Limit Exceeded)\n"
    assert "X-Request-Cost" not in refused.headers
    assert control.counts()["throttled"] == 1
