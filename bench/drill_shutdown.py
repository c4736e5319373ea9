"""Drill: SIGTERM a worker while it has ~200 Thought Industries calls in flight (2 s vendor latency).

    .venv/bin/python bench/drill_shutdown.py [--events 200] [--latency 2] [--grace 25]

A private redis-server, the TI simulator with the latency, one worker with one thread per event. When the
in-flight set is (nearly) full, SIGTERM; time how long the worker takes to exit; then start a second
worker and let everything finish. Prints the exit time against the grace, how many events were handed
back, lost (not succeeded) and written more than once (vendor-side count per learner).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from harness import learners, ti_events, ti_rig

from sandbox.localredis import EmbeddedRedis


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=25.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="drill-shutdown-"))
    server = EmbeddedRedis.start(tmp / "redis")
    rig = ti_rig(server.url, tmp, GRADESYNC_SHUTDOWN_GRACE=str(args.grace))
    ti = rig.vendors["thoughtindustries"]
    try:
        ti.fault(latency=args.latency, times=-1)
        events = ti_events("ti", args.events, "drill")
        ids = rig.publisher.publish_many(events)
        worker = rig.start_worker(args.events)
        inflight_key = f"{rig.settings.key_prefix}:inflight:ti"
        deadline = time.monotonic() + 120
        peak = 0
        while time.monotonic() < deadline:
            peak = max(peak, int(rig.redis.zcard(inflight_key)))
            if peak >= int(args.events * 0.9):
                break
            time.sleep(0.05)
        in_flight = int(rig.redis.zcard(inflight_key))
        t0 = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=args.grace + 60)
        exit_s = time.monotonic() - t0
        after_stop = rig.states(ids)
        written_at_stop = sum(rig.writes_per_learner().values())
        ti.clear_faults()
        rig.start_worker(32)
        final = rig.wait_states(ids, 180)
        writes = rig.writes_per_learner()
        per_event = [writes.get(learner, 0) for learner in learners(events)]
        handbacks = sum(int(rig.redis.hget(f"{rig.settings.key_prefix}:event:{e}", "handbacks") or 0) for e in ids)
        figures = {
            "events": args.events,
            "vendor_latency_s": args.latency,
            "in_flight_at_sigterm": in_flight,
            "grace_s": args.grace,
            "exit_after_sigterm_s": round(exit_s, 2),
            "exit_code": worker.returncode,
            "exited_within_grace": exit_s <= args.grace,
            "watchdog_fired": "shutdown_grace_exceeded" in rig.log(0),
            "succeeded_before_exit": sum(1 for s in after_stop.values() if s == "succeeded"),
            "vendor_writes_before_exit": written_at_stop,
            "handed_back": handbacks,
            "succeeded_in_the_end": sum(1 for s in final.values() if s == "succeeded"),
            "lost": sum(1 for s in final.values() if s != "succeeded"),
            "duplicate_vendor_writes": sum(n - 1 for n in per_event if n > 1),
            "never_written": sum(1 for n in per_event if n == 0),
        }
        print(json.dumps(figures, indent=2))
        ok = figures["exited_within_grace"] and figures["lost"] == 0 and figures["duplicate_vendor_writes"] == 0
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        rig.close()
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
