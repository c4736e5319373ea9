"""Redis faults with real processes: a `kill -9` of a private Redis (AOF) mid-batch and its restart lose
and repeat nothing (vendor-side count) and the worker reconnects by itself; a worker warns at start-up
when Redis could lose state."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Running
from sandbox.control import SandboxClient
from sandbox.localredis import EmbeddedRedis
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration


def ti_event() -> dict[str, Any]:
    return {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": 3, "score_maximum": 10,
            "target": {"assignment_id": str(uuid.uuid4())}}


def test_a_worker_warns_at_start_up_when_redis_has_no_persistence(cluster: Cluster) -> None:
    cluster.start_worker()  # the test session's Redis runs without AOF or RDB on purpose
    deadline = time.monotonic() + 30
    while "redis_config_risk" not in cluster.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "redis_config_risk" in cluster.log() and "no persistence" in cluster.log()


@pytest.fixture
def durable(tmp_path: Path, sandbox: dict[str, Running],
            vendors: dict[str, SandboxClient]) -> Iterator[tuple[Cluster, list[EmbeddedRedis]]]:
    servers = [EmbeddedRedis.start(tmp_path / "redis", persist=True)]
    c = Cluster(servers[0].url, tmp_path, sandbox)
    yield c, servers
    c.stop_workers()
    c.publisher.close()
    servers[-1].stop()


def test_kill_9_of_redis_mid_batch_loses_and_repeats_nothing(
        durable: tuple[Cluster, list[EmbeddedRedis]], vendors: dict[str, SandboxClient]) -> None:
    cluster, servers = durable
    ti = vendors["thoughtindustries"]
    ti.fault(latency=0.3, times=-1)  # attempts are in flight when Redis dies
    # a message BRPOPed at the moment of the crash can vanish (kombu records it as unacknowledged in a second
    # command): the event stays queued and the stranded-event sweeper queues it again
    cluster.env["GRADESYNC_STRANDED_AFTER"] = "5"
    worker = cluster.start_worker(concurrency=8)
    events = [ti_event() for _ in range(30)]
    ids = cluster.publisher.publish_many(events)
    deadline = time.monotonic() + 60
    while len(ti.state()["activities"]) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = servers[0]
    first.process.kill()
    first.process.wait()
    time.sleep(1.0)
    servers.append(EmbeddedRedis.start(first.data_dir, port=first.port, persist=True))
    more = [ti_event() for _ in range(5)]
    ids += cluster.publisher.publish_many(more)  # the publisher reconnects too
    assert set(cluster.wait_for(ids, timeout=180).values()) == {"succeeded"}
    assert worker.poll() is None  # nobody restarted it
    written = sorted(a["learnerId"] for a in ti.state()["activities"])
    assert written == sorted(e["learner_id"] for e in events + more)  # each exactly once
