"""What the drills share: a sandboxed Thought Industries simulator, a destinations file pointing at it,
`gradesync worker` processes and a publisher against a private redis-server (never the machine's Redis).

Thought Industries is the drills' vendor because it is the one that is *not* idempotent: every POST the
simulator records is a write, so "exactly once" is counted vendor-side, per learner (one per event).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from producers.crypto import generate_key
from producers.publish import Publisher
from producers.settings import Settings
from sandbox import DEMO_CREDENTIALS, Running, make_app, start
from sandbox.control import SandboxClient

TERMINAL = {"succeeded", "superseded", "dead_lettered"}
TI_KEY_ENV = "DRILL_TI_KEY"


class Rig:
    """One TI simulator, worker processes and a publisher sharing ``redis_url``."""

    def __init__(self, redis_url: str, workdir: Path, *, timeout: float = 10.0, **env: str) -> None:
        self.workdir = workdir
        self.vendor: Running = start(make_app("thoughtindustries"))
        self.ti = SandboxClient(self.vendor.url)
        self.destinations = workdir / "destinations.toml"
        self.destinations.write_text(
            f'[destinations.ti]\nvendor = "thoughtindustries"\nbase_url = "{self.vendor.url}"\n'
            f'api_key_env = "{TI_KEY_ENV}"\ntimeout = {timeout}\nmax_attempts = 20\nretry_base_delay = 0.5\n'
            "retry_max_delay = 2.0\n")
        os.environ[TI_KEY_ENV] = DEMO_CREDENTIALS["thoughtindustries"]["api_key"]
        key = os.environ.get("GRADESYNC_SECRET_KEY") or generate_key()  # stored events are encrypted at rest
        self.env = {**os.environ, "GRADESYNC_REDIS_URL": redis_url, "GRADESYNC_DESTINATIONS": str(self.destinations),
                    "GRADESYNC_LOG_FORMAT": "json", "GRADESYNC_SECRET_KEY": key,
                    "GRADESYNC_WORKER_PROCESSES": "1", **env}  # one process per worker: the drills signal it
        self.settings = Settings(redis_url=redis_url, destinations_file=self.destinations, secret_key=SecretStr(key))
        self.publisher = Publisher(self.settings)
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_worker(self, concurrency: int, *, wait: bool = True) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        log = open(self.workdir / f"worker{n}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "-c", str(concurrency),
                                 "-n", f"drill{n}-{os.getpid()}@%h"], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        if wait:
            self.wait_log(n, "worker_ready", 60)
        return proc

    def log(self, n: int) -> str:
        return (self.workdir / f"worker{n}.log").read_text(errors="replace")

    def wait_log(self, n: int, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(n):
                return
            if self.workers[n].poll() is not None:
                raise RuntimeError(f"worker {n} exited:\n{self.log(n)[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"worker {n}: no {text!r} within {timeout}s:\n{self.log(n)[-3000:]}")

    def events(self, n: int, tag: str) -> list[dict[str, Any]]:
        return [{"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": i % 50, "score_maximum": 50,
                 "target": {"assignment_id": str(uuid.uuid4())}, "comment": f"{tag}-{i}"} for i in range(n)]

    def states(self, ids: list[str]) -> dict[str, str]:
        with self.redis.pipeline(transaction=False) as pipe:
            for eid in ids:
                pipe.hget(f"{self.settings.key_prefix}:event:{eid}", "state")
            raw = pipe.execute()
        return {eid: (s.decode() if s else "missing") for eid, s in zip(ids, raw, strict=True)}

    def wait_terminal(self, ids: list[str], timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        states = self.states(ids)
        while time.monotonic() < deadline:
            states = self.states(ids)
            if all(s in TERMINAL for s in states.values()):
                break
            time.sleep(0.25)
        return states

    def writes_per_learner(self) -> dict[str, int]:
        """Vendor-side count of recorded activities per learner (one learner per event)."""
        counts: dict[str, int] = {}
        for activity in self.ti.state()["activities"]:
            counts[activity["learnerId"]] = counts.get(activity["learnerId"], 0) + 1
        return counts

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.publisher.close()
        self.ti.close()
        self.vendor.stop()


def learners(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["learner_id"]) for e in events]
