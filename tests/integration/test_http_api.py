"""The ops HTTP app over real HTTP (uvicorn on a free port, or `python -m worker.ops.serve` as a process),
against a real Redis, the vendor sandboxes and workers: in this process on the in-memory dispatcher
(``local`` / ``local_ops``) where the test is about the API, worker processes where it is about a process."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sandbox.control import SandboxClient
from sandbox.localredis import free_port
from tests.integration.conftest import Cluster
from worker.keys import Keys
from worker.ops.api import create_app
from worker.ops.overview import OpsContext
from worker.ops.serve import ServerThread
from worker.settings import ConfigError, Settings

pytestmark = pytest.mark.integration

TOKEN = "it-ops-token-7f3c9a1e5b2d4c6e8a0f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNKNOWN_LINE_ITEM = "https://lms.example/api/lti/courses/1/line_items/unknown"


def lt_event(learner: str = "learner-1", line_item: str = "https://lms.example/api/lti/courses/1/line_items/1",
             **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "destination": "lt",
        "learner_id": learner,
        "score_given": 7,
        "score_maximum": 10,
        "target": {"line_item_id": line_item, "service_key": "demo-service-key"},
    }
    e.update(over)
    return e


def ti_event(**over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "destination": "ti",
        "learner_id": str(uuid.uuid4()),
        "score_given": 45,
        "score_maximum": 50,
        "target": {"assignment_id": str(uuid.uuid4())},
    }
    e.update(over)
    return e


def ops_settings(cluster: Cluster, **over: Any) -> Settings:
    update: dict[str, Any] = {"api_token": SecretStr(TOKEN), **over}
    return cluster.settings.model_copy(update=update)


class Ops:
    def __init__(self, server: ServerThread, settings: Settings) -> None:
        self.server = server
        self.settings = settings
        self.http = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
        self.anon = httpx.Client(base_url=server.url, timeout=30)

    def close(self) -> None:
        self.http.close()
        self.anon.close()
        self.server.stop()


@pytest.fixture
def ops(cluster: Cluster) -> Iterator[Ops]:
    settings = ops_settings(cluster, max_body_bytes=4096, max_batch=5, auth_fail_limit=1000)
    o = Ops(ServerThread(create_app(settings)).start(), settings)
    yield o
    o.close()


@pytest.fixture
def local_ops(local: Cluster) -> Iterator[Ops]:
    """The ops app over the in-process pipeline: it publishes and requeues through ``local``'s dispatcher."""
    settings = ops_settings(local, max_body_bytes=4096, max_batch=5, auth_fail_limit=1000)
    ctx = OpsContext(settings, dispatcher=local.memory)
    o = Ops(ServerThread(create_app(settings, ctx=ctx)).start(), settings)
    yield o
    o.close()


def event_keys(cluster: Cluster) -> list[bytes]:
    return list(cluster.store.redis.scan_iter(match=f"{cluster.settings.key_prefix}:event:*"))


# -- ingest ----------------------------------------------------------------------------------------------
def test_publish_answers_202_with_ids_and_the_ledger_view_masks_secrets(local: Cluster, local_ops: Ops) -> None:
    one = local_ops.http.post("/v1/events", json=lt_event())
    assert one.status_code == 202, one.text
    [first] = one.json()["event_ids"]
    many = local_ops.http.post("/v1/events", json=[lt_event(learner="learner-2"), ti_event()])
    assert many.status_code == 202, many.text
    ids = many.json()["event_ids"]
    assert len(ids) == 2 and first not in ids
    assert all(local.state(eid) == "queued" for eid in [first, *ids])

    local.start_local()
    assert local.wait_for([first, *ids]) == {eid: "succeeded" for eid in [first, *ids]}
    view = local_ops.http.get(f"/v1/events/{first}")
    assert view.status_code == 200
    body = view.json()
    assert body["state"] == "succeeded" and body["destination"] == "lt" and body["attempts"] == 1
    assert [h["outcome"] for h in body["history"]] == ["succeeded"]
    assert body["event"]["target"]["service_key"] == "**********"
    assert "demo-service-key" not in view.text
    assert local_ops.http.get(f"/v1/events/{first.upper()}").json()["event_id"] == first  # ids are UUIDs

    assert local_ops.http.get(f"/v1/events/{uuid.uuid4()}").status_code == 404
    assert local_ops.http.get("/v1/events/not-a-uuid:attempts").status_code == 404


