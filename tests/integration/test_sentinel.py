"""Redis Sentinel, for real: a private master, a replica and a sentinel (``redis-server --sentinel``) on
free ports; gradesync's store, publisher (kombu's sentinel transport) and a real worker process all
given only a ``redis+sentinel://`` URL. Then the master is killed: the sentinel promotes the replica and
the same processes keep publishing and delivering without being told where it went."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sandbox import Running
from sandbox.control import SandboxClient
from sandbox.localsentinel import EmbeddedSentinel
from tests.integration.conftest import Cluster
from tests.integration.test_pipeline import ti_event
from worker.connections import redis_client
from worker.publish import PublishError

pytestmark = pytest.mark.integration


def _publish_until_accepted(cluster: Cluster, n: int, timeout: float = 60.0) -> list[str]:
    """Right after a failover a publish may fail (PublishError: nothing or the events only recorded);
    a producer publishes again with the same event ids, as the README says."""
    events = [ti_event() for _ in range(n)]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return cluster.publisher.publish_many(events)
        except PublishError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[EmbeddedSentinel]:
    setup = EmbeddedSentinel.start(tmp_path / "sentinel")
    yield setup
    setup.stop()


def test_store_publisher_and_worker_follow_a_sentinel_failover(
    sentinel: EmbeddedSentinel, tmp_path: Path, sandbox: dict[str, Running], vendors: dict[str, SandboxClient]
) -> None:
    client = redis_client(sentinel.url, socket_timeout=5)
    client.set("probe", "1")
    assert redis.Redis(port=sentinel.master.port).get("probe") == b"1"  # it found the master

    (tmp_path / "cluster").mkdir()
    cluster = Cluster(sentinel.url, tmp_path / "cluster", sandbox)
    try:
        # the broker is kombu's sentinel transport: the message lands in the master's shared grades list
        [queued] = cluster.publisher.publish_many([ti_event()])
        assert redis.Redis(port=sentinel.master.port).llen("grades") == 1
        cluster.start_worker(concurrency=2)
        assert cluster.wait_for([queued]) == {queued: "succeeded"}

        sentinel.kill_master()  # kill -9: the sentinel promotes the replica
        sentinel.wait_promoted()
        new_master = redis.Redis(port=sentinel.replica_port, socket_timeout=2)

        # same processes, same URL: they now write to and read from the promoted replica
        ids = _publish_until_accepted(cluster, 3)
        assert cluster.wait_for(ids, timeout=120) == dict.fromkeys(ids, "succeeded")
        assert new_master.exists(cluster.store.keys.event(ids[0])) == 1
        assert new_master.hget(cluster.store.keys.event(queued), "state") == b"succeeded"  # replicated before
        assert len(vendors["thoughtindustries"].state()["activities"]) == 1 + len(ids)
    finally:
        cluster.stop_workers()
        cluster.publisher.close()
