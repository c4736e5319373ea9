"""Stranded events (a producer died between recording an event and queuing its message) are found by the
sweeper and delivered exactly once; a sweep never leaves two live messages for one event. Real Redis, an
in-process worker on the in-memory dispatcher, the TI simulator (not idempotent: every POST it records is
a write)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from structlog.testing import capture_logs

from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster
from worker.dispatch import Delivery
from worker.dispatch.memory import InMemoryDispatcher
from worker.publish import validate_all
from worker.sweeper import Sweeper

pytestmark = pytest.mark.integration


def ti_event() -> dict[str, Any]:
    return {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": 5, "score_maximum": 10,
            "target": {"assignment_id": str(uuid.uuid4())}}


def _record_only(cluster: Cluster, events: list[dict[str, Any]]) -> list[Delivery]:
    """What a producer that dies before queuing leaves behind: the ledger records, no message."""
    return cluster.publisher._record(validate_all(events, vendors=cluster.settings.vendors()))


def _memory(cluster: Cluster) -> InMemoryDispatcher:
    assert cluster.memory is not None
    return cluster.memory


def _waiting(cluster: Cluster) -> int:
    return _memory(cluster).depths(["ti"])["ti"]


def test_the_register_script_indexes_queued_events_and_a_start_removes_them(local: Cluster) -> None:
    [eid] = local.publisher.publish_many([ti_event()])
    assert local.store.redis.zscore(local.store.keys.queued, eid) is not None
    local.start_local()
    assert local.wait_for([eid]) == {eid: "succeeded"}
    assert local.store.redis.zscore(local.store.keys.queued, eid) is None


def test_stranded_events_are_queued_by_a_worker_and_delivered_once(
        local: Cluster, vendors: dict[str, SandboxClient]) -> None:
    events = [ti_event() for _ in range(3)]
    stranded = _record_only(local, events)
    ids = [d.event_id for d in stranded]
    assert _waiting(local) == 0  # no message at all
    assert {local.state(e) for e in ids} == {"queued"}
    with capture_logs() as logs:
        local.start_local(stranded_after=2.0)
        assert set(local.wait_for(ids).values()) == {"succeeded"}
    assert any(entry["event"] == "stranded_events_queued" for entry in logs)
    written = sorted(a["learnerId"] for a in vendors["thoughtindustries"].state()["activities"])
    assert written == sorted(e["learner_id"] for e in events)


def test_a_sweep_turns_any_old_message_into_a_no_op(local: Cluster, vendors: dict[str, SandboxClient]) -> None:
    events = [ti_event() for _ in range(2)]
    old = _record_only(local, events)
    memory = _memory(local)
    sweeper = Sweeper(local.store, memory, local.settings.model_copy(update={"stranded_after": 60.0}))
    assert sweeper.tick() == 0  # not old enough yet
    memory.send_many(old)  # the old messages exist after all (a slow producer): the queue is not empty
    assert sweeper.tick(now=time.time() + 61) == 0  # a busy queue makes the sweep wait longer
    assert sweeper.tick(now=time.time() + 4 * 60 + 1) == 2
    other = Sweeper(local.store, memory, local.settings.model_copy(update={"stranded_after": 60.0}))
    assert other.tick(now=time.time() + 10_000) == 0  # one leader at a time
    for d in old:
        rec = local.store.ledger.load(d.event_id)
        assert rec is not None and rec.token != d.token and rec.fields["sweeps"] == "1"
    assert _waiting(local) == 4  # two old messages and two new ones

    with capture_logs() as logs:
        local.start_local()
        ids = [d.event_id for d in old]
        assert set(local.wait_for(ids).values()) == {"succeeded"}
        deadline = time.monotonic() + 30
        while _waiting(local) and time.monotonic() < deadline:
            time.sleep(0.1)
        while (sum(entry["event"] == "duplicate_message_skipped" for entry in logs) < 2
               and time.monotonic() < deadline):
            time.sleep(0.1)  # the last message taken may still be running
    # the old messages ran nothing
    assert sum(entry["event"] == "duplicate_message_skipped" for entry in logs) == 2
    written = sorted(a["learnerId"] for a in vendors["thoughtindustries"].state()["activities"])
    assert written == sorted(e["learner_id"] for e in events)


def test_a_retry_whose_message_was_lost_is_swept_too(local: Cluster, vendors: dict[str, SandboxClient]) -> None:
    from worker.pump import RetryPump

    [eid] = local.publisher.publish_many([ti_event()])
    rec = local.store.ledger.load(eid)
    assert rec is not None
    memory = _memory(local)
    memory.clear()  # the first message is gone too: only the retry matters here
    local.store.ledger.schedule_retry(rec, None, token="retry-token-1", due=time.time() - 1, error=None)
    assert RetryPump(local.store, memory).tick() == 1  # the pump queues the retry ...
    assert local.store.redis.zscore(local.store.keys.queued, eid) is not None  # ... and indexes it
    memory.clear()  # ... and the message vanishes (a Redis crash at the wrong moment)
    sweeper = Sweeper(local.store, memory, local.settings.model_copy(update={"stranded_after": 60.0}))
    assert sweeper.tick(now=time.time() + 61) == 1
    assert _waiting(local) == 1
    local.start_local()
    assert local.wait_for([eid]) == {eid: "succeeded"}
    assert len(vendors["thoughtindustries"].state()["activities"]) == 1
