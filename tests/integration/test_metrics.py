"""/metrics after real deliveries by a worker process; and no secret in any page or API answer (after
deliveries by an in-process worker)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from sandbox import DEMO_CREDENTIALS
from sandbox.control import SandboxClient
from sandbox.localredis import free_port
from tests.integration.conftest import SECRETS, Cluster
from worker.ops.api import create_app
from worker.ops.overview import OpsContext
from worker.ops.serve import ServerThread
from worker.store.stats import BUCKETS

pytestmark = pytest.mark.integration

TOKEN = "it-metrics-token-2b7d9e4f6a8c0e1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SERVICE_KEY = DEMO_CREDENTIALS["ltiaas"]["service_key"]  # the per-event credential the sandbox accepts
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def lt_event(learner: str) -> dict[str, Any]:
    return {
        "destination": "lt",
        "learner_id": learner,
        "score_given": 8,
        "score_maximum": 10,
        "target": {"line_item_id": "https://lms.example/api/lti/courses/9/line_items/3", "service_key": SERVICE_KEY},
    }


def ti_event() -> dict[str, Any]:
    return {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": 1, "score_maximum": 2,
            "target": {"assignment_id": str(uuid.uuid4())}}


@pytest.fixture
def server(cluster: Cluster) -> Iterator[ServerThread]:
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    s = ServerThread(create_app(settings)).start()
    yield s
    s.stop()


@pytest.fixture
def local_server(local: Cluster) -> Iterator[ServerThread]:
    """The ops app over the in-process pipeline (``local``'s dispatcher)."""
    settings = local.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    s = ServerThread(create_app(settings, ctx=OpsContext(settings, dispatcher=local.memory))).start()
    yield s
    s.stop()


def scrape(url: str) -> tuple[str, Samples]:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def request_counts(samples: Samples) -> dict[tuple[str, str], float]:
    """Vendor requests per (destination, status class)."""
    out: dict[tuple[str, str], float] = {}
    for labels, n in series(samples, "gradesync_vendor_request_duration_seconds_count").items():
        d = dict(labels)
        out[(d["destination"], d["status_class"])] = out.get((d["destination"], d["status_class"]), 0) + n
    return out


def scrape_once_written(url: str, want: dict[tuple[str, str], float], timeout: float = 60.0) -> tuple[str, Samples]:
    """Scrape until the worker wrote its request histograms (it flushes them about every second)."""
    deadline = time.monotonic() + timeout
    text, s = scrape(url)
    while any(request_counts(s).get(k, 0) < v for k, v in want.items()) and time.monotonic() < deadline:
        time.sleep(0.2)
        text, s = scrape(url)
    return text, s


def test_metrics_after_real_deliveries(cluster: Cluster, vendors: dict[str, SandboxClient],
                                       server: ServerThread) -> None:
    # before any worker runs: messages wait in the broker queues
    early = cluster.publisher.publish_many([lt_event("m-1"), lt_event("m-2"), ti_event()])
    _, s = scrape(server.url)
    assert value(s, "gradesync_redis_up") == 1
    # one shared queue: each destination's depth is that queue's (what its messages wait behind)
    assert {d: value(s, "gradesync_queue_depth", destination=d) for d in ("ed", "ls", "lt", "ti")} == {
        "ed": 3, "ls": 3, "lt": 3, "ti": 3}
    assert value(s, "gradesync_events_published_total", destination="lt") == 2
    assert value(s, "gradesync_events_published_total", destination="ed") == 0
    assert value(s, "gradesync_events_processed_total", destination="lt", vendor="ltiaas", outcome="succeeded") == 0

    # one lt event is refused for good (400), one ti event fails once (503) and is retried
    vendors["ltiaas"].fault(status=400, times=1, path="/scores")
    vendors["thoughtindustries"].fault(status=503, times=1, method="POST")
    cluster.start_worker()
    states = cluster.wait_for(early)
    assert sorted(states[e] for e in early[:2]) == ["dead_lettered", "succeeded"]
    assert states[early[2]] == "succeeded"
    dead_id = next(e for e in early[:2] if states[e] == "dead_lettered")

    # one ti event waits for a retry far away; one lt event is being delivered (slowly) while we scrape
    vendors["thoughtindustries"].fault(status=503, times=1, method="POST", retry_after=300)
    [waiting] = cluster.publisher.publish_many([ti_event()])
    cluster.wait_for([waiting], {"retrying"})
    vendors["ltiaas"].fault(latency=2.5, times=1, path="/scores")
    [slow] = cluster.publisher.publish_many([lt_event("m-3")])
    cluster.wait_for([slow], {"in_progress"})

    before = time.time()
    text, s = scrape_once_written(server.url, {("lt", "4xx"): 1, ("ti", "5xx"): 2, ("lt", "2xx"): 1})
    after = time.time()
    dead_at = cluster.store.ledger.load(dead_id).get_float("dead_at")  # type: ignore[union-attr]
    assert dead_at is not None

    processed = {(dict(k)["destination"], dict(k)["outcome"]): v
                 for k, v in series(s, "gradesync_events_processed_total").items() if v}
    assert processed == {("lt", "succeeded"): 1, ("lt", "dead_lettered"): 1, ("ti", "succeeded"): 1,
                         ("ti", "retried"): 2}
    assert value(s, "gradesync_events_processed_total", destination="ti", vendor="thoughtindustries",
                 outcome="dead_lettered") == 0
    assert value(s, "gradesync_events_published_total", destination="lt") == 3
    assert value(s, "gradesync_events_published_total", destination="ti") == 2

    gauges = {name: {dict(k)["destination"]: v for k, v in series(s, name).items()} for name in (
        "gradesync_queue_depth", "gradesync_events_in_progress", "gradesync_scheduled_retries",
        "gradesync_dead_letters")}
    assert gauges["gradesync_queue_depth"] == {"ed": 0, "ls": 0, "lt": 0, "lti": 0, "ti": 0}
    assert gauges["gradesync_events_in_progress"] == {"ed": 0, "ls": 0, "lt": 1, "lti": 0, "ti": 0}
    assert gauges["gradesync_scheduled_retries"] == {"ed": 0, "ls": 0, "lt": 0, "lti": 0, "ti": 1}
    assert gauges["gradesync_dead_letters"] == {"ed": 0, "ls": 0, "lt": 1, "lti": 0, "ti": 0}
    age = value(s, "gradesync_dead_letter_oldest_age_seconds", destination="lt")
    assert before - dead_at <= age <= after - dead_at
    assert value(s, "gradesync_dead_letter_oldest_age_seconds", destination="ti") == 0

    # the vendor request histograms: one series per destination/vendor/route/status class
    counts = series(s, "gradesync_vendor_request_duration_seconds_count")
    by_class: dict[tuple[str, str], float] = {}
    for labels, n in counts.items():
        d = dict(labels)
        assert d["vendor"] == {"lt": "ltiaas", "ti": "thoughtindustries"}[d["destination"]] and d["route"]
        by_class[(d["destination"], d["status_class"])] = by_class.get((d["destination"], d["status_class"]), 0) + n
    assert by_class[("lt", "4xx")] == 1
    assert by_class[("ti", "5xx")] == 2
    assert by_class[("lt", "2xx")] >= 1
    buckets = series(s, "gradesync_vendor_request_duration_seconds_bucket")
    for labels, count in counts.items():
        les = {dict(k)["le"]: v for k, v in buckets.items() if k - {("le", dict(k)["le"])} == labels}
        assert list(les) == [repr(float(b)) for b in BUCKETS] + ["+Inf"]
        values = list(les.values())
        assert values == sorted(values) and les["+Inf"] == count
        assert s[("gradesync_vendor_request_duration_seconds_sum", labels)] > 0
    assert "# TYPE gradesync_vendor_request_duration_seconds histogram" in text
    assert "# TYPE gradesync_events_processed_total counter" in text

    # the slow delivery finishes: in progress goes back to 0, succeeded goes up
    assert cluster.wait_for([slow]) == {slow: "succeeded"}
    _, s = scrape(server.url)
    assert value(s, "gradesync_events_in_progress", destination="lt") == 0
    assert value(s, "gradesync_events_processed_total", destination="lt", vendor="ltiaas", outcome="succeeded") == 2

    # OpenMetrics when the scraper asks for it
    om = httpx.get(f"{server.url}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in parse_openmetrics(om.text)}
    assert {"gradesync_events_processed", "gradesync_dead_letters"} <= names


def test_metrics_without_redis_say_so(cluster: Cluster) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN), "redis_url": dead})
    server = ServerThread(create_app(settings)).start()
    try:
        _, s = scrape(server.url)
    finally:
        server.stop()
    assert value(s, "gradesync_redis_up") == 0
    assert not series(s, "gradesync_dead_letters")