def test_an_invalid_batch_is_422_per_item_and_field_and_nothing_is_published(cluster: Cluster, ops: Ops) -> None:
    bad_url = lt_event(line_item="ftp://nowhere")
    no_learner = ti_event()
    del no_learner["learner_id"]
    no_learner["score_given"] = -1
    response = ops.http.post("/v1/events", json=[lt_event(), bad_url, no_learner, ti_event(destination="nope")])
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    by_item = {(e["index"], e["field"]) for e in errors}
    assert (1, "target.line_item_id") in by_item
    assert (2, "learner_id") in by_item
    assert (2, "score_given") in by_item
    assert (3, "destination") in by_item
    assert not any(e["index"] == 0 for e in errors)
    assert all(e["message"] for e in errors)
    assert "http" in next(e["message"] for e in errors if e["field"] == "target.line_item_id")

    single = ops.http.post("/v1/events", json=lt_event(score_given=5, score_maximum=None))
    assert single.status_code == 422
    assert single.json()["errors"][0]["index"] == 0

    assert ops.http.post("/v1/events", content=b"{not json", headers={"Content-Type": "application/json"}
                         ).status_code == 400
    assert ops.http.post("/v1/events", json=42).status_code == 400
    assert ops.http.post("/v1/events", json=[]).status_code == 422
    # nothing was published: no ledger record, no published counter, no broker message
    assert event_keys(cluster) == []
    assert cluster.store.stats.published_totals() == {}
    assert cluster.store.redis.llen(Keys.queue()) == 0


def test_body_and_batch_limits_answer_413_before_parsing(cluster: Cluster, ops: Ops) -> None:
    big = lt_event(comment="x" * 5000)
    response = ops.http.post("/v1/events", json=big)
    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "(body)"

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield b'{"destination": "lt", "comment": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    chunked = ops.http.post("/v1/events", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413

    too_many = ops.http.post("/v1/events", json=[ti_event() for _ in range(6)])
    assert too_many.status_code == 413
    assert "at most 5" in too_many.json()["errors"][0]["message"]
    assert ops.http.post("/v1/events", json=[ti_event() for _ in range(5)]).status_code == 202
    assert len(event_keys(cluster)) == 5


def test_publish_error_is_503(cluster: Cluster) -> None:
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    settings = ops_settings(cluster, broker_url=dead_broker)
    server = ServerThread(create_app(settings)).start()
    try:
        response = httpx.post(f"{server.url}/v1/events", json=ti_event(), headers=AUTH, timeout=120)
        assert response.status_code == 503, response.text
        assert "broker" in response.json()["detail"]
        health = httpx.get(f"{server.url}/healthz", timeout=30)
        assert health.status_code == 503
        assert health.json()["failed"] == ["broker"]
        assert health.json()["checks"] == {"redis": "ok", "broker": "failed"}
    finally:
        server.stop()


