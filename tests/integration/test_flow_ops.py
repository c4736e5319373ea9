"""The operator surfaces of flow control against a real Redis: FlowStatus over hand-written flow hashes
(the fields the core writes), /v1/destinations (auth, 404, 422, audit), the dashboard's flow routes
(session + CSRF) and the flow gauges of /metrics."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.integration.conftest import Cluster
from worker.keys import Keys
from worker.ops.api import create_app
from worker.ops.flow_status import MAX_REASON, FlowStatus
from worker.ops.serve import ServerThread
from worker.settings import parse_destinations
from worker.store.deadletters import DeadLetterQueue

pytestmark = pytest.mark.integration

TOKEN = "it-flow-token-5e1a9c3b7d2f4a6c8e0b"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPEN = {"breaker": "open", "breaker_reason": "5 consecutive transient failures: 503 Service Unavailable",
        "failures": "5", "opened": "1"}


def destinations() -> dict[str, Any]:
    raw = {"destinations": {
        "acme-ti": {"vendor": "thoughtindustries", "base_url": "https://ti.example", "api_key_env": "NOPE_TI"},
        "acme-lt": {"vendor": "ltiaas", "base_url": "https://lt.example", "api_key_env": "NOPE_LT"},
        "acme-ed": {"vendor": "edlink", "base_url": "https://ed.example", "integration_token_env": "NOPE_ED"},
    }}
    return parse_destinations(raw, environ={})


def configured(dests: dict[str, Any], name: str) -> float | None:
    rate = getattr(dests[name], "rate_limit_per_minute", None)  # the vendor default once flow control is in
    return float(rate) if rate is not None else None


@pytest.fixture
def flow(redis_client: redis.Redis) -> FlowStatus:
    return FlowStatus(redis_client, Keys("fs"), destinations())


def test_flow_status_reads_the_core_s_fields_in_one_round_trip(flow: FlowStatus, redis_client: redis.Redis) -> None:
    keys, now = flow.keys, time.time()
    redis_client.hset(keys.flow("acme-ti"), mapping={**OPEN, "breaker_since": f"{now - 90}",
                                                     "probe_at": f"{now + 20}", "rate": "60",
                                                     "rate_since": f"{now + 30}", "rate_until": f"{now + 60}"})
    redis_client.zadd(keys.parked("acme-ti"), {str(uuid.uuid4()): now - i for i in range(3)})
    redis_client.hset(keys.flow("acme-lt"), mapping={"throttled_until": f"{now + 30}",
                                                     "throttled_reason": "429 Too Many Requests"})
    redis_client.hset(keys.flow("acme-ed"), mapping={"breaker": "half_open", "breaker_since": f"{now - 2}"})

    calls: list[str] = []
    original = redis_client.execute_command
    redis_client.execute_command = lambda *a, **k: calls.append(str(a[0])) or original(*a, **k)  # type: ignore[method-assign]
    try:
        statuses = flow.all()
    finally:
        redis_client.execute_command = original  # type: ignore[method-assign]
    assert calls == [], "all() must use one pipeline, not a command per destination"

    by = {s.name: s for s in statuses}
    assert [s.name for s in statuses] == ["acme-ed", "acme-lt", "acme-ti"]
    ti = by["acme-ti"]
    assert (ti.state, ti.reason, ti.parked, ti.rate_per_minute) == ("open", OPEN["breaker_reason"], 3, 60.0)
    assert ti.since == pytest.approx(now - 90) and ti.probe_at == pytest.approx(now + 20)
    assert ti.configured_rate_per_minute == configured(flow.destinations, "acme-ti")  # type: ignore[arg-type]
    assert by["acme-lt"].state == "paused" and "429 Too Many Requests" in by["acme-lt"].reason
    assert by["acme-ed"].state == "half_open" and by["acme-ed"].parked == 0
    assert flow.get("acme-ti") == ti
    with pytest.raises(KeyError):
        flow.get("nope")


def test_pause_and_resume_write_only_the_pause_fields_and_are_audited(flow: FlowStatus,
                                                                      redis_client: redis.Redis) -> None:
    key = flow.keys.flow("acme-ti")
    redis_client.hset(key, mapping=OPEN)
    before = time.time()
    paused = flow.pause("acme-ti", reason="vendor maintenance\n02:00-04:00 UTC", actor="cli:alice")
    assert paused.state == "paused"
    assert paused.reason == "paused by cli:alice: vendor maintenance 02:00-04:00 UTC"
    raw = {k.decode(): v.decode() for k, v in redis_client.hgetall(key).items()}
    assert raw["paused"] == "1" and raw["paused_by"] == "cli:alice"
    since = float(raw["paused_since"])
    assert since >= before - 1
    assert {k: raw[k] for k in OPEN} == OPEN  # the core's fields are untouched

    again = flow.pause("acme-ti", reason="extended until 06:00", actor="api")
    assert again.since == pytest.approx(since) and again.reason == "paused by api: extended until 06:00"
    with pytest.raises(ValueError):
        flow.pause("acme-ti", reason="   ", actor="api")
    with pytest.raises(ValueError):
        flow.pause("acme-ti", reason="x" * (MAX_REASON + 1), actor="api")
    with pytest.raises(KeyError):
        flow.pause("nope", reason="x", actor="api")

    resumed = flow.resume("acme-ti", actor="dashboard")
    assert resumed.state == "open"  # the breaker still holds it: resume never closes a breaker
    raw = {k.decode(): v.decode() for k, v in redis_client.hgetall(key).items()}
    assert not [k for k in raw if k.startswith("paused")] and raw["breaker"] == "open"
    flow.resume("acme-ti", actor="dashboard")  # not paused any more: audited as done 0

    store_like = type("S", (), {"redis": redis_client, "keys": flow.keys})()
    audit = DeadLetterQueue(store_like).audit()  # type: ignore[arg-type]
    assert [(a["actor"], a["action"], a["count"], a["reason"]) for a in audit] == [
        ("dashboard", "resume", 0, ""), ("dashboard", "resume", 1, ""),
        ("api", "pause", 1, "extended until 06:00"),
        ("cli:alice", "pause", 1, "vendor maintenance 02:00-04:00 UTC")]
    assert all(a["destination"] == "acme-ti" and a["selection"] == "destination" for a in audit)


# -- over HTTP -------------------------------------------------------------------------------------------
@pytest.fixture
def server(cluster: Cluster) -> Iterator[ServerThread]:
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    s = ServerThread(create_app(settings)).start()
    yield s
    s.stop()


def test_v1_destinations(cluster: Cluster, server: ServerThread) -> None:
    r = cluster.store.redis
    keys = cluster.store.keys
    r.hset(keys.flow("ti"), mapping={**OPEN, "breaker_since": f"{time.time() - 30}"})
    r.zadd(keys.parked("ti"), {str(uuid.uuid4()): time.time()})
    api = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
    anon = httpx.Client(base_url=server.url, timeout=30)
    try:
        for method, path in [("GET", "/v1/destinations"), ("GET", "/v1/destinations/ti"),
                             ("POST", "/v1/destinations/ti/pause"), ("POST", "/v1/destinations/ti/resume")]:
            refused = anon.request(method, path, json={"reason": "x"})
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
            wrong = anon.request(method, path, json={"reason": "x"}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        assert r.hget(keys.flow("ti"), "paused") is None  # nothing was paused by the refused calls

        listing = api.get("/v1/destinations").json()["destinations"]
        assert [d["name"] for d in listing] == sorted(cluster.settings.destinations())
        assert {"ed", "ls", "lt", "ti"} <= {d["name"] for d in listing}
        ti = next(d for d in listing if d["name"] == "ti")
        assert (ti["state"], ti["parked"], ti["vendor"]) == ("open", 1, "thoughtindustries")
        assert ti["reason"] == OPEN["breaker_reason"] and ti["since_iso"].endswith("Z")
        assert {d["state"] for d in listing if d["name"] != "ti"} == {"closed"}
        assert api.get("/v1/destinations/ti").json() == ti

        missing = api.get("/v1/destinations/nope")
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
        assert api.post("/v1/destinations/nope/pause", json={"reason": "x"}).status_code == 404
        assert api.post("/v1/destinations/nope/resume").status_code == 404
        for bad in [{}, {"reason": ""}, {"reason": "  \n "}, {"reason": "x" * (MAX_REASON + 1)},
                    {"reason": "ok", "until": "tomorrow"}, {"reason": 5}]:
            answer = api.post("/v1/destinations/lt/pause", json=bad)
            assert answer.status_code == 422, (bad, answer.text)
        assert api.post("/v1/destinations/lt/pause", content=b"not json",
                        headers={"Content-Type": "application/json"}).status_code == 422
        assert r.hget(keys.flow("lt"), "paused") is None

        paused = api.post("/v1/destinations/lt/pause", json={"reason": "LMS upgrade tonight"})
        assert paused.status_code == 200, paused.text
        assert paused.json()["state"] == "paused" and paused.json()["reason"] == "paused by api: LMS upgrade tonight"
        assert r.hget(keys.flow("lt"), "paused") == b"1"
        assert api.get("/v1/destinations/lt").json()["state"] == "paused"
        resumed = api.post("/v1/destinations/lt/resume")
        assert resumed.status_code == 200 and resumed.json()["state"] == "closed"

        audit = api.get("/v1/audit").json()["items"]
        assert [(a["actor"], a["action"], a["destination"], a["count"]) for a in audit] == [
            ("api", "resume", "lt", 1), ("api", "pause", "lt", 1)]
        assert audit[1]["reason"] == "LMS upgrade tonight"

        spec = anon.get("/openapi.json").json()
        for path in ("/v1/destinations", "/v1/destinations/{name}", "/v1/destinations/{name}/pause",
                     "/v1/destinations/{name}/resume"):
            assert path in spec["paths"], path
        pause_op = spec["paths"]["/v1/destinations/{name}/pause"]["post"]
        assert pause_op["security"] and "requestBody" in pause_op
        assert "PauseBody" in spec["components"]["schemas"]
    finally:
        api.close()
        anon.close()


def test_dashboard_flow_routes_need_a_session_and_csrf(cluster: Cluster, server: ServerThread) -> None:
    stats = cluster.store.stats
    now = time.time()
    for _ in range(3):
        stats.processed("ti", "thoughtindustries", "succeeded", now=now)
    stats.processed("ti", "thoughtindustries", "retried", now=now - 120)
    stats.processed("ti", "thoughtindustries", "dead_lettered", now=now - 120)
    stats.processed("lt", "ltiaas", "succeeded", now=now - 58 * 60)
    stats.processed("lt", "ltiaas", "succeeded", now=now - 61 * 60)  # outside the hour
    browser = httpx.Client(base_url=server.url, timeout=30)
    try:
        assert browser.get("/ui/api/destinations").status_code == 401
        assert browser.get("/ui/api/throughput", headers=AUTH).status_code == 401
        assert browser.post("/login", data={"token": TOKEN}).status_code == 303
        match = re.search(r'name="csrf-token" content="([^"]+)"', browser.get("/").text)
        assert match
        csrf = match.group(1)

        series = browser.get("/ui/api/throughput").json()
        assert len(series["minute_starts"]) == 60 and series["minute_starts"] == sorted(series["minute_starts"])
        at = series["minute_starts"].index(int(now // 60) * 60)  # the last one, unless a minute just began
        assert at >= 58 and series["minutes"][at].endswith(":00.000Z")
        by = {d["name"]: d for d in series["destinations"]}
        assert by["ti"]["delivered"][at] == 3 and sum(by["ti"]["delivered"]) == 3
        assert by["ti"]["failed"][at - 2] == 2 and sum(by["ti"]["failed"]) == 2
        assert by["ti"]["dead_lettered"][at - 2] == 1
        assert sum(by["lt"]["delivered"]) == 1 and by["lt"]["delivered"][at - 58] == 1
        assert sum(by["ed"]["delivered"]) == 0
        assert browser.get("/ui/api/throughput", params={"minutes": 1000}).status_code == 422

        body = {"reason": "vendor maintenance"}
        assert browser.post("/ui/api/destinations/ed/pause", json=body).status_code == 403
        assert browser.post("/ui/api/destinations/ed/pause", json=body,
                            headers={"X-CSRF-Token": "forged"}).status_code == 403
        assert browser.post("/ui/api/destinations/ed/pause", json=body,
                            headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}).status_code == 403
        assert cluster.store.redis.hget(cluster.store.keys.flow("ed"), "paused") is None
        ok = browser.post("/ui/api/destinations/ed/pause", json=body, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["state"] == "paused"
        listing = browser.get("/ui/api/destinations").json()["destinations"]
        assert next(d for d in listing if d["name"] == "ed")["reason"] == "paused by dashboard: vendor maintenance"
        assert browser.post("/ui/api/destinations/ed/resume", json={}).status_code == 403
        back = browser.post("/ui/api/destinations/ed/resume", json={}, headers={"X-CSRF-Token": csrf})
        assert back.status_code == 200 and back.json()["state"] == "closed"
        audit = DeadLetterQueue(cluster.store).audit()
        assert [(a["actor"], a["action"]) for a in audit] == [("dashboard", "resume"), ("dashboard", "pause")]
    finally:
        browser.close()


def test_metrics_flow_gauges(cluster: Cluster, server: ServerThread) -> None:
    r, keys, now = cluster.store.redis, cluster.store.keys, time.time()
    r.hset(keys.flow("ti"), mapping={**OPEN, "rate": "42.5", "rate_since": f"{now + 30}",
                                     "rate_until": f"{now + 90}", "rate_reason": "HTTP 429 at 85/min"})
    r.zadd(keys.parked("ti"), {str(uuid.uuid4()): now - 300, str(uuid.uuid4()): now - 10})
    r.hset(keys.flow("lt"), mapping={"paused": "1", "paused_reason": "x", "paused_by": "api"})
    r.hset(keys.flow("ed"), mapping={"breaker": "half_open"})
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value

    def state_of(dest: str) -> dict[str, float]:
        return {dict(lbl)["state"]: v for (n, lbl), v in samples.items()
                if n == "gradesync_destination_state" and dict(lbl)["destination"] == dest}

    assert state_of("ti") == {"closed": 0, "open": 1, "half_open": 0, "paused": 0}
    assert state_of("lt") == {"closed": 0, "open": 0, "half_open": 0, "paused": 1}
    assert state_of("ed") == {"closed": 0, "open": 0, "half_open": 1, "paused": 0}
    assert state_of("ls") == {"closed": 1, "open": 0, "half_open": 0, "paused": 0}

    def one(name: str, dest: str) -> float | None:
        return samples.get((name, frozenset({("destination", dest)})))

    assert one("gradesync_events_parked", "ti") == 2 and one("gradesync_events_parked", "ls") == 0
    assert one("gradesync_events_parked_oldest_age_seconds", "ti") == pytest.approx(300, abs=60)
    assert one("gradesync_events_parked_oldest_age_seconds", "lt") == 0
    assert one("gradesync_destination_rate_limit", "ti") == 42.5
    assert one("gradesync_destination_rate_lowered", "ti") == 1 and one("gradesync_destination_rate_lowered", "ls") == 0
    assert one("gradesync_destination_rate_restore_timestamp_seconds", "ti") == pytest.approx(now + 90, abs=1)
    assert one("gradesync_destination_rate_restore_timestamp_seconds", "ls") is None
    dests = cluster.settings.destinations()
    for name in ("ls", "lt", "ed"):  # unlimited: no sample (as documented); configured: the limit
        assert one("gradesync_destination_rate_limit", name) == configured(dests, name)  # type: ignore[arg-type]
    assert "paused_reason" not in text and json.dumps(OPEN["breaker_reason"]) not in text
