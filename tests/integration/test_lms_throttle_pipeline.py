"""Real LMS throttles through the whole pipeline (publisher → in-process workers → LTI platform simulator,
real Redis): self-hosted Canvas's 403 throttle delivers every score with no dead letter, and a Canvas
leaky bucket that reports its budget is paced from its headers before it refuses."""

from __future__ import annotations

import pytest

from sandbox.base import Running
from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster
from tests.integration.test_lti_ags_pipeline import lti_event

pytestmark = pytest.mark.integration


def seed(lti: SandboxClient, sandbox: dict[str, Running]) -> str:
    host = sandbox["lti_ags"].url.split("://")[1]
    (item,) = lti.configure(seed=[{"host": host, "course": "3", "resourceLinkId": "rl-1", "label": "A",
                                   "scoreMaximum": 10}])["seeded"]
    return str(item)


def test_canvas_403_throttling_delivers_every_score(local: Cluster, vendors: dict[str, SandboxClient],
                                                    sandbox: dict[str, Running]) -> None:
    lti = vendors["lti_ags"]
    item = seed(lti, sandbox)
    lti.configure(rate_limit_style="canvas403")
    lti.rate_limit(120, burst=4)
    local.start_local(concurrency=4)
    n = 24
    ids = local.publisher.publish_many([lti_event({"line_item_url": item}, learner_id=f"learner-{i}")
                                        for i in range(n)])
    states = local.wait_for(ids, timeout=240)
    assert list(states.values()) == ["succeeded"] * n, states
    assert len(lti.state()["scores"]) == n
    refused = [r for r in lti.requests() if r["status"] == 403]
    assert refused, "the platform never throttled: the test proves nothing"
    assert lti.state()["tokens_issued"] == 1  # a 403 throttle never made a worker fetch a fresh token
    for eid in ids:  # the throttled attempts spent nothing
        history = local.store.ledger.history(eid)
        assert sum(1 for h in history if h.get("counted", True)) == 1
        assert all(h.get("counted") is False for h in history if h.get("status") == 403)


def test_a_leaky_bucket_is_paced_from_its_headers(local: Cluster, vendors: dict[str, SandboxClient],
                                                  sandbox: dict[str, Running]) -> None:
    lti = vendors["lti_ags"]
    item = seed(lti, sandbox)
    lti.configure(rate_limit_style="canvas403", leaky_bucket={"per_minute": 240})  # cost 2.5: 240 at once
    local.start_local(concurrency=4)
    n = 300  # more than the bucket holds: without pacing, about 60 would be refused
    ids = local.publisher.publish_many([lti_event({"line_item_url": item}, learner_id=f"learner-{i}")
                                        for i in range(n)])
    states = local.wait_for(ids, timeout=300)
    assert list(states.values()) == ["succeeded"] * n, states
    counts = lti.counts()
    assert counts["throttled"] <= 0.05 * counts["requests"], counts
    flow = local.store.redis.hgetall(local.store.keys.flow("lti"))
    assert b"rate" in flow  # the headers slowed the destination down
