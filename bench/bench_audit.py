"""Audit benchmark: how fast an audit reads delivered grades back, and how much of the vendor's limit it
takes, against an LTIAAS simulator that answers in 50 ms and allows 600 requests a minute.

    .venv/bin/python bench/bench_audit.py [--cells 120] [--deliveries 300] [--per-minute 600] [--burst 10]

1. ``--cells`` grades are delivered (a real `gradesync worker`, the destination configured at the limit).
2. The simulator then answers every request after 50 ms, and the audit runs alone: cells per second, and
   its reads per minute as a share of the limit (the setting: ``GRADESYNC_AUDIT_RATE_SHARE``, 20 %).
3. The same audit again while ``--deliveries`` new grades are delivered: the audit keeps within its share,
   the deliveries get the rest, and the vendor answers no 429 to either.
4. Finding the cells of a ``--enumerate``-cell audit (default 100 000) in Redis: the cost before any read.
"""

from __future__ import annotations

import argparse
import time

from harness import drill, lt_destination, machine

from worker.audit.engine import AuditRunner
from worker.audit.jobs import AuditRequest

LINE_ITEM = "https://lms.example/api/lti/courses/1/line_items/1"


def events(n: int, prefix: str) -> list[dict[str, object]]:
    return [{"destination": "lt", "learner_id": f"{prefix}-{i}", "score_given": i % 10, "score_maximum": 10,
             "target": {"line_item_id": LINE_ITEM, "service_key": "demo-service-key"}} for i in range(n)]


def audit(d: object, label: str, per_minute: float, extra: int) -> dict[str, float]:
    runner = AuditRunner(d.settings, d.store)  # type: ignore[attr-defined]
    vendor = d.vendors["ltiaas"]  # type: ignore[attr-defined]
    before = vendor.counts()
    ids: list[str] = []
    job = runner.create(["lt"], 0.0, actor="bench")
    began = time.time()
    if extra:
        ids = d.publish(events(extra, f"more{int(began)}"))  # type: ignore[attr-defined]
    view = runner.run(job)
    seconds = time.time() - began
    assert view is not None and view.state == "done", view
    reads = [r for r in vendor.dump()["requests"] if r["method"] == "GET" and r["t"] >= began]
    after = vendor.counts()
    delivered = 0
    if ids:
        counts = d.wait_terminal(ids, timeout=extra / per_minute * 60 * 4 + 60, progress=False)  # type: ignore[attr-defined]
        delivered = counts.get("succeeded", 0)
    read_span = (max(r["t"] for r in reads) - min(r["t"] for r in reads)) if len(reads) > 1 else seconds
    result = {"cells": view.done, "seconds": seconds, "cells_per_second": view.done / seconds,
              "reads": len(reads), "reads_per_minute": (len(reads) - 1) / read_span * 60 if read_span else 0.0,
              "share": (len(reads) - 1) / read_span * 60 / per_minute if read_span else 0.0,
              "throttled": after["throttled"] - before["throttled"], "delivered_meanwhile": delivered,
              "match": view.summary["match"]}
    print(f"\n== audit {label} ==")
    for k, v in result.items():
        print(f"  {k}: {v:.2f}" if isinstance(v, float) else f"  {k}: {v}")
    return result


def enumeration(d: object, n: int) -> dict[str, float]:
    """How long finding ``n`` delivered cells takes (hwm keys and succeeded events written straight into Redis)."""
    store = d.store  # type: ignore[attr-defined]
    r, keys, now = store.redis, store.keys, time.time()
    for start in range(0, n, 5000):
        with r.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + 5000)):
                eid = f"bench-{i:08d}"
                pipe.set(keys.hwm("bulk", f"learner-{i}", "item"), f"{int(now * 1000)}|{eid}")
                pipe.hset(keys.event(eid), mapping={"state": "succeeded", "finished_at": f"{now:.3f}"})
            pipe.execute()
    runner = AuditRunner(d.settings, store)  # type: ignore[attr-defined]
    job = runner.jobs.create(AuditRequest(["bulk"], now - 3600, "bench"))
    began = time.perf_counter()
    runner._enumerate(job, "bulk", now - 3600)
    seconds = time.perf_counter() - began
    total = runner.jobs.get(job).total  # type: ignore[union-attr]
    print(f"\n== enumeration of {n} cells ==\n  found: {total}\n  seconds: {seconds:.2f}\n"
          f"  cells_per_second: {total / seconds:.0f}")
    return {"cells": total, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=120)
    ap.add_argument("--deliveries", type=int, default=300)
    ap.add_argument("--per-minute", type=float, default=600)
    ap.add_argument("--burst", type=int, default=10)
    ap.add_argument("--enumerate", type=int, default=100_000, help="cells for the enumeration timing (0: skip)")
    args = ap.parse_args()
    with drill("ltiaas") as d:
        vendor = d.vendors["ltiaas"]
        d.configure(lt_destination("lt", d.url("ltiaas"), rate_limit_per_minute=args.per_minute, burst=args.burst))
        d.start_worker(16)
        vendor.rate_limit(args.per_minute, burst=args.burst)
        counts = d.wait_terminal(d.publish(events(args.cells, "cell")), timeout=args.cells / args.per_minute * 240 + 60,
                                 progress=False)
        assert counts.get("succeeded") == args.cells, counts
        vendor.fault(latency=0.05, times=-1)  # every answer after 50 ms
        print(f"machine: {machine()}")
        print(f"vendor: LTIAAS simulator, {args.per_minute:.0f}/min burst {args.burst}, 50 ms per answer; "
              f"audit share setting {d.settings.audit_rate_share:.0%}")
        alone = audit(d, "alone", args.per_minute, 0)
        mixed = audit(d, f"while {args.deliveries} grades are delivered", args.per_minute, args.deliveries)
        assert alone["match"] == args.cells and mixed["throttled"] == 0 and alone["throttled"] == 0
        if args.enumerate:
            found = enumeration(d, args.enumerate)
            assert found["cells"] == args.enumerate


if __name__ == "__main__":
    main()
