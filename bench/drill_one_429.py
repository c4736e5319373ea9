"""One-429 drill (issue 20): does one 429 on a quiet destination hold back a burst that follows it?

    .venv/bin/python bench/drill_one_429.py [--rounds 3] [--burst 300] [--gap 30] [--mode both|unconfigured|configured]

Each round, on a fresh Redis, LTIAAS simulator (every answer after 50 ms) and one default worker:

1. a quiet destination sends five scores, one second apart; the vendor answers one of them — chosen at
   random each round — 429 with ``Retry-After: 2``;
2. ``--gap`` seconds later ``--burst`` scores are published at once;
3. the drill prints the seconds from that publish until the last of the burst is delivered.

``unconfigured``: the destination has no ``rate_limit_per_minute`` (the adaptive rate only). Goal: the 300
delivered in under 60 s (before the time-based recovery it took many minutes). ``configured``: the
destination says ``rate_limit_per_minute = 600`` and the vendor enforces 600/min (burst 10) itself. Goal:
no 429 beyond the injected one, the burst paced within 15 % of what 600/min allows.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from harness import Drill, drill, lt_destination, machine

DEST = "quiet"
LATENCY = 0.05
LIMIT = 600.0
VENDOR_BURST = 10


def events(n: int, tag: str) -> list[dict[str, object]]:
    return [{"destination": DEST, "learner_id": f"{tag}-{i}", "score_given": i % 10, "score_maximum": 10,
             "target": {"line_item_id": f"https://lms.example/api/lti/courses/1/line_items/{tag}",
                        "service_key": "demo-service-key"}} for i in range(n)]


def answer_slowly(d: Drill, *, throttle_next: bool) -> None:
    vendor = d.vendors["ltiaas"]
    vendor.clear_faults()
    if throttle_next:  # the next score is answered 429 (faults are taken in the order they were added)
        vendor.fault(status=429, retry_after=2, times=1, latency=LATENCY, method="POST")
    vendor.fault(latency=LATENCY, times=-1, method="POST")


def one_round(mode: str, burst: int, gap: float, inject: bool, rng: random.Random,
              at: int | None = None) -> dict[str, float]:
    with drill("ltiaas") as d:
        knobs = {"rate_limit_per_minute": LIMIT} if mode == "configured" else {}
        d.configure(lt_destination(DEST, d.url("ltiaas"), **knobs))
        d.start_worker()  # the default worker: GRADESYNC_WORKER_CONCURRENCY threads
        vendor = d.vendors["ltiaas"]
        if mode == "configured":
            vendor.rate_limit(LIMIT, burst=VENDOR_BURST)
        which = (at - 1 if at else rng.randrange(5)) if inject else -1
        answer_slowly(d, throttle_next=False)
        quiet: list[str] = []
        for i in range(5):
            if i == which:
                answer_slowly(d, throttle_next=True)
            quiet += d.publish(events(1, f"q{i}"))
            time.sleep(1.0)
        d.wait_terminal(quiet, timeout=120)
        time.sleep(max(0.0, gap - 5.0))
        before = vendor.counts()
        began = time.time()
        ids = d.publish(events(burst, "burst"))
        counts = d.wait_terminal(ids, timeout=max(600.0, burst * 2.0))
        seconds = max(d.finished_at(ids) or [time.time()]) - began
        after = vendor.counts()
        flow = {k.decode(): v.decode() for k, v in d.redis.hgetall(d.store.keys.flow(DEST)).items()}  # type: ignore[union-attr]
        return {"seconds": seconds, "delivered": counts.get("succeeded", 0), "dead": counts.get("dead_lettered", 0),
                "which": which + 1, "throttled_quiet": before["throttled"],
                "throttled_burst": after["throttled"] - before["throttled"],
                "requests_burst": after["requests"] - before["requests"],
                "lowered_at_burst": float(flow.get("rate_refused", 0) or 0)}


def report(mode: str, burst: int, gap: float, runs: list[dict[str, float]], *, inject: bool) -> None:
    label = "one 429 then a burst" if inject else "no 429 (reference)"
    print(f"\n== one-429 drill, limit {mode}, {label} ==")
    for i, r in enumerate(runs, 1):
        where = f"429 on quiet score {int(r['which'])}, " if inject else ""
        print(f"round {i}: {where}{int(r['delivered'])}/{burst} delivered in {r['seconds']:.1f} s, "
              f"{int(r['dead'])} dead letters, {int(r['throttled_burst'])} of {int(r['requests_burst'])} burst "
              f"requests answered 429")
    secs = [r["seconds"] for r in runs]
    print(f"seconds to deliver the burst: median {statistics.median(secs):.1f}, worst {max(secs):.1f} "
          f"(gap {gap:.0f} s after the quiet scores)")
    if mode == "configured":
        allowed = max(0.0, (burst - VENDOR_BURST) / LIMIT * 60.0)
        print(f"the limit allows the burst in {allowed:.1f} s: pace ratio median "
              f"{statistics.median(secs) / allowed:.2f}, worst {max(secs) / allowed:.2f} (goal <= 1.15); "
              f"429s from the vendor's own limit: {sum(int(r['throttled_burst']) for r in runs)} (goal 0)")
    else:
        print(f"goal: under 60 s -> {'PASS' if max(secs) < 60 else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--gap", type=float, default=30.0, help="seconds from the first quiet score to the burst")
    parser.add_argument("--mode", choices=("both", "unconfigured", "configured"), default="both")
    parser.add_argument("--reference", action="store_true", help="also run one round without the 429")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--at", type=int, choices=range(1, 6), default=None,
                        help="answer this quiet score (1-5) 429 every round, instead of a random one")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"machine: {machine()}")
    print(f"vendor: LTIAAS simulator answering in {LATENCY * 1000:.0f} ms; one default worker")
    modes = ("unconfigured", "configured") if args.mode == "both" else (args.mode,)
    for mode in modes:
        if args.reference:
            report(mode, args.burst, args.gap, [one_round(mode, args.burst, args.gap, False, rng)], inject=False)
        runs = [one_round(mode, args.burst, args.gap, True, rng, args.at) for _ in range(args.rounds)]
        report(mode, args.burst, args.gap, runs, inject=True)


if __name__ == "__main__":
    main()
