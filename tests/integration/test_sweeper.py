"""Stranded events (a producer died between recording an event and queuing its message) are found by the
sweeper and delivered exactly once; a sweep never leaves two live messages for one event. Real Redis,
real worker processes, the TI simulator (not idempotent: every POST it records is a write)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from producers.publish import Delivery, dispatch, validate_all
from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster
from worker.sweeper import Sweeper

pytestmark = pytest.mark.integration


def ti_event() -> dict[str, Any]:
    return {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": 5, "score_maximum": 10,
            "target": {"assignment_id": str(uuid.uuid4())}}


def _record_only(cluster: Cluster, events: list[dict[str, Any]]) -> list[Delivery]:
    """What a producer that dies before queuing leaves behind: the ledger records, no message."""
    return cluster.publisher._record(validate_all(events, vendors=cluster.settings.vendors()))


def test_the_register_script_indexes_queued_events_and_a_start_removes_them(cluster: Cluster) -> None:
    [eid] = cluster.publisher.publish_many([ti_event()])
    assert cluster.store.redis.zscore(cluster.store.keys.queued, eid) is not None
    cluster.start_worker()
    assert cluster.wait_for([eid]) == {eid: "succeeded"}
    assert cluster.store.redis.zscore(cluster.store.keys.queued, eid) is None


def test_stranded_events_are_queued_by_a_worker_and_delivered_once(
        cluster: Cluster, vendors: dict[str, SandboxClient]) -> None:
    events = [ti_event() for _ in range(3)]
    stranded = _record_only(cluster, events)
    ids = [d.event_id for d in stranded]
    assert cluster.store.redis.llen("grades.ti") == 0  # no message at all
    assert {cluster.state(e) for e in ids} == {"queued"}
    cluster.env["GRADESYNC_STRANDED_AFTER"] = "2"
    cluster.start_worker()
    assert set(cluster.wait_for(ids).values()) == {"succeeded"}
    assert "stranded_events_queued" in cluster.log()
    written = sorted(a["learnerId"] for a in vendors["thoughtindustries"].state()["activities"])
    assert written == sorted(e["learner_id"] for e in events)


def test_a_sweep_turns_any_old_message_into_a_no_op(cluster: Cluster, vendors: dict[str, SandboxClient]) -> None:
    events = [ti_event() for _ in range(2)]
    old = _record_only(cluster, events)
    app = cluster.publisher.app
    sweeper = Sweeper(cluster.store, app, cluster.settings.model_copy(update={"stranded_after": 60.0}))
    assert sweeper.tick() == 0  # not old enough yet
    dispatch(app, old)  # the old messages exist after all (a slow producer): the queue is not empty
    assert sweeper.tick(now=time.time() + 61) == 0  # a busy queue makes the sweep wait longer
    assert sweeper.tick(now=time.time() + 4 * 60 + 1) == 2
    other = Sweeper(cluster.store, app, cluster.settings.model_copy(update={"stranded_after": 60.0}))
    assert other.tick(now=time.time() + 10_000) == 0  # one leader at a time
    for d in old:
        rec = cluster.store.ledger.load(d.event_id)
        assert rec is not None and rec.token != d.token and rec.fields["sweeps"] == "1"
    assert cluster.store.redis.llen("grades.ti") == 4  # two old messages and two new ones

    cluster.start_worker()
    ids = [d.event_id for d in old]
    assert set(cluster.wait_for(ids).values()) == {"succeeded"}
    deadline = time.monotonic() + 30
    while cluster.store.redis.llen("grades.ti") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.log().count("duplicate_message_skipped") == 2  # the old messages ran nothing
    written = sorted(a["learnerId"] for a in vendors["thoughtindustries"].state()["activities"])
    assert written == sorted(e["learner_id"] for e in events)


def test_a_retry_whose_message_was_lost_is_swept_too(cluster: Cluster, vendors: dict[str, SandboxClient]) -> None:
    from worker.pump import RetryPump

    [eid] = cluster.publisher.publish_many([ti_event()])
    rec = cluster.store.ledger.load(eid)
    assert rec is not None
    cluster.store.redis.delete("grades.ti")  # the first message is gone too: only the retry matters here
    cluster.store.ledger.schedule_retry(rec, None, token="retry-token-1", due=time.time() - 1, error=None)
    app = cluster.publisher.app
    assert RetryPump(cluster.store, app).tick() == 1  # the pump queues the retry ...
    assert cluster.store.redis.zscore(cluster.store.keys.queued, eid) is not None  # ... and indexes it
    cluster.store.redis.delete("grades.ti")  # ... and the message vanishes (a Redis crash at the wrong moment)
    sweeper = Sweeper(cluster.store, app, cluster.settings.model_copy(update={"stranded_after": 60.0}))
    assert sweeper.tick(now=time.time() + 61) == 1
    assert cluster.store.redis.llen("grades.ti") == 1
    cluster.start_worker()
    assert cluster.wait_for([eid]) == {eid: "succeeded"}
    assert len(vendors["thoughtindustries"].state()["activities"]) == 1
