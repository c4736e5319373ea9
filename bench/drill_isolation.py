"""Isolation drill: one vendor answers every request in 5 s and has 500 events queued; 100 events to
another vendor on the same worker process must still be delivered quickly (fair share: under contention
no destination holds more than half of the worker's threads).

    .venv/bin/python bench/drill_isolation.py [--slow 500] [--fast 100] [--latency 5] [--concurrency 16]
                                              [--default-share]

Prints the fast destination's publish-to-delivered latencies (target: all delivered, p95 under 5 s).
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import drill, lt_destination, lt_events, machine, ti_destination, ti_events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--fast", type=int, default=100)
    parser.add_argument("--latency", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--no-share", action="store_true",
                        help="baseline: let the slow destination take every thread (max_concurrency = threads)")
    parser.add_argument("--default-share", action="store_true",
                        help="no max_concurrency: the work-conserving default (a slow destination keeps to "
                             "half the threads even alone)")
    args = parser.parse_args()
    share = args.concurrency if args.no_share else args.concurrency // 2
    knobs = {} if args.default_share else {"max_concurrency": share}
    with drill("ltiaas", "thoughtindustries") as d:
        d.configure(lt_destination("slow", d.url("ltiaas"), timeout=15, **knobs)
                    + ti_destination("fast", d.url("thoughtindustries"), rate_limit_per_minute=0))
        d.vendors["ltiaas"].fault(latency=args.latency, times=-1)
        d.start_worker(args.concurrency)
        slow = d.publish(lt_events("slow", args.slow))
        time.sleep(2.0)  # the slow vendor now holds its share of the threads, its backlog queued
        fast = d.publish(ti_events("fast", args.fast))
        counts = d.wait_terminal(fast, timeout=600)
        assert d.store is not None
        latencies = []
        for rec in d.store.ledger.load_many(fast):
            if rec is not None and rec.state == "succeeded":
                latencies.append(float(rec.fields["finished_at"]) - float(rec.fields["created_at"]))
        latencies.sort()
        slow_counts: dict[str, int] = {}
        for s in d.states(slow).values():
            slow_counts[s] = slow_counts.get(s, 0) + 1
        p95 = latencies[max(0, int(len(latencies) * 0.95) - 1)] if latencies else float("nan")
        print("\n== isolation drill ==")
        print(f"machine: {machine()}")
        held = "half: its attempts are slow; all only when fast and alone" if args.default_share else share
        print(f"worker: 1 process x {args.concurrency} threads (the slow destination may hold {held})")
        print(f"slow vendor: {args.latency:.0f} s per request, {args.slow} events queued; states now {slow_counts}")
        print(f"fast destination: {args.fast} events, outcomes {counts}")
        if latencies:
            print(f"fast latency publish -> delivered: p50 {statistics.median(latencies):.2f} s, "
                  f"p95 {p95:.2f} s, max {latencies[-1]:.2f} s")


if __name__ == "__main__":
    main()
