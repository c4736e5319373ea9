"""What every drill needs: a private redis-server (or the drill's own), vendor simulators on free ports,
a destinations file pointing at them, real `gradesync worker` processes, a publisher — and clean-up.

Thought Industries is the reliability drills' vendor (:func:`ti_rig`) because it is the one that is
*not* idempotent: every POST the simulator records is a write, so "exactly once" is counted vendor-side,
per learner (one per event).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sandbox import DEMO_CREDENTIALS, Running
from sandbox.control import SandboxClient
from sandbox.localredis import EmbeddedRedis
from sandbox.rig import Processes, simulators, stop_simulators, write_destinations
from worker.crypto import generate_key
from worker.publish import Publisher
from worker.settings import Settings, reset_settings
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


def ti_events(destination: str, n: int, tag: str = "drill") -> list[dict[str, Any]]:
    return [{"destination": destination, "learner_id": str(uuid.uuid4()), "score_given": i % 50,
             "score_maximum": 50, "target": {"assignment_id": str(uuid.uuid4())}, "comment": f"{tag}-{i}"}
            for i in range(n)]


def lt_events(destination: str, n: int) -> list[dict[str, Any]]:
    return [{"destination": destination, "learner_id": f"learner-{i}", "score_given": 7, "score_maximum": 10,
             "target": {"line_item_id": "https://lms.example/api/lti/courses/1/line_items/1",
                        "service_key": "demo-service-key"}} for i in range(n)]


def learners(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["learner_id"]) for e in events]


def tally(states: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    return counts


class Drill:
    """Simulators of ``vendors``, worker processes and a publisher sharing one Redis: a private one, or the
    drill's own ``redis_url`` (a drill that crashes its Redis owns the server); logs go to ``workdir``."""

    def __init__(self, vendors: tuple[str, ...], *, redis_url: str | None = None,
                 workdir: Path | None = None) -> None:
        self.tmp = workdir or Path(tempfile.mkdtemp(prefix="gradesync-drill-"))
        self._own_tmp = workdir is None
        self.server = None if redis_url else EmbeddedRedis.start(self.tmp / "redis", persist=False)
        self.redis_url = redis_url or self.server.url  # type: ignore[union-attr]
        self.sandboxes: dict[str, Running] = simulators(vendors)
        self.vendors = {v: SandboxClient(r.url) for v, r in self.sandboxes.items()}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.procs = Processes(self.tmp, cwd=ROOT, fail=SystemExit)
        self.destinations = self.tmp / "destinations.toml"
        self.publisher: Publisher | None = None
        self.store: Store | None = None

    def url(self, vendor: str) -> str:
        return self.sandboxes[vendor].url

    def configure(self, toml: str, **env: str) -> None:
        """Write the destinations file; ``env``: more settings of the worker processes."""
        write_destinations(self.destinations, toml)
        os.environ.update(SECRETS)
        os.environ.setdefault("GRADESYNC_SECRET_KEY", generate_key())  # stored events are encrypted at rest
        reset_settings()
        self.settings = Settings(redis_url=self.redis_url, destinations_file=self.destinations)
        self.publisher = Publisher(self.settings)
        self.store = Store.connect(self.settings)
        self.redis = self.store.redis
        self.env = {**os.environ, **SECRETS, "GRADESYNC_REDIS_URL": self.redis_url,
                    "GRADESYNC_DESTINATIONS": str(self.destinations), "GRADESYNC_LOG_FORMAT": "json",
                    "PYTHONPATH": str(ROOT),
                    "GRADESYNC_WORKER_PROCESSES": "1", **env}  # one process per worker: drills signal it

    def start_worker(self, concurrency: int = 16, *, wait: bool = True) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        proc = self.procs.start_worker(f"worker{n}", self.env, concurrency=concurrency,
                                       hostname=f"drill{n}-{os.getpid()}@%h", wait=wait, timeout=60)
        self.workers.append(proc)
        return proc

    def log(self, n: int) -> str:
        return self.procs.log(f"worker{n}")

    def wait_log(self, n: int, text: str, timeout: float) -> None:
        self.procs.wait_log(f"worker{n}", text, timeout)

    def publish(self, events: list[dict[str, Any]]) -> list[str]:
        assert self.publisher is not None
        ids: list[str] = []
        for i in range(0, len(events), 500):
            ids += self.publisher.publish_many(events[i : i + 500])
        return ids

    def field(self, ids: list[str], name: str) -> list[bytes | None]:
        """One ledger field of each event."""
        assert self.store is not None
        with self.store.redis.pipeline(transaction=False) as pipe:
            for eid in ids:
                pipe.hget(self.store.keys.event(eid), name)
            return list(pipe.execute())

    def states(self, ids: list[str]) -> dict[str, str]:
        return {eid: (s.decode() if s else "missing") for eid, s in zip(ids, self.field(ids, "state"), strict=True)}

    def finished_at(self, ids: list[str]) -> list[float]:
        return [float(x) for x in self.field(ids, "finished_at") if x]

    def wait_states(self, ids: list[str], timeout: float, *, every: float = 0.25,
                    progress: bool = False) -> dict[str, str]:
        """Each event's state once all are terminal (or at the deadline)."""
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        states = self.states(ids)
        while time.monotonic() < deadline and not all(s in TERMINAL for s in states.values()):
            if progress and time.monotonic() - last > 15:
                last = time.monotonic()
                print(f"  ... {tally(states)}", flush=True)
            time.sleep(every)
            states = self.states(ids)
        return states

    def wait_terminal(self, ids: list[str], timeout: float, *, every: float = 1.0,
                      progress: bool = True) -> dict[str, int]:
        """How many events ended in each state, once all are terminal (or at the deadline)."""
        return tally(self.wait_states(ids, timeout, every=every, progress=progress))

    def writes_per_learner(self, vendor: str = "thoughtindustries") -> dict[str, int]:
        """Vendor-side count of recorded activities per learner (one learner per event)."""
        counts: dict[str, int] = {}
        for activity in self.vendors[vendor].state()["activities"]:
            counts[activity["learnerId"]] = counts.get(activity["learnerId"], 0) + 1
        return counts

    def close(self) -> None:
        self.procs.stop()
        if self.publisher is not None:
            self.publisher.close()
        for c in self.vendors.values():
            c.close()
        stop_simulators(self.sandboxes)
        if self.server is not None:
            self.server.stop()
        if self._own_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def drill(*vendors: str) -> Iterator[Drill]:
    d = Drill(vendors)
    try:
        yield d
    finally:
        d.close()


def ti_rig(redis_url: str, workdir: Path, *, timeout: float = 10.0, **env: str) -> Drill:
    """The reliability drills' rig: one Thought Industries destination ``ti`` on the drill's Redis, without
    the vendor's documented rate limit and with a short breaker cool-down (these drills measure loss and
    duplicates, not flow control: with the default 30 s doubling to 600 s, the Redis crash drill's ten 503s
    after the restart could leave its last events parked past the drill's deadline when few of them were
    taken by attempts in flight and the rest by probes, 30 + 60 + 120 + 240 s apart)."""
    d = Drill(("thoughtindustries",), redis_url=redis_url, workdir=workdir)
    d.configure(ti_destination("ti", d.url("thoughtindustries"), timeout=timeout, max_attempts=20,
                               retry_base_delay=0.5, retry_max_delay=2.0, rate_limit_per_minute=0,
                               breaker_cooldown=2.0, breaker_max_cooldown=10.0), **env)
    return d


def machine() -> str:
    cpus = os.cpu_count()
    load = os.getloadavg()
    return f"{cpus} CPU cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared with other jobs)"
