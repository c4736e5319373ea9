"""Benchmark: delivered grades per second, gradesync against plain Celery workers doing the same POST.

    .venv/bin/python bench/bench_delivery.py                    # throughput: all contenders, N = 3000
    .venv/bin/python bench/bench_delivery.py --only gradesync --processes 1,2
    .venv/bin/python bench/bench_delivery.py --only gradesync --processes 1,2 --affinity auto,on,off
    .venv/bin/python bench/bench_delivery.py --latency-run      # p50/p99 publish -> vendor answer
    .venv/bin/python bench/bench_delivery.py --rss-run          # worker RSS with 100 000 scheduled

One private redis-server and one LTIAAS sandbox (its own process, answering after ``--latency`` s) serve
every contender in turn. Each contender is a worker process started idle; then N score events are
published and drained. Throughput = (N - 1) / (last - first vendor answer), read from the sandbox's own
request log (for the no-op task, from the task's completion times). CPU seconds per 1 000 events are each
worker's own (user + system) CPU from /proc, over its process tree, from ready to drained (less
sensitive than events/s to a machine that other work keeps busy).

Contenders (see ``bench/celery_baselines.py``):
  noop-threads / noop-prefork   a Celery task that does nothing (threads -c T / prefork -c 2)
  thin                          Celery, threads -c T, one shared httpx.Client, the same POST
  textbook                      Celery, prefork -c 2, httpx.post per task
  gradesync-pN                  ``gradesync worker -c T --processes N`` (ledger, lease, stale guard, flow
                                control, metrics, logs); ``--processes 1,2`` runs N = 1 and N = 2;
                                with ``--affinity auto,on,off`` each with that GRADESYNC_WORKER_CPU_AFFINITY
                                (``auto``, the default, keeps the plain name; the others add -on / -off)
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from pydantic import SecretStr

from sandbox import DEMO_CREDENTIALS
from sandbox.control import SandboxClient
from sandbox.localredis import EmbeddedRedis, free_port
from worker.crypto import generate_key
from worker.publish import Publisher
from worker.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
QUEUE = "grades.bench"
LINE_ITEM = "https://lms.example/api/lti/courses/1/line_items/7"
CREDS = DEMO_CREDENTIALS["ltiaas"]
TICK = os.sysconf("SC_CLK_TCK")


# -- processes --------------------------------------------------------------------------------------
def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants."""
    total = 0.0
    for pid in tree_pids(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores: /proc/stat, less idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def tree_rss_mb(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{text!r} not seen in {timeout}s:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT) -> Proc:
    handle = log.open("wb")
    popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    return Proc(popen, log)


# -- the run --------------------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    argv: list[str]
    ready: str
    kind: str  # "celery" (bench.deliver messages) or "gradesync"
    env: dict[str, str] = field(default_factory=dict)  # on top of the bench's environment


@dataclass
class Result:
    name: str
    rate: float
    cpu_per_1000: float
    rss_mb: float
    #: cores busy while it drained: the whole machine, and of that the simulator and Redis
    machine_cores: float = 0.0
    sandbox_cores: float = 0.0
    redis_cores: float = 0.0


class Bench:
    def __init__(self, tmp: Path, latency: float) -> None:
        self.tmp = tmp
        self.redis_server = EmbeddedRedis.start(tmp / "redis", persist=False)
        self.url = self.redis_server.url
        self.r = redis.Redis.from_url(self.url)
        ports = {v: free_port() for v in ("learningstudio", "ltiaas", "edlink", "thoughtindustries")}
        self.vendor_url = f"http://127.0.0.1:{ports['ltiaas']}"
        self.sandbox = spawn([sys.executable, "-m", "worker.cli", "sandbox",
                              *[a for v, p in ports.items() for a in (f"--{v}-port", str(p))]],
                             dict(os.environ), tmp / "sandbox.log")
        self.sandbox.wait_for("ltiaas")
        self.vendor = SandboxClient(self.vendor_url)
        self.latency = latency
        (tmp / "destinations.toml").write_text(
            f'[destinations.bench]\nvendor = "ltiaas"\nbase_url = "{self.vendor_url}"\napi_key_env = "BENCH_API_KEY"\n'
            "timeout = 10\n"
        )
        key = os.environ.get("GRADESYNC_SECRET_KEY") or generate_key()  # stored events are encrypted at rest
        self.env = {
            **os.environ,
            "GRADESYNC_SECRET_KEY": key,
            "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), str(ROOT)]),
            "BENCH_BROKER": self.url,
            "BENCH_VENDOR": self.vendor_url,
            "BENCH_API_KEY": CREDS["api_key"],
            "BENCH_SERVICE_KEY": CREDS["service_key"],
            "BENCH_DONE_DIR": str(tmp),
            "GRADESYNC_REDIS_URL": self.url,
            "GRADESYNC_DESTINATIONS": str(tmp / "destinations.toml"),
            "GRADESYNC_LOG_FORMAT": "json",
        }
        os.environ["BENCH_API_KEY"] = CREDS["api_key"]
        self.settings = Settings(redis_url=self.url, destinations_file=tmp / "destinations.toml",
                                 secret_key=SecretStr(key))
        self.publisher = Publisher(self.settings)

    def close(self) -> None:
        self.publisher.close()
        self.vendor.close()
        self.sandbox.stop()
        self.redis_server.stop()

    def reset(self) -> None:
        self.r.flushdb()
        for f in self.tmp.glob("done-*.txt"):
            f.unlink()
        self.vendor.reset()
        if self.latency:
            self.vendor.fault(latency=self.latency, times=-1)

    # -- events ---------------------------------------------------------------------------------------
    @staticmethod
    def events(n: int, tag: str) -> list[dict[str, Any]]:
        base = datetime.now(UTC) - timedelta(minutes=1)
        return [{"destination": "bench", "learner_id": f"{tag}-{i}", "score_given": i % 10, "score_maximum": 10,
                 "event_id": str(uuid.uuid4()), "occurred_at": (base + timedelta(milliseconds=i)).isoformat(),
                 "target": {"line_item_id": LINE_ITEM, "service_key": CREDS["service_key"]}} for i in range(n)]

    def publish_celery(self, batch: list[dict[str, Any]]) -> None:
        app = Celery("bench-producer", broker=self.url, set_as_current=False)
        app.conf.task_serializer = "json"
        with app.producer_or_acquire() as producer:
            for e in batch:
                body = {"userId": e["learner_id"], "activityProgress": "Completed", "gradingProgress": "FullyGraded",
                        "scoreGiven": e["score_given"], "scoreMaximum": e["score_maximum"],
                        "timestamp": e["occurred_at"]}
                app.send_task("bench.deliver", args=[LINE_ITEM, body], queue=QUEUE, routing_key=QUEUE,
                              producer=producer, ignore_result=True)

    def delivered_times(self, n: int, kind: str, deadline: float) -> list[float]:
        """Vendor answer times (or no-op completion times) once all n are in, or once 15 s pass without one."""
        seen, idle_since = -1, time.monotonic()
        while True:
            if kind == "noop":
                times = [float(x) for f in self.tmp.glob("done-*.txt") for x in f.read_text().split()]
            else:
                times = [e["t"] for e in self.vendor.requests(method="POST") if e["status"] == 204]
            if len(times) != seen:
                seen, idle_since = len(times), time.monotonic()
            if len(times) >= n or time.monotonic() > min(deadline, idle_since + 15):
                return sorted(times)
            time.sleep(1.0)

    def drained(self, deadline: float) -> None:
        quiet = 0
        while time.monotonic() < deadline and quiet < 3:
            busy = self.r.llen(QUEUE) or self.r.hlen("unacked")
            quiet = 0 if busy else quiet + 1
            time.sleep(0.2)

    def run(self, c: Contender, n: int, timeout: float) -> Result:
        self.reset()
        proc = spawn(c.argv, {**self.env, **c.env}, self.tmp / f"{c.name}.log")
        try:
            proc.wait_for(c.ready)
            time.sleep(1.0)  # let every pool thread/process come up
            cpu0 = tree_cpu(proc.popen.pid)
            side0 = (machine_busy(), tree_cpu(self.sandbox.popen.pid), tree_cpu(self.redis_server.process.pid),
                     time.monotonic())
            batch = self.events(n, c.name)
            if c.kind == "gradesync":
                self.publisher.publish_many(batch)
            else:
                self.publish_celery(batch)
            deadline = time.monotonic() + timeout
            self.drained(deadline)
            cpu1 = tree_cpu(proc.popen.pid)
            side1 = (machine_busy(), tree_cpu(self.sandbox.popen.pid), tree_cpu(self.redis_server.process.pid),
                     time.monotonic())
            rss = tree_rss_mb(proc.popen.pid)
            if c.name.startswith("noop"):
                proc.stop()  # the no-op tasks write their completion times on shutdown
            times = self.delivered_times(n, "noop" if c.name.startswith("noop") else "vendor", deadline)
        finally:
            proc.stop()
        if len(times) < n:
            raise RuntimeError(f"{c.name}: only {len(times)} of {n} delivered in {timeout}s; see {proc.log}")
        rate = (n - 1) / (times[-1] - times[0])
        wall = side1[3] - side0[3]
        machine, sandbox, redis_cpu = ((side1[i] - side0[i]) / wall for i in range(3))
        return Result(c.name, rate, (cpu1 - cpu0) / n * 1000, rss, machine, sandbox, redis_cpu)


def contenders(threads: int, processes: list[int], affinities: list[str]) -> dict[str, Contender]:
    celery = [sys.executable, "-m", "celery"]
    common = ["worker", "-Q", QUEUE, "--without-mingle", "--without-gossip", "-l", "INFO", "--prefetch-multiplier", "1"]
    out = {
        "noop-threads": Contender("noop-threads", [*celery, "-A", "celery_baselines:noop", *common, "-P", "threads",
                                                   "-c", str(threads)], "ready.", "celery"),
        "noop-prefork": Contender("noop-prefork", [*celery, "-A", "celery_baselines:noop", *common, "-P", "prefork",
                                                   "-c", "2"], "ready.", "celery"),
        "thin": Contender("thin", [*celery, "-A", "celery_baselines:thin", *common, "-P", "threads",
                                   "-c", str(threads)], "ready.", "celery"),
        "textbook": Contender("textbook", [*celery, "-A", "celery_baselines:textbook", *common, "-P", "prefork",
                                           "-c", "2"], "ready.", "celery"),
    }
    for p in processes:
        for mode in affinities:  # GRADESYNC_WORKER_CPU_AFFINITY: auto (the default) pins 2 processes on 2 cores
            name = f"gradesync-p{p}" + ("" if mode == "auto" else f"-{mode}")
            argv = [sys.executable, "-m", "worker.cli", "worker", "-c", str(threads), "-n", f"bench{p}@%h",
                    "--processes", str(p)]
            out[name] = Contender(name, argv, "worker_ready", "gradesync", {"GRADESYNC_WORKER_CPU_AFFINITY": mode})
    return out


def throughput(bench: Bench, args: argparse.Namespace) -> None:
    procs = [int(p) for p in args.processes.split(",")]
    table = contenders(args.threads, procs, args.affinity)
    chosen = [c for c in table if not args.only or any(c.startswith(o) for o in args.only.split(","))]
    results: dict[str, Result] = {}
    # with --repeat, rounds alternate the contenders: a machine that other work keeps busy now and then
    # slows them all alike, not one of them
    rounds: dict[str, list[Result]] = {name: [] for name in chosen}
    for _ in range(args.repeat - 1):
        for name in chosen:
            rounds[name].append(bench.run(table[name], args.events, args.timeout))
    for name in chosen:
        runs = [*rounds[name], bench.run(table[name], args.events, args.timeout)]
        best = statistics.median(r.rate for r in runs)
        results[name] = r = Result(name, best, statistics.median(r.cpu_per_1000 for r in runs),
                                   max(r.rss_mb for r in runs), *(statistics.median(getattr(x, f) for x in runs)
                                                                  for f in ("machine_cores", "sandbox_cores",
                                                                            "redis_cores")))
        print(f"{name:<14} {best:>8.1f} events/s  {r.cpu_per_1000:>6.2f} CPU s / 1 000 events  "
              f"(median of {args.repeat} x {args.events}); machine {r.machine_cores:.2f} of {os.cpu_count()} "
              f"cores busy (simulator {r.sandbox_cores:.2f}, Redis {r.redis_cores:.2f})", flush=True)
    print()
    for g in (r for n, r in results.items() if n.startswith("gradesync")):
        print(f"{g.name}: {g.cpu_per_1000:.2f} CPU s per 1 000 events, worker RSS {g.rss_mb:.0f} MB (all processes)")
        for base in ("thin", "textbook", "noop-threads"):
            if base in results:
                print(f"ratio {g.name} / {base}: {g.rate / results[base].rate:.2f}x "
                      f"(CPU per event {g.cpu_per_1000 / results[base].cpu_per_1000:.2f}x)")
    for one in (n for n in results if n.startswith("gradesync-p1")):
        two = one.replace("-p1", "-p2", 1)  # the same affinity mode
        if two in results:
            print(f"scaling 1 -> 2 processes ({two} / {one}): {results[two].rate / results[one].rate:.2f}x")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


#: the simulator's request log keeps this many requests (what a run can measure)
SANDBOX_LOG = 5000


def latency_run(bench: Bench, args: argparse.Namespace) -> None:
    """Publish one event at a time at ``--rate`` events/s; p50/p99 publish -> vendor answer."""
    procs = int(args.processes.split(",")[0])
    c = contenders(args.threads, [procs], args.affinity[:1])
    contender = next(v for k, v in c.items() if k.startswith("gradesync"))
    bench.reset()
    proc = spawn(contender.argv, {**bench.env, **contender.env}, bench.tmp / "latency.log")
    try:
        proc.wait_for(contender.ready)
        time.sleep(1.0)
        batch = bench.events(int(args.rate * args.seconds), "lat")
        sent: dict[str, float] = {}
        start = time.monotonic()
        for i, e in enumerate(batch):
            pause = start + i / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent[e["learner_id"]] = time.time()
            bench.publisher.publish(e)
        bench.drained(time.monotonic() + args.timeout)
        answers: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        import json

        while len(answers) < len(batch) and time.monotonic() < deadline:
            for entry in bench.vendor.requests(method="POST"):
                if entry["status"] == 204:
                    answers[json.loads(entry["body"])["userId"]] = entry["t"]
            time.sleep(0.5)
    finally:
        proc.stop()
    lat = [answers[u] - t for u, t in sent.items() if u in answers]
    print(f"latency at {args.rate:.0f} events/s for {args.seconds:.0f} s ({len(lat)}/{len(batch)} delivered): "
          f"p50 {percentile(lat, 0.5) * 1000:.0f} ms, p99 {percentile(lat, 0.99) * 1000:.0f} ms, "
          f"max {max(lat) * 1000:.0f} ms")


def rss_run(bench: Bench, args: argparse.Namespace) -> None:
    """100 000 events scheduled for retry an hour from now; the worker's RSS once it has settled."""
    bench.reset()
    n = args.scheduled
    keys = bench.publisher.keys
    for start in range(0, n, 5000):
        bench.publisher.publish_many(bench.events(min(5000, n - start), f"rss{start}"))
    bench.r.delete(QUEUE)
    due = time.time() + 3600
    cursor = 0
    move: Callable[[list[bytes]], None]

    def move(ids: list[bytes]) -> None:
        with bench.r.pipeline(transaction=False) as pipe:
            for raw in ids:
                eid = raw.decode().rsplit(":", 1)[-1]
                pipe.hset(keys.event(eid), mapping={"state": "retrying", "next_attempt_at": f"{due:.3f}"})
                pipe.zadd(keys.scheduled, {eid: due})
            pipe.execute()

    while True:
        cursor, found = bench.r.scan(cursor, match=keys.event("*"), count=5000)
        move([k for k in found if not k.endswith(b":attempts")])
        if cursor == 0:
            break
    print(f"scheduled: {bench.r.zcard(keys.scheduled)} events, Redis used_memory "
          f"{int(bench.r.info('memory')['used_memory']) / 2**20:.0f} MB")
    procs = int(args.processes.split(",")[0])
    table = contenders(args.threads, [procs], args.affinity[:1])
    contender = next(v for k, v in table.items() if k.startswith("gradesync"))
    proc = spawn(contender.argv, {**bench.env, **contender.env}, bench.tmp / "rss.log")
    try:
        proc.wait_for(contender.ready)
        samples = []
        for _ in range(int(args.seconds)):
            time.sleep(1.0)
            samples.append(tree_rss_mb(proc.popen.pid))
    finally:
        proc.stop()
    print(f"worker RSS with {n} scheduled over {args.seconds:.0f} s: max {max(samples):.0f} MB, "
          f"last {samples[-1]:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000, help="events per contender (the sandbox logs 5000 at most)")
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the sandbox takes to answer")
    parser.add_argument("--only", default="", help="comma-separated contender name prefixes")
    parser.add_argument("--processes", default="1", help="gradesync --processes values to run, e.g. 1,2")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--affinity", default=["auto"], type=lambda text: text.split(","),
                        help="GRADESYNC_WORKER_CPU_AFFINITY values to run gradesync with, e.g. auto,off,on; "
                             "other than auto, the contender's name ends in -off / -on")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--latency-run", action="store_true")
    parser.add_argument("--rate", type=float, default=50.0, help="events/s of the latency run")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the latency / RSS run")
    parser.add_argument("--rss-run", action="store_true")
    parser.add_argument("--scheduled", type=int, default=100_000)
    args = parser.parse_args()
    if args.latency_run and args.rate * args.seconds > SANDBOX_LOG:
        parser.error(f"--rate x --seconds is {args.rate * args.seconds:.0f} events; the sandbox logs {SANDBOX_LOG} "
                     f"requests at most: use --seconds {SANDBOX_LOG / args.rate:.0f} or less")
    bench = Bench(Path(tempfile.mkdtemp(prefix="gradesync-bench-")), args.latency)
    try:
        if args.latency_run:
            latency_run(bench, args)
        elif args.rss_run:
            rss_run(bench, args)
        else:
            throughput(bench, args)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