# -- authentication --------------------------------------------------------------------------------------
V1_ROUTES = [
    ("POST", "/v1/events"),
    ("GET", "/v1/events/{event_id}"),
    ("GET", "/v1/overview"),
    ("GET", "/v1/dead-letters"),
    ("GET", "/v1/dead-letters/{event_id}"),
    ("POST", "/v1/dead-letters/requeue"),
    ("POST", "/v1/dead-letters/purge"),
    ("DELETE", "/v1/dead-letters/{event_id}"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/destinations"),
    ("GET", "/v1/destinations/{name}"),
    ("POST", "/v1/destinations/{name}/pause"),
    ("POST", "/v1/destinations/{name}/resume"),
    ("PUT", "/v1/destinations/{name}"),
    ("DELETE", "/v1/destinations/{name}"),
    ("GET", "/v1/destinations/{name}/config"),
    ("POST", "/v1/audits"),
    ("GET", "/v1/audits"),
    ("GET", "/v1/audits/{job_id}"),
    ("POST", "/v1/audits/{job_id}/resync"),
]


def test_every_v1_route_refuses_a_missing_wrong_or_non_bearer_credential(cluster: Cluster, ops: Ops) -> None:
    spec = ops.anon.get("/openapi.json").json()
    documented = {(m.upper(), p) for p, item in spec["paths"].items() if p.startswith("/v1") for m in item}
    assert documented == set(V1_ROUTES), "a /v1 route is missing from this test"
    assert "GradeEvent" in spec["components"]["schemas"]

    basic = base64.b64encode(f"api:{TOKEN}".encode()).decode()
    refusals = [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {basic}"},
                {"Authorization": f"Token {TOKEN}"}, {"Authorization": TOKEN},
                {"Authorization": f"Bearer {TOKEN}x"}]
    eid = str(uuid.uuid4())
    for method, path in V1_ROUTES:
        url = path.replace("{event_id}", eid).replace("{name}", "ti")
        body = {"event_ids": [eid]} if method == "POST" else None
        for headers in refusals:
            r = ops.anon.request(method, url, headers=headers, json=body)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        ok = ops.http.request(method, url, json=body)
        assert ok.status_code != 401, (method, path, ok.text)
    assert event_keys(cluster) == []


def _serve(cluster: Cluster, port: int, **env: str) -> subprocess.Popen[bytes]:
    full = {k: v for k, v in cluster.env.items() if k not in ("GRADESYNC_API_TOKEN", "GRADESYNC_INSECURE_DEV")}
    full.update(env)
    return subprocess.Popen([sys.executable, "-m", "worker.ops.serve", "--port", str(port)], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"server exited {proc.returncode}: {err}")
        try:
            return httpx.get(f"{url}/healthz", timeout=5)
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("server did not answer")


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
    _out, err = proc.communicate(timeout=30)
    return err.decode(errors="replace")


def test_the_server_refuses_to_start_without_a_token(cluster: Cluster) -> None:
    with pytest.raises(ConfigError, match="GRADESYNC_API_TOKEN"):
        create_app(cluster.settings)
    proc = _serve(cluster, free_port())
    try:
        proc.wait(timeout=60)
    finally:
        err = _stop(proc)
    assert proc.returncode != 0
    assert "GRADESYNC_API_TOKEN is not set" in err


def test_insecure_dev_starts_without_a_token_and_warns(cluster: Cluster) -> None:
    port = free_port()
    proc = _serve(cluster, port, GRADESYNC_INSECURE_DEV="1")
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert health.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/overview", timeout=10).status_code == 200
    finally:
        err = _stop(proc)
    assert "INSECURE" in err


def test_serve_process_with_a_token(cluster: Cluster) -> None:
    port = free_port()
    proc = _serve(cluster, port, GRADESYNC_API_TOKEN=TOKEN)
    url = f"http://127.0.0.1:{port}"
    try:
        health = _wait_healthy(url, proc)
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "checks": {"redis": "ok", "broker": "ok"}, "failed": [],
                                 "errors": {}}
        assert httpx.get(f"{url}/v1/overview", timeout=10).status_code == 401
        overview = httpx.get(f"{url}/v1/overview", headers=AUTH, timeout=10)
        assert overview.status_code == 200
        assert [d["destination"] for d in overview.json()["destinations"]] == ["ed", "ls", "lt", "lti", "ti"]
        published = httpx.post(f"{url}/v1/events", json=ti_event(), headers=AUTH, timeout=10)
        assert published.status_code == 202
    finally:
        err = _stop(proc)
    assert TOKEN not in err


