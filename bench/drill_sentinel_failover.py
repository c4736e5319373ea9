"""Drill: a Sentinel failover under load — what does it cost?

    .venv/bin/python bench/drill_sentinel_failover.py [--seconds 20] [--kill-at 5] [--batch 10]

A private master + replica + sentinel (real redis-server processes on free ports), the Thought
Industries simulator, one worker process (8 threads) and one producer publishing a batch every 50 ms,
all given only the ``redis+sentinel://`` URL. At ``--kill-at`` seconds the master gets ``kill -9``; the
sentinel promotes the replica after 2 s of silence. A batch that fails (PublishError) is published again
with the same event ids, as a producer should. Afterwards it prints: how long publishing was refused,
how many events were accepted, how many were lost (accepted, but not delivered within 120 s), how many
reached the vendor twice (Thought Industries is not idempotent), and where the stragglers are.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sandbox import DEFAULT_PORTS, DEMO_CREDENTIALS, serve_all
from sandbox.control import SandboxClient
from sandbox.localsentinel import EmbeddedSentinel
from worker.crypto import generate_key
from worker.publish import Publisher, PublishError
from worker.settings import Settings
from worker.store import Store

DEST = "drill"
TERMINAL = {b"succeeded", b"superseded", b"dead_lettered"}


def ti_event() -> dict[str, object]:
    return {"destination": DEST, "learner_id": str(uuid.uuid4()), "score_given": 45, "score_maximum": 50,
            "target": {"assignment_id": str(uuid.uuid4())}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the producer publishes")
    parser.add_argument("--kill-at", type=float, default=5.0, help="when the master is killed")
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gradesync-failover-"))
    cluster = EmbeddedSentinel.start(tmp / "sentinel")
    sandbox = serve_all("127.0.0.1", dict.fromkeys(DEFAULT_PORTS, 0))  # every simulator on a free port
    ti = SandboxClient(sandbox["thoughtindustries"].url)
    (tmp / "d.toml").write_text(
        f'[destinations.{DEST}]\nvendor = "thoughtindustries"\nbase_url = "{sandbox["thoughtindustries"].url}"\n'
        'api_key_env = "DRILL_TI_KEY"\nmax_attempts = 8\nretry_base_delay = 0.5\nretry_max_delay = 2.0\n'
        # Thought Industries documents 120 requests/minute, and gradesync keeps to it by default: this
        # drill's ~200 events/s would then wait for their rate-limit slots for half an hour. The simulator
        # has no limit; the drill measures the failover, so it lifts the limit (0: none).
        'rate_limit_per_minute = 0\n')
    key = DEMO_CREDENTIALS["thoughtindustries"]["api_key"]
    os.environ["DRILL_TI_KEY"] = key
    # stored events are encrypted at rest: every process needs the same key
    os.environ.setdefault("GRADESYNC_SECRET_KEY", generate_key())
    env = {**os.environ, "GRADESYNC_REDIS_URL": cluster.url, "GRADESYNC_DESTINATIONS": str(tmp / "d.toml"),
           "GRADESYNC_LOG_FORMAT": "json", "GRADESYNC_VISIBILITY_TIMEOUT": "30"}
    settings = Settings(redis_url=cluster.url, destinations_file=tmp / "d.toml", visibility_timeout=30)
    publisher = Publisher(settings)
    store = Store.connect(settings)
    log = open(tmp / "worker.log", "ab")  # noqa: SIM115 - closed at exit
    worker = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--processes", "1", "-c", "8"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    accepted: list[str] = []
    refused_batches = 0
    refused_since: float | None = None
    refused_total = 0.0
    killed = False
    try:
        while b"worker_ready" not in (tmp / "worker.log").read_bytes():
            if worker.poll() is not None:
                raise SystemExit(f"worker exited; see {tmp / 'worker.log'}")
            time.sleep(0.1)
        start = time.monotonic()
        pending = None
        while time.monotonic() - start < args.seconds or pending is not None:
            if not killed and time.monotonic() - start >= args.kill_at:
                cluster.kill_master()
                killed = True
            batch = pending or [ti_event() for _ in range(args.batch)]
            try:
                accepted += publisher.publish_many(batch)
                pending = None
                if refused_since is not None:
                    refused_total += time.monotonic() - refused_since
                    refused_since = None
            except PublishError:
                refused_batches += 1
                pending = batch  # the same event ids again
                refused_since = refused_since or time.monotonic()
            time.sleep(0.05)
        deadline = time.monotonic() + 120
        states: list[bytes | None] = []
        while time.monotonic() < deadline:
            with store.redis.pipeline(transaction=False) as pipe:
                for eid in accepted:
                    pipe.hget(store.keys.event(eid), "state")
                states = pipe.execute()
            if all(s in TERMINAL for s in states):
                break
            time.sleep(0.5)
        where = collections.Counter((s or b"missing").decode() for s in states)
        writes = collections.Counter(a["learnerId"] for a in ti.state()["activities"])
        twice = sum(1 for n in writes.values() if n > 1)
        lost = len(accepted) - where.get("succeeded", 0) - where.get("superseded", 0)
        print(f"machine: {os.cpu_count()} cores (shared); 1 worker process x 8 threads; master killed at "
              f"{args.kill_at:g} s of {args.seconds:g} s; sentinel down-after 2 s")
        print(f"publishing refused for {refused_total:.1f} s ({refused_batches} failed tries, each retried "
              "with the same event ids)")
        print(f"events accepted: {len(accepted)}; delivered: {where.get('succeeded', 0)}; lost: {lost}; "
              f"sent to the vendor twice: {twice}")
        print(f"final states: {dict(where)}")
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        publisher.close()
        ti.close()
        for running in sandbox.values():
            running.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
