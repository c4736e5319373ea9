"""Rate-limit drill: 2 000 events to a Thought Industries simulator that allows 600 requests a minute
(burst 100, the Enterprise plan; 429 + Retry-After beyond it).

    .venv/bin/python bench/drill_ratelimit.py [--events 2000] [--per-minute 600] [--burst 100]
                                              [--mode both|configured|unconfigured]

``configured``: the destination says ``rate_limit_per_minute = 600, burst = 100`` (the shared GCRA keeps
every worker under it). Targets: 0 dead letters, <= 5 % of requests answered 429, total time <= 1.15 x
what the limit allows. ``unconfigured``: ``rate_limit_per_minute = 0`` (no limit known: only the
vendor's 429s to learn from, AIMD). Targets: 0 dead letters, <= 15 % 429s.
"""

from __future__ import annotations

import argparse
import time

from harness import drill, machine, ti_destination, ti_events


def run(mode: str, events: int, per_minute: float, burst: int, workers: int, concurrency: int,
        configured: tuple[float, int] | None = None) -> dict[str, float]:
    """``configured``: the destination's (rate, burst) when it differs from the vendor's (a wrong setting)."""
    with drill("thoughtindustries") as d:
        vendor = d.vendors["thoughtindustries"]
        rate, dest_burst = configured or (per_minute, burst)
        knobs: dict[str, float | int] = {"rate_limit_per_minute": 0} if mode == "unconfigured" else {
            "rate_limit_per_minute": rate, "burst": dest_burst}
        d.configure(ti_destination("ti", d.url("thoughtindustries"), max_attempts=4, **knobs))
        for _ in range(workers):
            d.start_worker(concurrency)
        vendor.rate_limit(per_minute, burst=burst)
        began = time.time()
        ids = d.publish(ti_events("ti", events))
        counts = d.wait_terminal(ids, timeout=events / per_minute * 60 * 6 + 120)
        end = max(d.finished_at(ids) or [time.time()])
        c = vendor.counts()
        allowed = max(0.0, (events - burst) / per_minute * 60.0)
        result = {
            "dead": counts.get("dead_lettered", 0), "delivered": counts.get("succeeded", 0),
            "requests": c["requests"], "throttled": c["throttled"],
            "share_429": c["throttled"] / max(1, c["requests"]), "seconds": end - began, "allowed": allowed,
        }
        assert d.store is not None
        flow = {k.decode(): v.decode() for k, v in d.store.redis.hgetall(d.store.keys.flow("ti")).items()}
        result["final_rate"] = float(flow.get("rate", per_minute if mode == "configured" else 0) or 0)
        wrong = f" WRONGLY as {rate:.0f}/min burst {dest_burst}" if configured and mode == "configured" else ""
        print(f"\n== rate-limit drill, limit {mode}{wrong} ==")
        print(f"machine: {machine()}")
        print(f"events: {events}; vendor allows {per_minute:.0f}/min burst {burst}; {workers} worker(s) x "
              f"{concurrency} threads; outcomes {counts}")
        print(f"dead letters: {result['dead']}")
        print(f"requests: {c['requests']}, answered 429: {c['throttled']} ({100 * result['share_429']:.1f} %)")
        print(f"total time: {result['seconds']:.1f} s; the limit allows {allowed:.1f} s "
              f"(ratio {result['seconds'] / allowed:.2f})" if allowed else f"total {result['seconds']:.1f} s")
        if mode == "unconfigured":
            print(f"learned rate at the end: {result['final_rate']:.0f}/min")
        return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--per-minute", type=float, default=600.0)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mode", choices=("both", "configured", "unconfigured"), default="both")
    parser.add_argument("--configured", default=None, metavar="RATE:BURST",
                        help="configure the destination with this limit instead of the vendor's (a wrong setting)")
    args = parser.parse_args()
    configured = None
    if args.configured:
        rate, _, burst = args.configured.partition(":")
        configured = (float(rate), int(burst or max(1, float(rate) / 60)))
    modes = ("configured", "unconfigured") if args.mode == "both" else (args.mode,)
    for mode in modes:
        run(mode, args.events, args.per_minute, args.burst, args.workers, args.concurrency, configured)


if __name__ == "__main__":
    main()