def test_healthz_names_the_failed_dependency(cluster: Cluster) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = ops_settings(cluster, redis_url=dead, broker_url=cluster.settings.redis_url)
    server = ServerThread(create_app(settings)).start()
    try:
        r = httpx.get(f"{server.url}/healthz", timeout=30)
    finally:
        server.stop()
    assert r.status_code == 503
    assert r.json()["failed"] == ["redis"]
    assert r.json()["checks"]["broker"] == "ok"


# -- dead letters ------------------------------------------------------------------------------------------
def make_dead_letters(cluster: Cluster, vendors: dict[str, SandboxClient]) -> dict[str, str]:
    """Four dead letters: lt 400 (learner a), lt 400 (learner b), lt 404 unknown line item, ti 400."""
    vendors["ltiaas"].fault(status=400, times=2, path="/scores")
    vendors["thoughtindustries"].fault(status=400, times=1, method="POST")
    ids = cluster.publisher.publish_many([lt_event(learner="learner-a"), lt_event(learner="learner-b")])
    cluster.wait_for(ids, {"dead_lettered"})  # the two faults are used up before the next event
    ids += cluster.publisher.publish_many([lt_event(learner="learner-c", line_item=UNKNOWN_LINE_ITEM)])
    ids += cluster.publisher.publish_many([ti_event()])
    cluster.wait_for(ids, {"dead_lettered"})
    return dict(zip(["a", "b", "unknown", "ti"], ids, strict=True))


