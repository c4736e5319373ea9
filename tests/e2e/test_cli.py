"""The command line as a user runs it: `gradesync sandbox`, `gradesync worker`, `gradesync publish`,
`gradesync status`, `gradesync config check`, `gradesync schema`, and Flower — all as separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from sandbox import DEFAULT_PORTS
from sandbox.localredis import free_port
from tests.integration.conftest import SECRETS, destinations_toml

pytestmark = pytest.mark.e2e

GRADESYNC = [sys.executable, "-m", "worker.cli"]


class Env:
    def __init__(self, redis_url: str, tmp: Path) -> None:
        self.tmp = tmp
        self.ports = {v: free_port() for v in DEFAULT_PORTS}
        self.destinations = tmp / "destinations.toml"
        urls = {v: f"http://127.0.0.1:{p}" for v, p in self.ports.items()}
        self.destinations.write_text(destinations_toml(urls))
        self.vars = {**os.environ, **SECRETS, "GRADESYNC_REDIS_URL": redis_url,
                     "GRADESYNC_DESTINATIONS": str(self.destinations), "GRADESYNC_LOG_FORMAT": "json"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*GRADESYNC, *args], env=self.vars, input=stdin, capture_output=True, text=True,
                              timeout=120)

    def start(self, name: str, args: list[str], ready: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, env=self.vars, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ready in log.read_text(errors="replace"):
                return proc
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        raise AssertionError(f"{name} not ready: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture
def env(redis_client: redis.Redis, redis_url: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(redis_url, tmp_path)
    yield e
    e.stop()


def ti(**over: object) -> dict[str, object]:
    event: dict[str, object] = {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": 8,
                                "score_maximum": 10, "target": {"assignment_id": str(uuid.uuid4())}}
    event.update(over)
    return event


def test_schema_prints_the_event_json_schema(env: Env) -> None:
    out = env.run("schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert schema["title"] == "GradeEvent" and "target" in schema["properties"]


def test_config_check(env: Env) -> None:
    ok = env.run("config", "check")
    assert ok.returncode == 0, ok.stderr
    assert "5 destination(s) OK" in ok.stdout
    env.destinations.write_text(env.destinations.read_text().replace('vendor = "ltiaas"', 'vendor = "moodle"')
                                .replace("timeout = 3.0", "timeout = -1", 1))
    bad = env.run("config", "check")
    assert bad.returncode == 1
    assert f"{env.destinations}: destination 'ls': key 'timeout': Input should be greater than 0" in bad.stderr
    assert "destination 'lt': key 'vendor': must be one of learningstudio" in bad.stderr


def test_config_check_warns_when_redis_could_lose_state(env: Env, redis_client: redis.Redis) -> None:
    before = {k: redis_client.config_get(k)[k] for k in ("maxmemory-policy", "appendonly", "save")}
    try:
        redis_client.config_set("appendonly", "no")
        redis_client.config_set("save", "")
        redis_client.config_set("maxmemory-policy", "allkeys-lru")
        risky = env.run("config", "check")
        assert risky.returncode == 0, risky.stderr  # a warning, not a failure
        assert "warning: Redis maxmemory-policy is 'allkeys-lru'" in risky.stderr
        assert "warning: Redis has no persistence" in risky.stderr
        redis_client.config_set("maxmemory-policy", "noeviction")
        redis_client.config_set("appendonly", "yes")
        safe = env.run("config", "check")
        assert safe.returncode == 0 and "warning:" not in safe.stderr, safe.stderr
        env.vars["GRADESYNC_SHUTDOWN_GRACE"] = "9"  # a 3 s destination timeout no longer fits: (9 - 5) / 2 = 2
        capped = env.run("config", "check")
        assert capped.returncode == 0 and "timeout 3.0s is capped to 2s per request" in capped.stderr
    finally:
        for k, v in before.items():
            redis_client.config_set(k, v)


def test_config_check_reports_missing_secret(env: Env) -> None:
    del env.vars["IT_TI_KEY"]
    out = env.run("config", "check")
    assert out.returncode == 1
    assert "destination 'ti': environment variable not set for api_key_env ($IT_TI_KEY)" in out.stderr


def test_publish_refuses_a_file_with_bad_lines_and_publishes_nothing(env: Env, redis_client: redis.Redis) -> None:
    lines = [json.dumps(ti()), "{not json", json.dumps(ti(score_given=-3)), "", json.dumps(ti())]
    src = env.tmp / "grades.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = env.run("publish", str(src))
    assert out.returncode == 1
    assert "line 2: not valid JSON" in out.stderr
    assert "line 3: score_given: Input should be greater than or equal to 0" in out.stderr
    assert "2 invalid record(s); nothing published" in out.stderr
    assert redis_client.keys("gradesync:event:*") == [] and redis_client.llen("grades") == 0

    skipped = env.run("publish", "--skip-invalid", "--json", str(src))
    assert skipped.returncode == 0
    ids = json.loads(skipped.stdout)
    assert len(ids) == 2 and redis_client.llen("grades") == 2


def test_publish_reads_a_json_array_from_stdin(env: Env, redis_client: redis.Redis) -> None:
    out = env.run("publish", "-", stdin=json.dumps([ti(), ti(), ti()]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "published 3 event(s)"
    bad = env.run("publish", "-", stdin=json.dumps([ti(), ti(target={})]))
    assert bad.returncode == 1 and "item 2: target.assignment_id: Field required" in bad.stderr


def test_services_as_a_user_runs_them(env: Env) -> None:
    env.start("sandbox", [*GRADESYNC, "sandbox", *[a for v, p in env.ports.items() for a in (f"--{v}-port", str(p))]],
              "thoughtindustries")
    env.start("worker", [*GRADESYNC, "worker", "-c", "4", "-n", f"e2e-{os.getpid()}@%h"], "worker_ready")
    published = env.run("publish", "--json", "-", stdin="\n".join(json.dumps(ti()) for _ in range(3)))
    assert published.returncode == 0, published.stderr
    ids = json.loads(published.stdout)
    deadline = time.monotonic() + 60
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        states = {i: json.loads(env.run("status", "--json", i).stdout)["state"] for i in ids}
        if set(states.values()) == {"succeeded"}:
            break
        time.sleep(0.5)
    assert set(states.values()) == {"succeeded"}, states
    status = json.loads(env.run("status", "--json", ids[0]).stdout)
    assert status["attempts"] == 1 and status["history"][0]["status"] == 302
    human = env.run("status", ids[0])
    assert f"{ids[0]}  succeeded" in human.stdout and "attempt 1" in human.stdout
    unknown = env.run("status", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "no event" in unknown.stderr


def test_flower_shows_meaningful_task_names_and_no_secret_and_its_metrics_need_auth(env: Env) -> None:
    port = free_port()
    env.start("sandbox", [*GRADESYNC, "sandbox", *[a for v, p in env.ports.items() for a in (f"--{v}-port", str(p))]],
              "thoughtindustries")
    env.start("worker", [*GRADESYNC, "worker", "-c", "2", "-E", "-n", f"flower-{os.getpid()}@%h"], "worker_ready")
    refused = env.run("flower", f"--port={port}", "--address=127.0.0.1")  # the Procfile line, without auth
    assert refused.returncode != 0 and "Flower needs authentication" in refused.stderr
    env.vars["FLOWER_BASIC_AUTH"] = "ops:flower-e2e-password"
    env.start("flower", [*GRADESYNC, "flower", f"--port={port}", "--address=127.0.0.1"], "Visit me at")
    base, auth = f"http://127.0.0.1:{port}", ("ops", "flower-e2e-password")
    for path in ("/metrics", "/api/tasks", "/tasks"):  # nothing of Flower is public but its health check
        anon = httpx.get(f"{base}{path}", timeout=10)
        assert anon.status_code == 401, (path, anon.status_code)
        assert httpx.get(f"{base}{path}", auth=("ops", "wrong"), timeout=10).status_code == 401
    assert httpx.get(f"{base}/healthcheck", timeout=10).text == "OK"
    lt = {"destination": "lt", "learner_id": "flower-learner", "score_given": 1, "score_maximum": 2,
          "target": {"line_item_id": "https://lms.example/li/9", "service_key": "demo-service-key"}}
    assert env.run("publish", "-", stdin=json.dumps(lt)).returncode == 0
    deadline = time.monotonic() + 60
    tasks: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline and not tasks:
        tasks = httpx.get(f"{base}/api/tasks", auth=auth, timeout=10).json()
        time.sleep(0.5)
    assert tasks, "Flower saw no task"
    task = next(iter(tasks.values()))
    assert task["name"] == "gradesync.deliver:lt"
    metrics = httpx.get(f"{base}/metrics", auth=auth, timeout=10)
    assert metrics.status_code == 200 and "flower_events_total" in metrics.text
    page = httpx.get(f"{base}/tasks", auth=auth, timeout=10).text + json.dumps(tasks) + metrics.text
    for secret in [*SECRETS.values(), "demo-service-key"]:
        assert secret not in page