def test_no_secret_in_any_page_or_api_answer(local: Cluster, vendors: dict[str, SandboxClient],
                                             local_server: ServerThread) -> None:
    local.start_local()
    vendors["ltiaas"].fault(status=401, times=1, path="/scores")
    [dead] = local.publisher.publish_many([lt_event("s-1")])
    [ok] = local.publisher.publish_many([ti_event()])
    local.wait_for([dead, ok])
    assert local.state(dead) == "dead_lettered"

    api = httpx.Client(base_url=local_server.url, headers=AUTH, timeout=30)
    ui = httpx.Client(base_url=local_server.url, timeout=30)
    try:
        bodies: dict[str, str] = {}
        for path in ("/metrics", "/healthz", "/openapi.json", "/v1/overview", "/v1/dead-letters", "/v1/audit",
                     f"/v1/dead-letters/{dead}", f"/v1/events/{dead}", f"/v1/events/{ok}", "/login"):
            r = api.get(path)
            assert r.status_code == 200, (path, r.text)
            bodies[path] = r.text
        wrong = ui.post("/login", data={"token": "not-it"})
        bodies["login failed"] = wrong.text
        login = ui.post("/login", data={"token": TOKEN})
        assert login.status_code == 303
        page = ui.get("/")
        bodies["/"] = page.text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert csrf
        for path in ("/ui/api/overview", "/ui/api/dead-letters", f"/ui/api/dead-letters/{dead}", "/ui/api/audit",
                     "/static/dashboard.js", "/static/dashboard.css"):
            r = ui.get(path)
            assert r.status_code == 200, path
            bodies[path] = r.text
        dry = ui.post("/ui/api/dead-letters/requeue", json={"all": True, "dry_run": True},
                      headers={"X-CSRF-Token": csrf.group(1)})
        assert dry.status_code == 200
        bodies["dry run"] = dry.text
        bodies["published"] = api.post("/v1/events", json=lt_event("s-2")).text
        bodies["invalid"] = api.post("/v1/events", json=[{**lt_event("s-3"), "score_given": -1}]).text
    finally:
        api.close()
        ui.close()

    assert "**********" in bodies[f"/v1/dead-letters/{dead}"]  # the service key, masked
    secrets = [*SECRETS.values(), TOKEN, SERVICE_KEY]
    for where, text in bodies.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in {where}"


