"""Redis Sentinel, for real: a private master, a replica and a sentinel (``redis-server --sentinel``) on
free ports; gradesync's store, publisher (kombu's sentinel transport) and a real worker process all
given only a ``redis+sentinel://`` URL. Then the master is killed: the sentinel promotes the replica and
the same processes keep publishing and delivering without being told where it went."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from producers.connections import redis_client
from producers.publish import PublishError
from tests.integration.conftest import Cluster
from tests.integration.test_pipeline import ti_event
from worker.localredis import EmbeddedRedis, free_port, redis_server_binary
from worker.sandbox import Running
from worker.sandbox.control import SandboxClient

pytestmark = pytest.mark.integration

MASTER = "gsmaster"


@dataclass
class SentinelSetup:
    master: EmbeddedRedis
    replica: subprocess.Popen[bytes]
    replica_port: int
    sentinel: subprocess.Popen[bytes]
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{MASTER}/0"

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, socket_timeout=5)

    def current_master_port(self) -> int:
        host_port = self.sentinel_client().sentinel_get_master_addr_by_name(MASTER)
        return int(host_port[1])


def _wait(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


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
def sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    exe = redis_server_binary()
    master = EmbeddedRedis.start(tmp_path / "master", persist=True)
    replica_port, sentinel_port = free_port(), free_port()
    (tmp_path / "replica").mkdir()
    replica = subprocess.Popen(
        [exe, "--port", str(replica_port), "--bind", "127.0.0.1", "--dir", str(tmp_path / "replica"),
         "--save", "", "--appendonly", "yes", "--replicaof", "127.0.0.1", str(master.port),
         "--logfile", str(tmp_path / "replica" / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = tmp_path / "sentinel.conf"  # sentinel rewrites its config file: it must be writable
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\nlogfile {tmp_path / 'sentinel.log'}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds {MASTER} 2000\nsentinel failover-timeout {MASTER} 10000\n")
    sent = subprocess.Popen([exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    setup = SentinelSetup(master, replica, replica_port, sent, sentinel_port)
    try:
        replica_client = redis.Redis(port=replica_port, socket_timeout=2)
        _wait(lambda: replica_client.info("replication")["master_link_status"] == "up", "the replica to sync")
        _wait(lambda: len(setup.sentinel_client().sentinel_slaves(MASTER)) == 1, "the sentinel to see the replica")
        yield setup
    finally:
        for proc in (sent, replica):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        master.stop()


def test_store_publisher_and_worker_follow_a_sentinel_failover(
    sentinel: SentinelSetup, tmp_path: Path, sandbox: dict[str, Running], vendors: dict[str, SandboxClient]
) -> None:
    client = redis_client(sentinel.url, socket_timeout=5)
    client.set("probe", "1")
    assert redis.Redis(port=sentinel.master.port).get("probe") == b"1"  # it found the master

    (tmp_path / "cluster").mkdir()
    cluster = Cluster(sentinel.url, tmp_path / "cluster", sandbox)
    try:
        # the broker is kombu's sentinel transport: the message lands in the master's grades.ti list
        [queued] = cluster.publisher.publish_many([ti_event()])
        assert redis.Redis(port=sentinel.master.port).llen("grades.ti") == 1
        cluster.start_worker(concurrency=2)
        assert cluster.wait_for([queued]) == {queued: "succeeded"}

        sentinel.master.process.kill()  # the master dies (kill -9): the sentinel promotes the replica
        sentinel.master.process.wait()
        _wait(lambda: sentinel.current_master_port() == sentinel.replica_port, "the replica to be promoted")
        new_master = redis.Redis(port=sentinel.replica_port, socket_timeout=2)
        _wait(lambda: new_master.info("replication")["role"] == "master", "the promoted replica to be master")

        # same processes, same URL: they now write to and read from the promoted replica
        ids = _publish_until_accepted(cluster, 3)
        assert cluster.wait_for(ids, timeout=120) == dict.fromkeys(ids, "succeeded")
        assert new_master.exists(cluster.store.keys.event(ids[0])) == 1
        assert new_master.hget(cluster.store.keys.event(queued), "state") == b"succeeded"  # replicated before
        assert len(vendors["thoughtindustries"].state()["activities"]) == 1 + len(ids)
    finally:
        cluster.stop_workers()
        cluster.publisher.close()
