"""lti_ags through real `gradesync worker` processes: publish → worker → LTI platform simulator, with the
token and line item caches shared in Redis by two workers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.base import Running
from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster

AGS = "https://purl.imsglobal.org/spec/lti-ags/scope/"


def lti_event(target: dict[str, Any], **over: Any) -> dict[str, Any]:
    event = {"destination": "lti", "learner_id": "lti-learner-1", "score_given": 8, "score_maximum": 10,
             "target": target}
    event.update(over)
    return event


def test_two_workers_deliver_scores_create_one_line_item_and_share_one_token(
        cluster: Cluster, vendors: dict[str, SandboxClient], sandbox: dict[str, Running]) -> None:
    lti = vendors["lti_ags"]
    url = sandbox["lti_ags"].url
    (moodle_item,) = lti.configure(seed=[{"host": url.split("://")[1], "course": "3", "style": "moodle",
                                          "resourceLinkId": "rl-seeded", "label": "Seeded", "scoreMaximum": 10}])[
        "seeded"]
    lti.fault(method="POST", path="line_items$", latency=0.3, times=-1)  # a slow create widens the race
    cluster.start_worker(concurrency=4)
    cluster.start_worker(concurrency=4)
    container = f"{url}/api/lti/courses/9/line_items"
    now = datetime.now(UTC)
    events = [lti_event({"lineitems_url": container, "resource_link_id": "rl-new", "label": "Quiz"},
                        learner_id=f"learner-{i}") for i in range(8)]
    events.append(lti_event({"line_item_url": moodle_item}, occurred_at=now.isoformat()))
    stale = lti_event({"line_item_url": moodle_item}, score_given=1,
                      occurred_at=(now - timedelta(hours=1)).isoformat())
    ids = cluster.publisher.publish_many(events)
    states = cluster.wait_for(ids)
    assert set(states.values()) == {"succeeded"}, states
    stale_id = cluster.publisher.publish(stale)
    assert cluster.wait_for([stale_id]) == {stale_id: "superseded"}
    state = lti.state()
    assert [i["label"] for i in state["line_items"]] == ["Seeded", "Quiz"]  # created exactly once
    assert len(lti.requests(method="POST", path="line_items$")) == 1
    assert len(state["scores"]) == 9
    seeded = [s for s in state["scores"] if s["lineItem"] == moodle_item]
    assert [s["scoreGiven"] for s in seeded] == [8]
    assert state["tokens_issued"] == 1  # one token for two worker processes
    posts = lti.requests(method="POST", path="/lineitem/scores$")
    assert posts and all(p["query"] == {"type_id": ["1"]} for p in posts)
    bearer = {p["headers"]["authorization"].split()[1] for p in lti.requests(path="/scores$")}
    assertions = [r["body"] for r in lti.requests(path="/token$")]
    logs = cluster.log(0) + cluster.log(1)
    assert "lti_token" in logs  # the workers did log the token fetch, without any secret:
    assert not any(t in logs for t in bearer) and "PRIVATE KEY" not in logs and "eyJ" not in logs
    assert assertions and not any(a.split("client_assertion=")[1].split("&")[0][:40] in logs for a in assertions)


def test_outage_is_retried_and_a_refused_scope_is_dead_lettered_with_its_name(
        local: Cluster, vendors: dict[str, SandboxClient], sandbox: dict[str, Running]) -> None:
    lti = vendors["lti_ags"]
    url = sandbox["lti_ags"].url
    (item,) = lti.configure(seed=[{"host": url.split("://")[1], "course": "3", "resourceLinkId": "rl-1",
                                   "label": "A", "scoreMaximum": 10}])["seeded"]
    lti.fault(method="POST", path="/scores$", status=503, retry_after=0, times=2)
    local.start_local(concurrency=2)
    ok = local.publisher.publish(lti_event({"line_item_url": item}))
    assert local.wait_for([ok]) == {ok: "succeeded"}
    assert [h["outcome"] for h in local.store.ledger.history(ok)] == ["retry", "retry", "succeeded"]
    local.store.redis.delete(*local.store.redis.keys("gradesync:cache:lti_token:*"))
    lti.configure(allowed_scopes=[f"{AGS}lineitem"])
    refused = local.publisher.publish(lti_event({"line_item_url": item}, learner_id="lti-learner-2"))
    assert local.wait_for([refused]) == {refused: "dead_lettered"}
    record = local.store.ledger.load(refused)
    assert record is not None
    final = record.json_field("final_error") or record.json_field("last_error")
    assert final["error_class"] == "Forbidden" and f"{AGS}score" in final["message"]
    assert json.dumps(final).count("Bearer") == 0
