"""Drill: real LMS throttle shapes. For each style, 600 scores to one LTI platform (the simulator) that
allows 120 requests a minute, through a real `gradesync worker` process; the destination does not know
the limit (no ``rate_limit_per_minute``): it learns from the refusals, or paces from the headers.

    .venv/bin/python bench/drill_lms_throttle.py [--events 600] [--per-minute 120] [--burst 10]
                                                 [--styles retry_after,canvas403,canvas429,d2l,leaky]

Styles (:mod:`sandbox.lms_throttle`): ``retry_after`` (429 + Retry-After), ``canvas403`` (self-hosted
Canvas: 403 text/plain "Rate Limit Exceeded", X-Rate-Limit-Remaining 0.0, no Retry-After), ``canvas429``
(hosted Canvas: the same as a 429), ``d2l`` (429 + Retry-After; X-Rate-Limit-Remaining/Reset on ordinary
answers) — each over a token bucket of ``per-minute`` and ``burst`` — and ``leaky``: Canvas's leaky bucket
scaled to ``per-minute`` (high-water 600, up-front 50 while in flight, outflow 10/s; its burst is a
minute's worth), answering like ``canvas403`` and reporting X-Request-Cost / X-Rate-Limit-Remaining.

Targets: every score delivered, 0 dead letters. Printed: refused share (of all requests, token ones
included) and total seconds against what the limit allows (``(events - burst) / per_minute``).
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from typing import Any

from harness import drill, machine

from sandbox import destinations_toml
from sandbox.lti_demo import demo_jwks, demo_key, demo_pem

STYLES = ("retry_after", "canvas403", "canvas429", "d2l", "leaky")
KEY_ENV = "DRILL_LTI_KEY"


def run(style: str, events: int, per_minute: float, burst: int, concurrency: int) -> dict[str, Any]:
    with drill("lti_ags") as d:
        lti = d.vendors["lti_ags"]
        url = d.url("lti_ags")
        lti.configure(jwks=demo_jwks())
        os.environ[KEY_ENV] = demo_pem()
        d.configure(destinations_toml({"lti_ags": url}, {"lti_ags": "lti"}, {"lti_ags": KEY_ENV}, timeout=10.0,
                                      max_attempts=4, retry_base_delay=2.0, retry_max_delay=60.0,
                                      lti_kid=demo_key().kid), **{KEY_ENV: demo_pem()})
        (item,) = lti.configure(seed=[{"host": url.split("://")[1], "course": "1", "resourceLinkId": "rl-1",
                                       "label": "Drill", "scoreMaximum": 10}])["seeded"]
        if style == "leaky":
            lti.configure(rate_limit_style="canvas403", leaky_bucket={"per_minute": per_minute})
            allowed_burst = 600 / (10 * 60 / per_minute)  # high-water / cost: a minute's worth
        else:
            lti.configure(rate_limit_style=style)
            lti.rate_limit(per_minute, burst=burst)
            allowed_burst = burst
        d.start_worker(concurrency)
        began = time.time()
        ids = d.publish([{"destination": "lti", "learner_id": f"learner-{uuid.uuid4().hex[:12]}",
                          "score_given": i % 10, "score_maximum": 10, "target": {"line_item_url": item}}
                         for i in range(events)])
        counts = d.wait_terminal(ids, timeout=events / per_minute * 60 * 6 + 120)
        end = max(d.finished_at(ids) or [time.time()])
        c = lti.counts()
        stored = len(lti.state()["scores"])
        allowed = max(0.0, (events - allowed_burst) / per_minute * 60.0)
        seconds = end - began
        result = {"style": style, "delivered": counts.get("succeeded", 0), "dead": counts.get("dead_lettered", 0),
                  "stored": stored, "requests": c["requests"], "refused": c["throttled"],
                  "share": c["throttled"] / max(1, c["requests"]), "seconds": seconds, "allowed": allowed}
        print(f"\n== LMS throttle drill: {style} ==")
        print(f"machine: {machine()}")
        print(f"events: {events}; platform allows {per_minute:.0f}/min (burst {allowed_burst:.0f}); 1 worker x "
              f"{concurrency} threads; outcomes {counts}; scores stored {stored}")
        print(f"dead letters: {result['dead']}")
        print(f"requests: {c['requests']}, refused: {c['throttled']} ({100 * result['share']:.1f} %), "
              f"by status {c['by_status']}")
        print(f"total time: {seconds:.1f} s; the limit allows {allowed:.1f} s"
              + (f" (ratio {seconds / allowed:.2f})" if allowed else ""), flush=True)
        return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--per-minute", type=float, default=120.0)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--styles", default=",".join(STYLES))
    args = parser.parse_args()
    results = [run(s, args.events, args.per_minute, args.burst, args.concurrency) for s in args.styles.split(",")]
    print("\n| style | delivered | dead letters | requests | refused | seconds (limit allows) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['style']} | {r['delivered']}/{args.events} | {r['dead']} | {r['requests']} | "
              f"{r['refused']} ({100 * r['share']:.1f} %) | {r['seconds']:.0f} ({r['allowed']:.0f}) |")


if __name__ == "__main__":
    main()
