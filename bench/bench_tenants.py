"""Benchmark: throughput against the number of destinations (issue 22).

    .venv/bin/python bench/bench_tenants.py                       # 1, 1 000, 10 000 + one busy among 100
    .venv/bin/python bench/bench_tenants.py --counts 1,100 --events 1000 --no-busy

Each case: a fresh private Redis, one LTIAAS sandbox answering after ``--latency`` s, N LTIAAS
destinations (no rate limit), ``gradesync worker -c 64`` (one process per core, as by default),
then ``--events`` events spread evenly over the destinations (or, for "one busy among 100", all to one of
100 configured). Throughput = (N - 1) / (last - first delivery), from the ledger's ``finished_at``.
RSS: the worker's process tree (supervisor + children) once drained, and again ``SETTLE`` s later (the
worker trims its allocator's free memory every 2 s, ``worker/memtrim.py``), with the largest single worker
process then. Ready: from spawn to Celery's "ready" line.

``--keys direct`` (the default; what an operator of thousands of institutions runs): each destination has
its own API key, given directly and registered with ``gradesync destinations apply`` before the worker
starts (stored encrypted; the simulator accepts every tenant's key). ``--keys env``: a destinations file
whose destinations all name one environment variable, applied by the worker at start-up.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass

from harness import Drill, lt_destination, lt_events, machine

#: seconds idle after the drain before the settled RSS is read (several worker.memtrim.TRIM_EVERY)
SETTLE = 12.0


def tree_rss_mb(root: int) -> float:
    return sum(process_rss_mb(root).values())


def process_rss_mb(root: int) -> dict[int, float]:
    """pid -> RSS (MB) of ``root`` and every descendant."""
    pids, frontier = [root], [root]
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        pids += kids
        frontier += kids
    out: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out[pid] = int(line.split()[1]) / 1024
        except OSError:
            pass
    return out


@dataclass
class Case:
    name: str
    configured: int
    busy: bool = False


@dataclass
class Result:
    case: Case
    rate: float
    rss_mb: float
    settled_mb: float
    child_mb: float
    ready_s: float
    outcomes: dict[str, int]


def register_direct(d: Drill, url: str, count: int) -> None:
    """``count`` destinations, each with its own API key, applied with ``gradesync destinations apply``."""
    keys = [f"tenant-{i:05d}-{secrets.token_hex(12)}" for i in range(count)]
    path = d.tmp / "tenants.toml"
    path.write_text("".join(f'[destinations.t{i:05d}]\nvendor = "ltiaas"\nbase_url = "{url}"\n'
                            f'api_key = "{key}"\nrate_limit_per_minute = 0\n\n' for i, key in enumerate(keys)))
    d.vendors["ltiaas"].configure(api_keys=keys)
    subprocess.run([sys.executable, "-m", "worker.cli", "destinations", "apply", str(path)], env=d.env,
                   check=True, stdout=subprocess.DEVNULL)


def run(case: Case, events: int, latency: float, concurrency: int, processes: str, keys: str) -> Result:
    d = Drill(("ltiaas",))
    try:
        url = d.url("ltiaas")
        if keys == "direct":
            d.configure("", GRADESYNC_WORKER_PROCESSES=processes,
                        GRADESYNC_DESTINATIONS=str(d.tmp / "no-file.toml"))  # the registry alone
            register_direct(d, url, case.configured)
        else:
            d.configure("".join(lt_destination(f"t{i:05d}", url, rate_limit_per_minute=0)
                                for i in range(case.configured)), GRADESYNC_WORKER_PROCESSES=processes)
        d.vendors["ltiaas"].fault(latency=latency, times=-1)
        began = time.monotonic()
        proc = d.start_worker(concurrency)
        ready = time.monotonic() - began
        targets = 1 if case.busy else case.configured
        batch: list[dict[str, object]] = []
        per, extra = divmod(events, targets)  # 10 000 destinations, 3 000 events: 3 000 get one each
        for i in range(targets):
            n = per + (1 if i < extra else 0)
            if n > 0:
                for e in lt_events(f"t{i:05d}", n):
                    e["learner_id"] = f"{e['learner_id']}-{i}"
                    batch.append(e)
        # interleave the destinations (round robin), as many institutions' grades arrive
        batch.sort(key=lambda e: int(str(e["learner_id"]).split("-")[1]))
        ids = d.publish(batch)
        outcomes = d.wait_terminal(ids, timeout=900, every=0.5, progress=False)
        done = sorted(d.finished_at(ids))
        rate = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0.0
        rss = tree_rss_mb(proc.pid)
        time.sleep(SETTLE)  # as between two bursts: the worker's periodic trim ran (worker/memtrim.py)
        settled = process_rss_mb(proc.pid)
        child = max((mb for pid, mb in settled.items() if pid != proc.pid), default=0.0)
        return Result(case, rate, rss, sum(settled.values()), child, ready, outcomes)
    finally:
        d.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,1000,10000")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", default=str(os.cpu_count() or 1))
    parser.add_argument("--no-busy", action="store_true")
    parser.add_argument("--keys", choices=("direct", "env"), default="direct")
    args = parser.parse_args()
    cases = [Case(f"{int(n):,} destinations", int(n)) for n in args.counts.split(",")]
    if not args.no_busy:
        cases.append(Case("one busy among 100", 100, busy=True))
    results = []
    for case in cases:
        r = run(case, args.events, args.latency, args.concurrency, args.processes, args.keys)
        print(f"  {case.name}: {r.rate:.0f}/s, RSS {r.rss_mb:.0f} MB ({r.settled_mb:.0f} MB settled, largest "
              f"process {r.child_mb:.0f} MB), ready {r.ready_s:.1f} s, {r.outcomes}", flush=True)
        results.append(r)
    base = results[0].rate or 1.0
    print("\n== tenants bench ==")
    print(f"machine: {machine()}")
    print(f"{args.events} LTIAAS events, sandbox {args.latency * 1000:.0f} ms, gradesync worker -c "
          f"{args.concurrency} --processes {args.processes}, keys: {args.keys}")
    first = results[0]
    print("| case | events/s | ratio to first | worker RSS, drained (MB) | settled (MB) | largest process, settled "
          "(MB) | worker ready (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.case.name} | {r.rate:.0f} | {r.rate / base:.2f}x "
              f"| {r.rss_mb:.0f} ({r.rss_mb - first.rss_mb:+.0f}) "
              f"| {r.settled_mb:.0f} ({r.settled_mb - first.settled_mb:+.0f}) "
              f"| {r.child_mb:.0f} ({r.child_mb - first.child_mb:+.0f}) | {r.ready_s:.1f} |")


if __name__ == "__main__":
    main()
