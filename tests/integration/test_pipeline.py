"""The core pipeline through real worker processes: publish → queue per destination → adapter → ledger."""

from __future__ import annotations

import json
import uuid

import pytest

from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration


def lt_event(**over: object) -> dict[str, object]:
    e: dict[str, object] = {
        "destination": "lt",
        "learner_id": "learner-1",
        "score_given": 7,
        "score_maximum": 10,
        "target": {"line_item_id": "https://lms.example/api/lti/courses/1/line_items/1",
                   "service_key": "demo-service-key"},
    }
    e.update(over)
    return e


def ti_event(**over: object) -> dict[str, object]:
    e: dict[str, object] = {
        "destination": "ti",
        "learner_id": str(uuid.uuid4()),
        "score_given": 45,
        "score_maximum": 50,
        "comment": "Nice work",
        "target": {"assignment_id": str(uuid.uuid4())},
    }
    e.update(over)
    return e


def test_events_reach_their_vendor_and_the_ledger_says_succeeded(
    local: Cluster, vendors: dict[str, SandboxClient]
) -> None:
    local.start_local()
    ids = local.publisher.publish_many([lt_event(), ti_event()])
    states = local.wait_for(ids)
    assert states == {ids[0]: "succeeded", ids[1]: "succeeded"}
    posts = vendors["ltiaas"].requests(method="POST", path="/scores$")
    assert len(posts) == 1
    assert json.loads(posts[0]["body"])["scoreGiven"] == 7
    assert len(vendors["thoughtindustries"].requests(method="POST")) == 1
    history = local.store.ledger.history(ids[1])
    assert [h["outcome"] for h in history] == ["succeeded"]
    assert history[0]["status"] == 302