def test_dead_letter_api(local: Cluster, vendors: dict[str, SandboxClient], local_ops: Ops) -> None:
    local.start_local()
    dl = make_dead_letters(local, vendors)
    local.stop_workers()

    listed = local_ops.http.get("/v1/dead-letters").json()
    assert listed["total"] == 4
    assert {i["event_id"] for i in listed["items"]} == set(dl.values())
    item = next(i for i in listed["items"] if i["event_id"] == dl["a"])
    assert item["destination"] == "lt" and item["vendor"] == "ltiaas" and item["attempts"] == 1
    assert item["learner_id"] == "learner-a" and item["dead_lettered_at"].endswith("Z")

    # filters
    def ids_for(**params: Any) -> set[str]:
        r = local_ops.http.get("/v1/dead-letters", params=params)
        assert r.status_code == 200, r.text
        return {i["event_id"] for i in r.json()["items"]}

    assert ids_for(destination="ti") == {dl["ti"]}
    assert ids_for(vendor="ltiaas") == {dl["a"], dl["b"], dl["unknown"]}
    assert ids_for(learner="learner-b") == {dl["b"]}
    assert ids_for(error="404") == {dl["unknown"]}
    assert ids_for(since="2000-01-01T00:00:00Z") == set(dl.values())
    assert ids_for(since=str(time.time() + 3600)) == set()
    assert local_ops.http.get("/v1/dead-letters", params={"since": "yesterday"}).status_code == 422

    # pagination: newest first, disjoint pages
    pages = [local_ops.http.get("/v1/dead-letters", params={"limit": 3, "offset": off}).json() for off in (0, 3)]
    assert [len(p["items"]) for p in pages] == [3, 1] and all(p["total"] == 4 for p in pages)
    seen = [i["event_id"] for p in pages for i in p["items"]]
    assert sorted(seen) == sorted(dl.values())
    dead_ats = [i["dead_at"] for p in pages for i in p["items"]]
    assert dead_ats == sorted(dead_ats, reverse=True)

    # one entry: attempts, errors, no secret
    detail = local_ops.http.get(f"/v1/dead-letters/{dl['unknown']}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["state"] == "dead_lettered" and body["attempts"] == 1 and len(body["history"]) == 1
    assert body["final_error"]["status"] == 404
    assert "demo-service-key" not in detail.text
    assert local_ops.http.get(f"/v1/dead-letters/{uuid.uuid4()}").status_code == 404

    # requeue: a dry run changes nothing
    dry = local_ops.http.post("/v1/dead-letters/requeue", json={"event_ids": [dl["a"]], "dry_run": True}).json()
    assert dry["matched"] == 1 and dry["done"] == 0 and dry["dry_run"] is True
    assert local.state(dl["a"]) == "dead_lettered"
    # bad selections
    bad_selections: list[dict[str, Any]] = [
        {}, {"filter": {}}, {"event_ids": []}, {"event_ids": [dl["a"]], "all": True}, {"event_ids": ["nope"]},
        {"all": True, "rate": 0}, {"filter": {"since": "soon"}}]
    for bad in bad_selections:
        assert local_ops.http.post("/v1/dead-letters/requeue", json=bad).status_code == 422, bad

    # requeue by filter (learners a and b: their faults are used up), then a worker delivers them
    real = local_ops.http.post("/v1/dead-letters/requeue",
                         json={"filter": {"destination": "lt", "error": "400"}, "rate": 100}).json()
    assert real["matched"] == 2 and real["done"] == 2 and sorted(real["event_ids"]) == sorted([dl["a"], dl["b"]])
    assert local.state(dl["a"]) == "queued"
    assert local_ops.http.get("/v1/dead-letters").json()["total"] == 2
    skipped = local_ops.http.post("/v1/dead-letters/requeue", json={"event_ids": [dl["a"], str(uuid.uuid4())]}).json()
    assert skipped["done"] == 0 and len(skipped["skipped"]) == 2
    local.start_local()
    assert local.wait_for([dl["a"], dl["b"]]) == {dl["a"]: "succeeded", dl["b"]: "succeeded"}
    assert local_ops.http.get(f"/v1/events/{dl['a']}").json()["requeues"] == 1

    # delete
    gone = local_ops.http.delete(f"/v1/dead-letters/{dl['ti']}")
    assert gone.status_code == 200 and gone.json()["done"] == 1
    assert local.store.ledger.load(dl["ti"]) is None
    assert local_ops.http.delete(f"/v1/dead-letters/{dl['ti']}").status_code == 404
    assert local_ops.http.delete(f"/v1/dead-letters/{dl['a']}").status_code == 404  # delivered, not a dead letter
    purge_dry = local_ops.http.post("/v1/dead-letters/purge", json={"all": True, "dry_run": True}).json()
    assert purge_dry["matched"] == 1 and purge_dry["event_ids"] == [dl["unknown"]]
    assert local.state(dl["unknown"]) == "dead_lettered"

    # audit: every action, actor api
    audit = local_ops.http.get("/v1/audit").json()["items"]
    assert all(a["actor"] == "api" for a in audit)
    assert [(a["action"], a["dry_run"], a["count"]) for a in audit] == [
        ("purge", True, 0), ("purge", False, 1), ("requeue", False, 0), ("requeue", False, 2),
        ("requeue", True, 0)]
    assert audit[3]["filters"] == {"destination": "lt", "error": "400"} and audit[3]["selection"] == "filter"
    assert local_ops.http.get("/v1/audit", params={"limit": 2}).json()["items"] == audit[:2]


# -- dashboard session and CSRF over plain HTTP ------------------------------------------------------------
def test_dashboard_login_session_and_csrf(local: Cluster, vendors: dict[str, SandboxClient], local_ops: Ops) -> None:
    local.start_local()
    vendors["thoughtindustries"].fault(status=400, times=1, method="POST")
    [eid] = local.publisher.publish_many([ti_event()])
    local.wait_for([eid], {"dead_lettered"})
    browser = httpx.Client(base_url=local_ops.server.url, timeout=30)
    try:
        first = browser.get("/")
        assert first.status_code == 303 and first.headers["location"] == "/login"
        assert browser.get("/ui/api/overview").status_code == 401
        assert browser.get("/ui/api/overview", headers=AUTH).status_code == 401  # the UI API wants a session

        wrong = browser.post("/login", data={"token": "guess"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "gradesync_session" not in wrong.headers.get("set-cookie", "")
        assert browser.post("/login", data={"token": TOKEN},
                            headers={"Origin": "https://evil.example"}).status_code == 403

        login = browser.post("/login", data={"token": TOKEN})
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("gradesync_session=")
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert TOKEN not in cookie

        page = browser.get("/")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert match
        csrf = match.group(1)
        assert TOKEN not in page.text
        assert browser.get("/ui/api/overview").status_code == 200

        requeue = {"event_ids": [eid]}
        assert browser.post("/ui/api/dead-letters/requeue", json=requeue).status_code == 403
        assert browser.post("/ui/api/dead-letters/requeue", json=requeue,
                            headers={"X-CSRF-Token": "forged"}).status_code == 403
        assert browser.post("/ui/api/dead-letters/requeue", json=requeue,
                            headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}).status_code == 403
        assert local.state(eid) == "dead_lettered"
        purge = browser.post("/ui/api/dead-letters/purge", json={"event_ids": [eid]}, headers={"X-CSRF-Token": csrf})
        assert purge.status_code == 422 and "confirm" in purge.text
        assert local.state(eid) == "dead_lettered"

        tampered = browser.cookies["gradesync_session"][:-2] + "AA"
        forged = httpx.get(f"{local_ops.server.url}/ui/api/overview", cookies={"gradesync_session": tampered})
        assert forged.status_code == 401

        done = browser.post("/ui/api/dead-letters/requeue", json=requeue,
                            headers={"X-CSRF-Token": csrf, "Origin": local_ops.server.url})
        assert done.status_code == 200 and done.json()["done"] == 1
        assert local.wait_for([eid]) == {eid: "succeeded"}
        [entry] = local_ops.http.get("/v1/audit").json()["items"]
        assert entry["actor"] == "dashboard" and entry["action"] == "requeue" and entry["count"] == 1

        assert browser.post("/logout", data={"csrf_token": "forged"}).status_code == 403
        out = browser.post("/logout", data={"csrf_token": csrf})
        assert out.status_code == 303
        assert browser.get("/ui/api/overview").status_code == 401
    finally:
        browser.close()


def test_a_session_from_an_old_token_is_refused_after_the_token_changes(cluster: Cluster) -> None:
    settings_a = ops_settings(cluster)
    server_a = ServerThread(create_app(settings_a)).start()
    try:
        login = httpx.post(f"{server_a.url}/login", data={"token": TOKEN})
        session = login.cookies["gradesync_session"]
        assert httpx.get(f"{server_a.url}/ui/api/overview", cookies={"gradesync_session": session}).status_code == 200
    finally:
        server_a.stop()
    settings_b = cluster.settings.model_copy(update={"api_token": SecretStr("another-token-1234567890abcdefghijkl")})
    server_b = ServerThread(create_app(settings_b)).start()
    try:
        r = httpx.get(f"{server_b.url}/ui/api/overview", cookies={"gradesync_session": session})
        assert r.status_code == 401
    finally:
        server_b.stop()


def test_openapi_is_public_and_documents_the_ingest_body(ops: Ops) -> None:
    spec = ops.anon.get("/openapi.json")
    assert spec.status_code == 200
    post = spec.json()["paths"]["/v1/events"]["post"]
    assert set(post["responses"]) >= {"202", "413", "422", "503"}
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["oneOf"][0]["$ref"] == "#/components/schemas/GradeEvent"
    assert "bearer" in str(spec.json()["components"]["securitySchemes"]).lower()
