"""Integration harness: the vendor simulators over real HTTP, a destinations file pointing at them, a
publisher and workers — all against a real Redis. ``cluster`` runs real `gradesync worker` processes on
the Celery broker (for what only processes show: kill -9, shutdown, logs, Flower, a Redis crash);
``local`` runs the same pipeline in this process on the in-memory dispatcher (:mod:`worker.testing`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sandbox import DEMO_CREDENTIALS, Running
from sandbox import destinations_toml as sandbox_destinations_toml
from sandbox.control import SandboxClient
from sandbox.lti_demo import demo_jwks, demo_key, demo_pem
from sandbox.rig import Processes, simulators, stop_simulators, write_destinations
from worker.publish import Publisher
from worker.settings import Settings, reset_settings
from worker.store import Store
from worker.testing import InMemoryDispatcher, LocalWorker

pytestmark = pytest.mark.integration

SECRETS = {
    "IT_LS_SECRET": DEMO_CREDENTIALS["learningstudio"]["shared_secret"],
    "IT_LTIAAS_KEY": DEMO_CREDENTIALS["ltiaas"]["api_key"],
    "IT_EDLINK_TOKEN": DEMO_CREDENTIALS["edlink"]["integration_token"],
    "IT_TI_KEY": DEMO_CREDENTIALS["thoughtindustries"]["api_key"],
    "IT_LTI_KEY": demo_pem(),
}
TERMINAL = {"succeeded", "superseded", "dead_lettered"}


def destinations_toml(urls: dict[str, str], *, max_attempts: int = 3, base: float = 0.2, cap: float = 1.0,
                      timeout: float = 3.0) -> str:
    """Destinations ls / lt / ed / ti / lti at the simulators, with a fast retry policy."""
    names = {"learningstudio": "ls", "ltiaas": "lt", "edlink": "ed", "thoughtindustries": "ti", "lti_ags": "lti"}
    envs = dict(zip(names, SECRETS, strict=True))
    return sandbox_destinations_toml(urls, names, envs, timeout=timeout, max_attempts=max_attempts,
                                     retry_base_delay=base, retry_max_delay=cap, lti_kid=demo_key().kid)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[dict[str, Running]]:
    running = simulators(("learningstudio", "ltiaas", "edlink", "thoughtindustries", "lti_ags"))
    SandboxClient(running["lti_ags"].url).configure(jwks=demo_jwks())  # the tool's JWKS, as registered
    yield running
    stop_simulators(running)


@pytest.fixture
def vendors(sandbox: dict[str, Running]) -> Iterator[dict[str, SandboxClient]]:
    clients = {v: SandboxClient(r.url) for v, r in sandbox.items()}
    for c in clients.values():
        c.reset()
    yield clients
    for c in clients.values():
        c.close()


class Cluster:
    """Workers + publisher + store sharing one Redis and one destinations file. ``in_memory``: the workers
    are :class:`LocalWorker` threads of this process and messages go through ``self.memory``."""

    def __init__(self, redis_url: str, workdir: Path, sandbox: dict[str, Running], *, in_memory: bool = False,
                 **policy: Any) -> None:
        self.redis_url = redis_url
        self.workdir = workdir
        self.destinations = write_destinations(workdir / "destinations.toml",
                                               destinations_toml({v: r.url for v, r in sandbox.items()}, **policy))
        self.procs = Processes(workdir)
        self.env = {
            **os.environ,
            **SECRETS,
            "GRADESYNC_REDIS_URL": redis_url,
            "GRADESYNC_DESTINATIONS": str(self.destinations),
            "GRADESYNC_LOG_FORMAT": "json",
            "GRADESYNC_VISIBILITY_TIMEOUT": "30",
            "GRADESYNC_WORKER_PROCESSES": "1",  # one process per worker: tests count and kill processes
        }
        os.environ.update(SECRETS)
        reset_settings()
        self.settings = Settings(redis_url=redis_url, destinations_file=self.destinations, visibility_timeout=30)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.memory = InMemoryDispatcher() if in_memory else None
        self.local_workers: list[LocalWorker] = []
        self.publisher = Publisher(self.settings, dispatcher=self.memory)
        self.store = Store.connect(self.settings)

    def start_local(self, concurrency: int = 4, **settings: Any) -> LocalWorker:
        """A worker in this process (``settings``: overrides, e.g. ``stranded_after``)."""
        assert self.memory is not None, "start_local needs the `local` fixture"
        n = len(self.local_workers)
        reset_settings()
        fresh = Settings(redis_url=self.redis_url, destinations_file=self.destinations, visibility_timeout=30,
                         **settings)  # reads the destinations file as it is now (tests tune it)
        worker = LocalWorker(fresh, self.memory, threads=concurrency, name=f"local{n}-{os.getpid()}")
        self.local_workers.append(worker.start())
        return worker

    def start_worker(self, concurrency: int = 4, name: str | None = None) -> subprocess.Popen[bytes]:
        assert self.memory is None, "worker processes consume the Celery broker: use the `cluster` fixture"
        n = len(self.workers)
        proc = self.procs.start_worker(f"worker{n}", self.env, concurrency=concurrency,
                                       hostname=name or f"it{n}-{os.getpid()}@%h", timeout=30.0)
        self.workers.append(proc)
        return proc

    def log(self, n: int = 0) -> str:
        return self.procs.log(f"worker{n}")

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for w in self.local_workers:
            w.stop()
        self.local_workers.clear()
        self.procs.stop(sig)

    def state(self, event_id: str) -> str:
        rec = self.store.ledger.load(event_id)
        return rec.state if rec else "missing"

    def wait_for(self, event_ids: list[str], states: set[str] = TERMINAL, timeout: float = 60.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        current: dict[str, str] = {}
        while time.monotonic() < deadline:
            current = {eid: self.state(eid) for eid in event_ids}
            if all(s in states for s in current.values()):
                return current
            time.sleep(0.1)
        logs = self.log()[-4000:] if self.workers else ""
        raise AssertionError(f"not all in {states} after {timeout}s: {current}\n{logs}")


@pytest.fixture
def cluster(redis_client: redis.Redis, redis_url: str, tmp_path: Path,
            sandbox: dict[str, Running], vendors: dict[str, SandboxClient]) -> Iterator[Cluster]:
    c = Cluster(redis_url, tmp_path, sandbox)
    yield c
    c.stop_workers()
    c.publisher.close()


@pytest.fixture
def local(redis_client: redis.Redis, redis_url: str, tmp_path: Path,
          sandbox: dict[str, Running], vendors: dict[str, SandboxClient]) -> Iterator[Cluster]:
    """The pipeline in this process: in-memory dispatcher, :class:`LocalWorker` threads, real Redis."""
    c = Cluster(redis_url, tmp_path, sandbox, in_memory=True)
    yield c
    c.stop_workers()
    c.publisher.close()
