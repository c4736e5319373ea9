"""A private Redis Sentinel setup on this machine: a master, one replica and one sentinel, each a real
``redis-server`` child process on a free port (the tests and the failover drill use it)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from sandbox.localredis import EmbeddedRedis, free_port, redis_server_binary

MASTER_NAME = "gsmaster"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@dataclass
class EmbeddedSentinel:
    master: EmbeddedRedis
    replica: subprocess.Popen[bytes]
    replica_port: int
    sentinel: subprocess.Popen[bytes]
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{MASTER_NAME}/0"

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.sentinel_port, socket_timeout=5)

    def current_master_port(self) -> int:
        addr = self.sentinel_client().sentinel_get_master_addr_by_name(MASTER_NAME)
        if not isinstance(addr, tuple):
            raise redis.ConnectionError(f"the sentinel knows no master {MASTER_NAME!r}")
        return int(addr[1])

    def kill_master(self) -> None:
        """``kill -9`` of the master: the sentinel promotes the replica after ``down_after_ms``."""
        self.master.process.kill()
        self.master.process.wait()

    def wait_promoted(self, timeout: float = 60.0) -> None:
        wait_until(lambda: self.current_master_port() == self.replica_port, "the replica's promotion", timeout)
        new_master = redis.Redis(host="127.0.0.1", port=self.replica_port, socket_timeout=2)
        wait_until(lambda: new_master.info("replication")["role"] == "master", "the new master's role", timeout)

    @classmethod
    def start(cls, data_dir: Path, *, down_after_ms: int = 2000) -> EmbeddedSentinel:
        exe = redis_server_binary()
        master = EmbeddedRedis.start(data_dir / "master", persist=True)
        replica_port, sentinel_port = free_port(), free_port()
        (data_dir / "replica").mkdir(parents=True, exist_ok=True)
        replica = subprocess.Popen(
            [exe, "--port", str(replica_port), "--bind", "127.0.0.1", "--dir", str(data_dir / "replica"),
             "--save", "", "--appendonly", "yes", "--replicaof", "127.0.0.1", str(master.port),
             "--logfile", str(data_dir / "replica" / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conf = data_dir / "sentinel.conf"  # a sentinel rewrites its config file: it must be writable
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\ndir {data_dir}\nlogfile {data_dir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n")
        sent = subprocess.Popen([exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        setup = cls(master, replica, replica_port, sent, sentinel_port)
        try:
            replica_client = redis.Redis(host="127.0.0.1", port=replica_port, socket_timeout=2)
            wait_until(lambda: replica_client.info("replication")["master_link_status"] == "up",
                       "the replica to sync")
            wait_until(lambda: len(setup.sentinel_client().sentinel_slaves(MASTER_NAME)) == 1,
                       "the sentinel to see the replica")
        except BaseException:
            setup.stop()
            raise
        return setup

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.master.stop()
