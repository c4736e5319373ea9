"""Drill: `kill -9` Redis (AOF, appendfsync everysec) in the middle of 1 000 events, restart it on the same
port and data directory, and check that nothing acknowledged was lost or sent twice.

    .venv/bin/python bench/drill_redis_crash.py [--events 1000] [--rate 50] [--crash-at 400] [--down 3] [--latency 0.3]

A private redis-server, the Thought Industries simulator (not idempotent: every POST it records is a
write), `gradesync serve` and a `gradesync worker` as processes. A client posts the events to the API in
batches of 10 at `--rate` events/s (re-posting a batch with the same event ids after any error) and notes
when each was acknowledged (202). After `--crash-at` acknowledgements Redis is killed with SIGKILL, stays
down `--down` seconds and is restarted; right after the restart the vendor answers 503 ten times, so the retry pump must
work again too. Nobody restarts the worker or the API. Prints, for events acknowledged more than 1 s
before the crash (and for the rest), how many were delivered exactly once, lost or written twice
(vendor-side count), and whether the API, the worker and the pump recovered by themselves.

A message can vanish in the crash: kombu's Redis transport BRPOPs a message and records it as unacknowledged
in a second command, so a crash between the two (or a BRPOP whose answer is lost) leaves an event
``queued`` with no message. The stranded-event sweeper finds it; the drill runs the worker with
``GRADESYNC_STRANDED_AFTER=20`` (``--stranded-after``) instead of 300 s so it does not wait five minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from harness import ti_events, ti_rig

from sandbox.localredis import EmbeddedRedis, free_port

TOKEN = "drill-redis-crash-token-4f8a2c6e9b1d3f5a7c"


class Client(threading.Thread):
    """Posts the events in batches of 10 until all are acknowledged; records each acknowledgement time."""

    def __init__(self, url: str, events: list[dict[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self.pause = 10 / rate
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=15)
        self.events = events
        self.acked: dict[str, float] = {}
        self.errors: dict[str, int] = {}

    def run(self) -> None:
        for i in range(0, len(self.events), 10):
            batch = self.events[i:i + 10]
            while True:
                try:
                    r = self.http.post("/v1/events", json=batch)
                    if r.status_code == 202:
                        now = time.time()
                        for eid in r.json()["event_ids"]:
                            self.acked.setdefault(eid, now)
                        break
                    key = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                self.errors[key] = self.errors.get(key, 0) + 1
                time.sleep(0.2)
            time.sleep(self.pause)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--crash-at", type=int, default=400)
    parser.add_argument("--down", type=float, default=3.0)
    parser.add_argument("--latency", type=float, default=0.3, help="vendor latency (s)")
    parser.add_argument("--stranded-after", type=float, default=20.0, help="GRADESYNC_STRANDED_AFTER of the worker")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="drill-redis-"))
    data = tmp / "redis"
    server = EmbeddedRedis.start(data)
    port = server.port
    rig = ti_rig(server.url, tmp, timeout=3.0, GRADESYNC_VISIBILITY_TIMEOUT="30", GRADESYNC_API_TOKEN=TOKEN,
              GRADESYNC_STRANDED_AFTER=str(args.stranded_after))
    api_port = free_port()
    api_log = open(tmp / "api.log", "wb")  # noqa: SIM115 - closed at the end
    api = subprocess.Popen([sys.executable, "-m", "worker.ops.serve", "--port", str(api_port)], env=rig.env,
                           stdout=api_log, stderr=subprocess.STDOUT)
    api_url = f"http://127.0.0.1:{api_port}"
    ti = rig.vendors["thoughtindustries"]
    try:
        fsync = rig.redis.config_get("appendfsync")["appendfsync"]
        aof = rig.redis.config_get("appendonly")["appendonly"]
        _wait_http(f"{api_url}/healthz")
        ti.fault(latency=args.latency, times=-1)  # attempts are in flight when Redis dies
        worker = rig.start_worker(32)
        events = ti_events("ti", args.events, "crash")
        for e in events:
            e["event_id"] = str(uuid.uuid4())
        client = Client(api_url, events, args.rate)
        client.start()
        while len(client.acked) < args.crash_at:
            time.sleep(0.01)
        server.process.kill()  # kill -9
        server.process.wait()
        crashed_at = time.time()
        time.sleep(args.down)
        server = EmbeddedRedis.start(data, port=port)
        restarted_at = time.time()
        ti.clear_faults()  # the first matching fault applies: the next ten requests fail (their retries
        ti.fault(status=503, times=10)  # go through the pump), then the latency again
        ti.fault(latency=args.latency, times=-1)
        client.join(timeout=600)
        health_after = httpx.get(f"{api_url}/healthz", timeout=10).status_code
        ids = list(client.acked)
        final = rig.wait_states(ids, 600)
        writes = rig.writes_per_learner()
        learner_of = {str(e["event_id"]): str(e["learner_id"]) for e in events}
        retried = sum(1 for eid in ids if int(rig.redis.hget(f"{rig.settings.key_prefix}:event:{eid}", "attempts")
                                              or 0) > 1)

        def tally(group: list[str]) -> dict[str, int]:
            counts = [writes.get(learner_of[e], 0) for e in group]
            return {"events": len(group),
                    "delivered_exactly_once": sum(1 for e, n in zip(group, counts, strict=True)
                                                  if n == 1 and final[e] == "succeeded"),
                    "lost": sum(1 for n in counts if n == 0),
                    "written_twice_or_more": sum(1 for n in counts if n > 1)}

        safe = [e for e in ids if client.acked[e] < crashed_at - 1.0]
        late = [e for e in ids if crashed_at - 1.0 <= client.acked[e] < crashed_at]
        after = [e for e in ids if client.acked[e] >= crashed_at]
        figures = {
            "redis": {"appendonly": aof, "appendfsync": fsync, "down_s": round(restarted_at - crashed_at, 2)},
            "acknowledged": len(ids),
            "acked_more_than_1s_before_crash": tally(safe),
            "acked_in_the_last_second": tally(late),
            "acked_after_restart": tally(after),
            "client_errors_during_outage": client.errors,
            "api_healthz_after_restart": health_after,
            "api_process_alive": api.poll() is None,
            "worker_process_alive": worker.poll() is None,
            "events_retried_via_pump": retried,
            "events_queued_again_by_the_sweeper": sum(
                int(rig.redis.hget(f"{rig.settings.key_prefix}:event:{eid}", "sweeps") or 0) for eid in ids),
            "all_terminal_states": sorted(set(final.values())),
        }
        print(json.dumps(figures, indent=2))
        s = figures["acked_more_than_1s_before_crash"]
        ok = (s["events"] > 0 and s["delivered_exactly_once"] == s["events"] and health_after == 200
              and figures["worker_process_alive"] and figures["api_process_alive"] and retried > 0
              and len(ids) == args.events)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        api.terminate()
        api.wait(timeout=30)
        api_log.close()
        rig.close()
        server.stop()


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


if __name__ == "__main__":
    raise SystemExit(main())
