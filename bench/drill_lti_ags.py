"""Drill: many lti_ags "workers" (adapters with their own HTTP pools, one shared Redis) against the LTI
platform simulator, with line items to create under contention and a token revocation midway.

    .venv/bin/python bench/drill_lti_ags.py [--adapters 4] [--threads 8] [--events 2000] [--links 20]

Starts its own redis-server and simulator on free ports. Prints: events delivered, wall time and rate,
tokens the platform issued (ideal: 2 — one before, one after the revocation), line items created
(ideal: one per resource link), the 401s that triggered refreshes, and delivery latency percentiles.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import SecretStr
from redis import Redis

from sandbox import DEMO_CREDENTIALS, make_app, start
from sandbox.control import SandboxClient
from sandbox.localredis import EmbeddedRedis
from sandbox.lti_demo import demo_jwks, demo_key
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.lti_ags import LtiAgsAdapter
from worker.events import GradeEvent
from worker.store.cache import RedisCache
from worker.vendors.lti import LtiAgsDestination


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=4, help="simulated worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per adapter")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--links", type=int, default=20, help="resource links whose line items must be created")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis.start(Path(tmp), persist=False)
        platform = start(make_app("lti_ags", jwks=demo_jwks()))
        control = SandboxClient(platform.url)
        try:
            run(args, Redis.from_url(server.url), platform.url, control)
        finally:
            control.close()
            platform.stop()
            server.stop()


def run(args: argparse.Namespace, redis: Redis, url: str, control: SandboxClient) -> None:
    key = demo_key()
    dest = LtiAgsDestination(name="lti", vendor="lti_ags", base_url=url, timeout=10.0,
                             client_id=DEMO_CREDENTIALS["lti_ags"]["client_id"],
                             token_url=f"{url}/login/oauth2/token", private_key_env="K",
                             private_key=SecretStr(key.private_pem().decode()), kid=key.kid)
    adapters = [LtiAgsAdapter(dest, AdapterContext(http=make_client(dest), cache=RedisCache(redis, "drill")))
                for _ in range(args.adapters)]
    container = f"{url}/api/lti/courses/1/line_items"
    t0 = datetime.now(UTC)
    events = [GradeEvent.model_validate(
        {"destination": "lti", "learner_id": f"learner-{i}", "score_given": i % 10, "score_maximum": 10,
         "occurred_at": (t0 + timedelta(milliseconds=i)).isoformat(),
         "target": {"lineitems_url": container, "resource_link_id": f"rl-{i % args.links}", "label": "Drill"}},
        context={"vendors": {"lti": "lti_ags"}}) for i in range(args.events)]
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    cursor = iter(range(len(events)))
    revoke_at = len(events) // 2

    def work(adapter: LtiAgsAdapter) -> None:
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                return
            if i == revoke_at:
                control.configure(expire_tokens=True)
            started = time.perf_counter()
            try:
                adapter.deliver(events[i])
            except Exception as exc:
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=work, args=(a,)) for a in adapters for _ in range(args.threads)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    state = control.state()
    unauthorized = sum(1 for r in control.requests(path="/scores$") if r["status"] == 401)
    creates = len(control.requests(method="POST", path="line_items$"))
    for a in adapters:
        a.close()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(f"adapters={args.adapters} threads/adapter={args.threads} events={args.events} links={args.links}")
    print(f"delivered={len(latencies)} failed={len(failures)} wall={wall:.2f}s rate={len(latencies) / wall:.0f}/s")
    print(f"tokens issued={state['tokens_issued']} (ideal 2)  401 refreshes={unauthorized}")
    print(f"line items created={creates} (ideal {args.links})  scores stored={len(state['scores'])}")
    print(f"latency p50={q[49] * 1000:.1f}ms p95={q[94] * 1000:.1f}ms max={max(latencies, default=0) * 1000:.1f}ms")
    for f in failures[:5]:
        print("  failure:", f)


if __name__ == "__main__":
    main()
