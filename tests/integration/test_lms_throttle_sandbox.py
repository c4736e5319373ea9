"""The LTI platform simulator's throttle switches over real HTTP (rate_limit_style, leaky_bucket), and
lti_ags recognising each shape as a throttle (RateLimited, no token refresh)."""

from __future__ import annotations

import httpx
import pytest

from sandbox.base import Running
from sandbox.control import SandboxClient
from tests.integration.test_lti_ags_sandbox import Build, build, control, ev, platform, seed  # noqa: F401 - fixtures
from worker import errors

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("style", "status", "retry_after", "text"), [
    ("retry_after", 429, True, "rate limit exceeded"),
    ("canvas403", 403, False, "403 Forbidden (Rate Limit Exceeded)\n"),
    ("canvas429", 429, False, "429 Too Many Requests (Rate Limit Exceeded)\n"),
    ("d2l", 429, True, ""),
])
def test_each_style_over_the_limit(style: str, status: int, retry_after: bool, text: str, build: Build,  # noqa: F811
                                   control: SandboxClient, platform: Running) -> None:  # noqa: F811
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


def test_d2l_ordinary_answers_carry_the_budget(control: SandboxClient, platform: Running) -> None:  # noqa: F811
    control.configure(rate_limit_style="d2l")
    control.rate_limit(600, burst=50)
    answer = httpx.post(f"{platform.url}/login/oauth2/token", data={"grant_type": "x"})
    assert answer.status_code == 400
    assert answer.headers["X-Request-Cost"] == "10"
    assert int(answer.headers["X-Rate-Limit-Remaining"]) == 490
    assert int(answer.headers["X-Rate-Limit-Reset"]) >= 1


def test_the_leaky_bucket_reports_cost_and_remaining_then_refuses_like_canvas(
        control: SandboxClient, platform: Running) -> None:  # noqa: F811
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
