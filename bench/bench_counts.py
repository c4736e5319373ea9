"""Benchmark: `/metrics` and the dashboard overview (`/v1/overview`) with 100 000 events parked (and
20 000 retries scheduled), over real HTTP from `gradesync serve`.

    .venv/bin/python bench/bench_counts.py [--parked 100000] [--scheduled 20000] [--requests 30]

Per-destination counts come from per-destination sorted sets (one ZCARD each), not from a scan of every
scheduled event; for comparison it also times that old scan (HGET of each scheduled event's destination).
Prints p50 / p95 / max milliseconds per endpoint (target: under 100 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

from sandbox.localredis import EmbeddedRedis, free_port
from worker.crypto import generate_key
from worker.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
DESTS = "".join(f"""
[destinations.{name}]
vendor = "ltiaas"
base_url = "http://127.0.0.1:9"
api_key_env = "BENCH_KEY"
""" for name in ("alpha", "beta", "gamma", "delta"))
TOKEN = "bench-token-0123456789abcdefghijklmnop"


def fill(r: redis.Redis, keys: Keys, parked: int, scheduled: int) -> None:
    now = time.time()
    for start in range(0, parked + scheduled, 5000):
        with r.pipeline(transaction=False) as pipe:
            for i in range(start, min(start + 5000, parked + scheduled)):
                eid = str(uuid.uuid4())
                dest = ("alpha", "beta", "gamma", "delta")[i % 4] if i >= parked else "alpha"
                pipe.hset(keys.event(eid), mapping={"destination": dest, "vendor": "ltiaas", "state": "retrying",
                                                    "created_at": f"{now:.3f}"})
                if i < parked:
                    pipe.zadd(keys.parked(dest), {eid: now})
                else:
                    pipe.zadd(keys.scheduled, {eid: now + 3600})
                    pipe.zadd(keys.scheduled_of(dest), {eid: now + 3600})
            pipe.execute()


def old_scan(r: redis.Redis, keys: Keys, chunk: int = 1000) -> float:
    """The scan the overview used to do: HGET the destination of every scheduled event."""
    started = time.perf_counter()
    start = 0
    while True:
        members = r.zrange(keys.scheduled, start, start + chunk - 1)
        if not members:
            break
        with r.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.hget(keys.event(m.decode()), "destination")
            pipe.execute()
        start += chunk
    return (time.perf_counter() - started) * 1000


def timed(client: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        client.get(path).raise_for_status()
        out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parked", type=int, default=100_000)
    parser.add_argument("--scheduled", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gradesync-bench-"))
    server = EmbeddedRedis.start(tmp / "redis", persist=False)
    (tmp / "d.toml").write_text(DESTS)
    keys = Keys()
    r = redis.Redis.from_url(server.url)
    port = free_port()
    web = None
    try:
        fill(r, keys, args.parked, args.scheduled)
        env = {**os.environ, "GRADESYNC_REDIS_URL": server.url, "GRADESYNC_DESTINATIONS": str(tmp / "d.toml"),
               "GRADESYNC_API_TOKEN": TOKEN, "BENCH_KEY": "k", "GRADESYNC_LOG_LEVEL": "WARNING",
               "GRADESYNC_SECRET_KEY": os.environ.get("GRADESYNC_SECRET_KEY") or generate_key()}
        web = subprocess.Popen([sys.executable, "-m", "worker.cli", "serve", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                              headers={"Authorization": f"Bearer {TOKEN}"})
        deadline = time.monotonic() + 60
        while True:
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        parked = {d: r.zcard(keys.parked(d)) for d in ("alpha", "beta", "gamma", "delta")}
        print(f"parked events: {sum(parked.values())} {parked}; scheduled retries: {r.zcard(keys.scheduled)}")
        for path in ("/metrics", "/v1/overview"):
            ms = timed(client, path, args.requests)
            p95 = ms[max(0, int(len(ms) * 0.95) - 1)]
            print(f"{path:<13} p50 {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   max {ms[-1]:6.1f} ms "
                  f"({args.requests} requests over HTTP)")
        print(f"for comparison, the old per-event scan of the scheduled set alone: {old_scan(r, keys):.0f} ms")
        print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} (shared with other jobs)")
        client.close()
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=20)
        server.stop()


if __name__ == "__main__":
    main()
