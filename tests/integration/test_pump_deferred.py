"""The retry pump re-queues a deferred event that is still ``in_progress``: a message re-delivered at once
after its worker died (RabbitMQ does so when the connection drops) finds the dead worker's learner+item
lease held, is deferred, and must come back once the lease expires — not be dropped."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import Cluster
from tests.integration.test_pipeline import ti_event
from worker.pump import RetryPump

pytestmark = pytest.mark.integration


def test_pump_requeues_a_deferred_in_progress_event(local: Cluster) -> None:
    memory = local.memory
    assert memory is not None
    [eid] = local.publisher.publish_many([ti_event()])
    r, keys = local.store.redis, local.store.keys
    assert memory.clear() == 1  # the first message was taken by a worker that then died
    r.hset(keys.event(eid), "state", "in_progress")
    record = local.store.ledger.load(eid)
    assert record is not None
    local.store.ledger.defer(record, time.time() - 1)  # what the re-delivered message did (lease busy)
    pump = RetryPump(local.store, memory)
    assert pump.tick() == 1
    [again] = [memory.take()]  # a message for it again, with the ledger's token
    assert again is not None and again.token == record.token and memory.take() is None
    assert r.zscore(keys.scheduled, eid) is None

    r.hset(keys.event(eid), "state", "succeeded")  # a finished event deferred earlier is not re-sent
    local.store.ledger.defer(record, time.time() - 1)
    assert pump.tick() == 0
