"""What every flow-control drill needs: a private redis-server, vendor simulators on free ports, a
destinations file pointing at them, real `gradesync worker` processes, a publisher — and clean-up."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from producers.crypto import generate_key
from producers.publish import Publisher
from producers.settings import Settings, reset_settings
from sandbox import DEMO_CREDENTIALS, Running, make_app, start
from sandbox.control import SandboxClient
from sandbox.localredis import EmbeddedRedis
from worker.store import Store

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {
    "DRILL_TI_KEY": DEMO_CREDENTIALS["thoughtindustries"]["api_key"],
    "DRILL_LTIAAS_KEY": DEMO_CREDENTIALS["ltiaas"]["api_key"],
}
TERMINAL = ("succeeded", "superseded", "dead_lettered")


def ti_destination(name: str, url: str, **knobs: Any) -> str:
    lines = [f"[destinations.{name}]", 'vendor = "thoughtindustries"', f'base_url = "{url}"',
             'api_key_env = "DRILL_TI_KEY"']
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in knobs.items()]
    return "\n".join(lines).replace("'", '"') + "\n\n"


def lt_destination(name: str, url: str, **knobs: Any) -> str:
    lines = [f"[destinations.{name}]", 'vendor = "ltiaas"', f'base_url = "{url}"', 'api_key_env = "DRILL_LTIAAS_KEY"']
    lines += [f"{k} = {v}" for k, v in knobs.items()]
    return "\n".join(lines) + "\n\n"


def ti_events(destination: str, n: int) -> list[dict[str, Any]]:
    return [{"destination": destination, "learner_id": str(uuid.uuid4()), "score_given": 40, "score_maximum": 50,
             "target": {"assignment_id": str(uuid.uuid4())}} for i in range(n)]


def lt_events(destination: str, n: int) -> list[dict[str, Any]]:
    return [{"destination": destination, "learner_id": f"learner-{i}", "score_given": 7, "score_maximum": 10,
             "target": {"line_item_id": "https://lms.example/api/lti/courses/1/line_items/1",
                        "service_key": "demo-service-key"}} for i in range(n)]


class Drill:
    def __init__(self, vendors: tuple[str, ...]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="gradesync-drill-"))
        self.redis = EmbeddedRedis.start(self.tmp / "redis", persist=False)
        self.sandboxes: dict[str, Running] = {v: start(make_app(v)) for v in vendors}
        self.vendors = {v: SandboxClient(r.url) for v, r in self.sandboxes.items()}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.destinations = self.tmp / "destinations.toml"
        self.publisher: Publisher | None = None
        self.store: Store | None = None

    def url(self, vendor: str) -> str:
        return self.sandboxes[vendor].url

    def configure(self, toml: str) -> None:
        self.destinations.write_text(toml)
        os.environ.update(SECRETS)
        os.environ.setdefault("GRADESYNC_SECRET_KEY", generate_key())  # stored events are encrypted at rest
        reset_settings()
        self.settings = Settings(redis_url=self.redis.url, destinations_file=self.destinations)
        self.publisher = Publisher(self.settings)
        self.store = Store.connect(self.settings)
        self.env = {**os.environ, **SECRETS, "GRADESYNC_REDIS_URL": self.redis.url,
                    "GRADESYNC_DESTINATIONS": str(self.destinations), "GRADESYNC_LOG_FORMAT": "json",
                    "PYTHONPATH": str(ROOT), "GRADESYNC_WORKER_PROCESSES": "1"}  # fair share is per process

    def start_worker(self, concurrency: int = 16) -> None:
        n = len(self.workers)
        log = open(self.tmp / f"worker{n}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "-c", str(concurrency),
                                 "-n", f"drill{n}-{os.getpid()}@%h"], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        self.workers.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"worker exited:\n{(self.tmp / f'worker{n}.log').read_text()[-3000:]}")
            if b"worker_ready" in (self.tmp / f"worker{n}.log").read_bytes():
                return
            time.sleep(0.2)
        raise SystemExit("worker not ready in 60 s")

    def publish(self, events: list[dict[str, Any]]) -> list[str]:
        assert self.publisher is not None
        ids: list[str] = []
        for i in range(0, len(events), 500):
            ids += self.publisher.publish_many(events[i : i + 500])
        return ids

    def states(self, ids: list[str]) -> dict[str, str]:
        assert self.store is not None
        r, keys = self.store.redis, self.store.keys
        with r.pipeline(transaction=False) as pipe:
            for eid in ids:
                pipe.hget(keys.event(eid), "state")
            raw = pipe.execute()
        return {eid: (s.decode() if s else "missing") for eid, s in zip(ids, raw, strict=True)}

    def finished_at(self, ids: list[str]) -> list[float]:
        assert self.store is not None
        r, keys = self.store.redis, self.store.keys
        with r.pipeline(transaction=False) as pipe:
            for eid in ids:
                pipe.hget(keys.event(eid), "finished_at")
            raw = pipe.execute()
        return [float(x) for x in raw if x]

    def wait_terminal(self, ids: list[str], timeout: float, *, every: float = 1.0,
                      progress: bool = True) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        counts: dict[str, int] = {}
        last = 0.0
        while time.monotonic() < deadline:
            counts = {}
            for s in self.states(ids).values():
                counts[s] = counts.get(s, 0) + 1
            if sum(counts.get(s, 0) for s in TERMINAL) == len(ids):
                return counts
            if progress and time.monotonic() - last > 15:
                last = time.monotonic()
                print(f"  ... {counts}", flush=True)
            time.sleep(every)
        return counts

    def close(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if self.publisher is not None:
            self.publisher.close()
        for c in self.vendors.values():
            c.close()
        for r in self.sandboxes.values():
            r.stop()
        self.redis.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def drill(*vendors: str) -> Iterator[Drill]:
    d = Drill(vendors)
    try:
        yield d
    finally:
        d.close()


def machine() -> str:
    cpus = os.cpu_count()
    load = os.getloadavg()
    return f"{cpus} CPU cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared with other jobs)"
