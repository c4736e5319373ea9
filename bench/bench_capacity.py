"""Capacity figures for sizing a deployment: one command, a private Redis and the vendor sandbox.

    .venv/bin/python bench/bench_capacity.py [--events 2000] [--dead 200] [--concurrency 16] [--latency 0]

Prints:

* bytes per queued message (``MEMORY USAGE`` of the ``grades.<destination>`` list / its length);
* events/s one worker process (threads pool) delivers when the vendor answers at once (``--latency 0``)
  or after ``--latency`` seconds (then the figure is about concurrency / latency);
* the worker's resident memory (RSS) idle and at its peak while delivering (for requests/limits);
* bytes per ledger record (event hash + its attempt history + its learner/item high-water mark) after a
  successful delivery, and per dead letter (record + history + the two dead-letter index entries).

Everything runs on this machine only: a private redis-server on a free port, the Thought Industries
simulator on a free port, one ``gradesync worker`` child process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from sandbox import DEFAULT_PORTS, DEMO_CREDENTIALS, serve_all
from sandbox.control import SandboxClient
from sandbox.localredis import EmbeddedRedis
from worker.crypto import generate_key
from worker.keys import Keys
from worker.publish import Publisher
from worker.settings import Settings

DEST = "bench"


def ti_event() -> dict[str, object]:
    return {"destination": DEST, "learner_id": str(uuid.uuid4()), "score_given": 45, "score_maximum": 50,
            "target": {"assignment_id": str(uuid.uuid4())}}


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and its children (Linux /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def wait_states(r: redis.Redis, keys: Keys, ids: list[str], wanted: str, worker: subprocess.Popen[bytes],
                peak: list[int], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with r.pipeline(transaction=False) as pipe:
            for eid in ids:
                pipe.hget(keys.event(eid), "state")
            states = pipe.execute()
        peak[0] = max(peak[0], rss_kib(worker.pid))
        if all(s == wanted.encode() for s in states):
            return
        time.sleep(0.05)
    raise SystemExit(f"not all {wanted} after {timeout}s")


def memory(r: redis.Redis, key: str) -> int:
    return int(r.memory_usage(key, samples=0) or 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--dead", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.0, help="vendor answer time in seconds")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gradesync-capacity-"))
    server = EmbeddedRedis.start(tmp / "redis", persist=False)
    sandbox = serve_all("127.0.0.1", dict.fromkeys(DEFAULT_PORTS, 0))  # every simulator on a free port
    ti = SandboxClient(sandbox["thoughtindustries"].url)
    (tmp / "d.toml").write_text(
        f'[destinations.{DEST}]\nvendor = "thoughtindustries"\nbase_url = "{sandbox["thoughtindustries"].url}"\n'
        'api_key_env = "BENCH_TI_KEY"\nmax_attempts = 3\nretry_base_delay = 0.2\nretry_max_delay = 1.0\n')
    env = {**os.environ, "BENCH_TI_KEY": DEMO_CREDENTIALS["thoughtindustries"]["api_key"],
           "GRADESYNC_REDIS_URL": server.url, "GRADESYNC_DESTINATIONS": str(tmp / "d.toml"),
           "GRADESYNC_LOG_LEVEL": "WARNING", "GRADESYNC_LOG_FORMAT": "json"}
    os.environ["BENCH_TI_KEY"] = env["BENCH_TI_KEY"]
    # stored events are encrypted at rest: every process needs the same key
    os.environ.setdefault("GRADESYNC_SECRET_KEY", generate_key())
    env["GRADESYNC_SECRET_KEY"] = os.environ["GRADESYNC_SECRET_KEY"]
    settings = Settings(redis_url=server.url, destinations_file=tmp / "d.toml")
    publisher = Publisher(settings)
    r = redis.Redis.from_url(server.url)
    keys = Keys(settings.key_prefix)
    worker: subprocess.Popen[bytes] | None = None
    try:
        if args.latency:
            ti.fault(latency=args.latency, times=-1)
        ids = publisher.publish_many([ti_event() for _ in range(args.events)])
        queue_bytes = memory(r, Keys.queue(DEST)) / max(1, r.llen(Keys.queue(DEST)))
        log = open(tmp / "worker.log", "ab")  # noqa: SIM115 - closed at exit
        worker = subprocess.Popen([sys.executable, "-m", "worker.cli", "worker", "--processes", "1",
                                   "-c", str(args.concurrency)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None and r.llen(Keys.queue(DEST)) == args.events:
            time.sleep(0.02)
        first = time.perf_counter()  # the worker took its first message: time the drain from here
        idle = rss_kib(worker.pid)
        peak = [idle]
        wait_states(r, keys, ids, "succeeded", worker, peak)
        elapsed = time.perf_counter() - first
        ledger = [memory(r, keys.event(e)) + memory(r, keys.attempts(e)) for e in ids[:200]]
        hwm = memory(r, next(iter(r.scan_iter(match=f"{keys.prefix}:hwm:*", count=1000))).decode())

        ti.clear_faults()
        ti.fault(status=404, times=-1)  # permanent: each dead-letters after one attempt
        dead = publisher.publish_many([ti_event() for _ in range(args.dead)])
        wait_states(r, keys, dead, "dead_lettered", worker, peak)
        dl_records = [memory(r, keys.event(e)) + memory(r, keys.attempts(e)) for e in dead]
        dl_index = (memory(r, keys.dlq) + memory(r, keys.dlq_of(DEST))) / max(1, len(dead))

        print(f"machine: {os.cpu_count()} cores (shared); worker: 1 process, threads pool, "
              f"concurrency {args.concurrency}; vendor latency {args.latency:g} s")
        print(f"events delivered: {args.events} in {elapsed:.2f} s = {args.events / elapsed:.0f} events/s "
              "per worker process")
        print(f"worker RSS: idle {idle / 1024:.0f} MiB, peak {peak[0] / 1024:.0f} MiB")
        print(f"queued message: {queue_bytes:.0f} bytes each (Redis list)")
        print(f"ledger record after success: {sum(ledger) / len(ledger):.0f} bytes (event + history), "
              f"+ {hwm} bytes per learner/item high-water mark")
        print(f"dead letter: {sum(dl_records) / len(dl_records):.0f} bytes (record + history) + "
              f"{dl_index:.0f} bytes of index entries")
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        publisher.close()
        ti.close()
        for running in sandbox.values():
            running.stop()
        server.stop()


if __name__ == "__main__":
    main()
