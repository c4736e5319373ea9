"""Publishing: all-or-nothing validation, one queue per destination, nothing secret in the broker."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import Cluster
from tests.integration.test_pipeline import lt_event, ti_event
from worker.publish import InvalidEvents, Publisher, PublishError
from worker.settings import Settings

pytestmark = pytest.mark.integration


def ed_event() -> dict[str, object]:
    return {"destination": "ed", "learner_id": "p-1", "score_given": 4, "score_maximum": 5,
            "target": {"class_id": "c-1", "assignment_id": "a-1", "person_token": "person-secret"},
            "attachments": [{"type": "link", "url": "https://work.example/1"}]}


def ls_event() -> dict[str, object]:
    return {"destination": "ls", "learner_id": "28456671", "score_given": 80, "score_maximum": 100,
            "target": {"course_id": "31388494", "item_id": "100561235546"}}


def test_invalid_item_publishes_nothing(cluster: Cluster, redis_client: redis.Redis) -> None:
    with pytest.raises(InvalidEvents) as info:
        cluster.publisher.publish_many([lt_event(), lt_event(score_given=-1), ti_event(learner_id="x")])
    assert info.value.errors == {
        1: ["score_given: Input should be greater than or equal to 0"],
        2: ["learner_id: must be a UUID for a thoughtindustries destination"],
    }
    assert redis_client.keys("gradesync:event:*") == []
    assert redis_client.llen("grades") == 0


def test_every_destination_shares_one_queue_and_messages_carry_no_secret(
    cluster: Cluster, redis_client: redis.Redis
) -> None:
    ids = cluster.publisher.publish_many([lt_event(), lt_event(learner_id="l2"), ti_event(), ed_event(), ls_event()])
    assert len(set(ids)) == 5
    assert redis_client.llen("grades") == 5  # one shared queue, not one per destination
    assert redis_client.keys("grades.*") == []
    raw = redis_client.lrange("grades", 0, -1)
    for message in raw:
        envelope = json.loads(message)
        assert envelope["headers"]["task"] == "gradesync.deliver"
        body = base64.b64decode(envelope["body"]).decode()
        assert "demo-service-key" not in body and "person-secret" not in body
        args, kwargs, _ = json.loads(body)
        assert args[0] in ids and set(kwargs) == {"token", "destination"}
    for eid in ids:
        rec = cluster.store.ledger.load(eid)
        assert rec is not None and rec.state == "queued" and rec.attempts == 0


def test_publish_many_returns_ids_in_input_order(cluster: Cluster) -> None:
    events = [lt_event(learner_id=f"o{i}") for i in range(50)]
    ids = cluster.publisher.publish_many(events)
    learners = [cluster.store.ledger.load(i).fields["learner_id"] for i in ids]  # type: ignore[union-attr]
    assert learners == [f"o{i}" for i in range(50)]


def test_unreachable_redis_is_a_clear_error(cluster: Cluster, tmp_path: Path) -> None:
    dead = Settings(redis_url="redis://127.0.0.1:1/0", destinations_file=cluster.destinations)
    publisher = Publisher(dead)
    with pytest.raises(PublishError) as info:
        publisher.publish_many([lt_event()])
    assert "Redis at redis://127.0.0.1:1/0 is unavailable" in str(info.value)
    assert "nothing was published" in str(info.value)
    assert info.value.published == []
