"""Outage drill: 500 events published while the vendor answers 503 to everything, on a destination with
``max_attempts = 4``; the circuit breaker must park them (no attempts spent) and drain them on recovery.

    .venv/bin/python bench/drill_outage.py [--events 500] [--outage 60] [--cooldown 5] [--max-cooldown 30]

Prints: dead letters (target 0), requests that reached the down vendor (target: a few dozen), and the
time from recovery until the last event was delivered (target: within 60 s).
"""

from __future__ import annotations

import argparse
import time

from harness import drill, machine, ti_destination, ti_events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds of 503s (1800: the 30-minute drill)")
    parser.add_argument("--cooldown", type=float, default=5.0, help="breaker_cooldown of the destination")
    parser.add_argument("--max-cooldown", type=float, default=30.0, help="breaker_max_cooldown")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with drill("thoughtindustries") as d:
        d.configure(ti_destination("ti", d.url("thoughtindustries"), max_attempts=4, retry_base_delay=1.0,
                                   retry_max_delay=4.0, rate_limit_per_minute=6000, burst=100,
                                   breaker_cooldown=args.cooldown, breaker_max_cooldown=args.max_cooldown))
        vendor = d.vendors["thoughtindustries"]
        d.start_worker(args.concurrency)
        vendor.outage(args.outage, status=503)
        began = time.time()
        recovery = began + args.outage
        print(f"outage of {args.outage:.0f} s starts; publishing {args.events} events", flush=True)
        ids = d.publish(ti_events("ti", args.events))
        during = None
        while time.time() < recovery:
            time.sleep(min(1.0, max(0.0, recovery - time.time())))
        during = vendor.counts()
        counts = d.wait_terminal(ids, timeout=args.outage + 600)
        end = max(d.finished_at(ids) or [time.time()])
        after = vendor.counts()
        assert d.store is not None
        attempts = [len(d.store.ledger.history(eid)) for eid in ids]
        print("\n== outage drill ==")
        print(f"machine: {machine()}")
        print(f"events: {args.events}, outage: {args.outage:.0f} s (503 to everything), max_attempts = 4, "
              f"breaker_cooldown = {args.cooldown} s, max {args.max_cooldown} s")
        print(f"outcomes: {counts}")
        print(f"dead letters: {counts.get('dead_lettered', 0)}")
        print(f"requests that reached the down vendor: {during['requests']} "
              f"(by status {during['by_status']})")
        print(f"requests in all: {after['requests']} (by status {after['by_status']})")
        print(f"last event delivered {end - recovery:.1f} s after recovery")
        print(f"attempts recorded per event: max {max(attempts)}, mean {sum(attempts) / len(attempts):.2f}")


if __name__ == "__main__":
    main()