def test_metrics_of_many_destinations_show_only_the_active_ones(local: Cluster,
                                                                 vendors: dict[str, SandboxClient]) -> None:
    """Above ``metrics_all_destinations_up_to`` destinations (thousands of tenants), per-destination series
    exist only for those with a recent delivery attempt or something waiting: a scrape stays bounded by the
    active destinations. Here the bound is 2 of the cluster's 5 destinations."""
    settings = local.settings.model_copy(update={"api_token": SecretStr(TOKEN), "metrics_all_destinations_up_to": 2})
    server = ServerThread(create_app(settings, ctx=OpsContext(settings, dispatcher=local.memory))).start()
    try:
        _, idle = scrape(server.url)
        assert series(idle, "gradesync_events_processed_total") == {}
        assert series(idle, "gradesync_destination_state") == {}  # all closed, nothing parked: no series
        local.start_local(concurrency=2)
        ids = local.publisher.publish_many([lt_event("a-1"), lt_event("a-2")])
        assert set(local.wait_for(ids).values()) == {"succeeded"}
        _, s = scrape(server.url)
        shown = {dict(k)["destination"] for k in series(s, "gradesync_events_processed_total")}
        assert shown == {"lt"}
        assert value(s, "gradesync_events_processed_total", destination="lt", vendor="ltiaas",
                     outcome="succeeded") == 2
        assert {dict(k)["destination"] for k in series(s, "gradesync_destination_state")} == {"lt"}
        local.store.redis.hset(local.store.keys.flow("ed"), mapping={"paused": "1"})  # an idle but paused one
        _, s = scrape(server.url)
        assert {dict(k)["destination"] for k in series(s, "gradesync_destination_state")} == {"ed", "lt"}
    finally:
        server.stop()
