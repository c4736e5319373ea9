"""Benchmark: `publish_many` against a plain Celery `apply_async` loop, same events, same Redis.

    .venv/bin/python bench/bench_publish.py [--events 2000] [--repeat 3]

Uses GRADESYNC_TEST_REDIS_URL, else a private embedded redis-server. The baseline sends each event
(validated, serialized to JSON) as the argument of a Celery task with one `apply_async` per event — the
usual way to enqueue — while `publish_many` validates, records each event in the ledger and queues the
delivery messages in pipelined round trips. Prints events/second for both and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis
from celery import Celery

from sandbox.localredis import EmbeddedRedis, answers
from worker.crypto import generate_key
from worker.events import GradeEvent
from worker.publish import Publisher
from worker.settings import Settings

DESTS = """
[destinations.bench]
vendor = "ltiaas"
base_url = "http://127.0.0.1:9"
api_key_env = "BENCH_KEY"
"""


def events(n: int) -> list[dict[str, object]]:
    return [{"destination": "bench", "learner_id": f"u{i}", "score_given": i % 10, "score_maximum": 10,
             "event_id": str(uuid.uuid4()),
             "target": {"line_item_id": "https://lms.example/li/1", "service_key": "sk"}} for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    url = os.environ.get("GRADESYNC_TEST_REDIS_URL")
    server = None
    if not url or not answers(url):
        server = EmbeddedRedis.start(tmp / "redis", persist=False)
        url = server.url
    (tmp / "d.toml").write_text(DESTS)
    settings = Settings(redis_url=url, destinations_file=tmp / "d.toml",
                        secret_key=os.environ.get("GRADESYNC_SECRET_KEY") or generate_key())
    client = redis.Redis.from_url(url)
    publisher = Publisher(settings)
    plain = Celery("baseline", broker=url, set_as_current=False)
    plain.conf.task_serializer = "json"
    vendors = {"bench": "ltiaas"}
    rates: dict[str, list[float]] = {"apply_async loop": [], "publish_many": []}
    try:
        for _ in range(args.repeat):
            batch = events(args.events)
            client.flushdb()
            start = time.perf_counter()
            for item in batch:
                e = GradeEvent.model_validate(item, context={"vendors": vendors})
                plain.send_task("gradesync.deliver", args=[e.to_wire()], queue="grades.bench")
            rates["apply_async loop"].append(args.events / (time.perf_counter() - start))
            assert client.llen("grades.bench") == args.events

            batch = events(args.events)
            client.flushdb()
            start = time.perf_counter()
            publisher.publish_many(batch)
            rates["publish_many"].append(args.events / (time.perf_counter() - start))
            assert client.llen("grades.bench") == args.events
    finally:
        publisher.close()
        if server:
            server.stop()
    med = {k: statistics.median(v) for k, v in rates.items()}
    for name, rate in med.items():
        print(f"{name:<18} {rate:>9.0f} events/s  (median of {args.repeat} x {args.events})")
    print(f"ratio publish_many / apply_async loop: {med['publish_many'] / med['apply_async loop']:.2f}x")


if __name__ == "__main__":
    main()
