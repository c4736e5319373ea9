"""Audits over the ops HTTP app (real uvicorn, real Redis, the sandboxes): ``POST /v1/audits`` runs in the
background, ``GET /v1/audits/{id}`` shows progress, counts and cells; the metric
``gradesync_audit_cells``; a resync through ``POST /v1/audits/{id}/resync``; an audit left unfinished
by a dead process is resumed when the server starts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from sandbox import DEMO_CREDENTIALS
from sandbox.base import Running
from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster
from tests.integration.test_http_api import Ops, lt_event, ops_settings
from worker.adapters.ltiaas import score_path
from worker.audit.jobs import AuditJobs, AuditRequest
from worker.events import GradeEvent
from worker.ops.api import create_app
from worker.ops.overview import OpsContext
from worker.ops.serve import ServerThread

pytestmark = pytest.mark.integration

LT = DEMO_CREDENTIALS["ltiaas"]
LINE_ITEM = "https://lms.example/api/lti/courses/1/line_items/1"


@pytest.fixture
def audit_ops(local: Cluster) -> Iterator[Ops]:
    settings = ops_settings(local, audit_unlimited_rate=6000.0)
    ctx = OpsContext(settings, dispatcher=local.memory)
    o = Ops(ServerThread(create_app(settings, ctx=ctx)).start(), settings)
    yield o
    o.close()


def wait_done(ops: Ops, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = ops.http.get(f"/v1/audits/{job_id}").json()
        if body["state"] not in ("pending", "running"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"audit not finished in {timeout}s: {body}")


def clear(sandbox: dict[str, Running], event: GradeEvent) -> None:
    body = {"userId": event.learner_id, "activityProgress": "Completed", "gradingProgress": "FullyGraded",
            "timestamp": (event.occurred_at + timedelta(milliseconds=5)).isoformat()}
    auth = {"Authorization": f"SERVICE-AUTH-V1 {LT['api_key']}:{LT['service_key']}"}
    assert httpx.post(sandbox["ltiaas"].url + score_path(LINE_ITEM), json=body, headers=auth).status_code == 204


def test_audit_over_http_metric_and_resync(local: Cluster, audit_ops: Ops, sandbox: dict[str, Running],
                                           vendors: dict[str, SandboxClient]) -> None:
    local.start_local(concurrency=2)
    ids = local.publisher.publish_many([lt_event(f"h{i}", line_item=LINE_ITEM) for i in range(3)])
    assert set(local.wait_for(ids).values()) == {"succeeded"}
    rec = local.store.ledger.load(ids[2])
    assert rec is not None
    clear(sandbox, GradeEvent.from_wire(rec.wire, vendors=local.settings.vendors()))

    assert audit_ops.anon.post("/v1/audits", json={}).status_code == 401
    assert audit_ops.http.post("/v1/audits", json={"destinations": ["nope"]}).status_code == 404
    assert audit_ops.http.post("/v1/audits", json={"resync": ["match"]}).status_code == 422
    started = audit_ops.http.post("/v1/audits", json={"destinations": ["lt"], "since": "1h"})
    assert started.status_code == 202, started.text
    job = wait_done(audit_ops, started.json()["id"])
    assert job["state"] == "done" and job["total"] == job["done"] == 3
    assert job["summary"] == {"match": 2, "drifted": 0, "missing": 1, "unreadable": 0, "error": 0}
    missing = audit_ops.http.get(f"/v1/audits/{job['id']}", params={"verdict": "missing"}).json()["cells"]
    assert [c["event_id"] for c in missing] == [ids[2]]
    assert missing[0]["target"]["service_key"] == "**********"

    metrics = audit_ops.http.get("/metrics").text
    assert 'gradesync_audit_cells{destination="lt",verdict="missing"} 1.0' in metrics
    assert 'gradesync_audit_cells{destination="lt",verdict="match"} 2.0' in metrics
    listed = audit_ops.http.get("/v1/audits").json()
    assert listed["last"]["lt"]["id"] == job["id"]

    report = audit_ops.http.post(f"/v1/audits/{job['id']}/resync", json={"verdicts": ["missing"]}).json()
    assert list(report["republished"]) == [ids[2]]
    (new_id,) = report["republished"].values()
    assert local.wait_for([new_id]) == {new_id: "succeeded"}
    audit_log = audit_ops.http.get("/v1/audit").json()
    assert any(e.get("action") == "resync" and e.get("actor") == "api" for e in audit_log["items"])
    assert any(e.get("action") == "audit" and e.get("actor") == "api" and e["filters"].get("audit") == job["id"]
               for e in audit_log["items"])  # starting an audit is an operator action too


def test_the_server_resumes_an_unfinished_audit(local: Cluster, sandbox: dict[str, Running],
                                                vendors: dict[str, SandboxClient]) -> None:
    local.start_local(concurrency=2)
    ids = local.publisher.publish_many([lt_event(f"r{i}", line_item=LINE_ITEM) for i in range(4)])
    assert set(local.wait_for(ids).values()) == {"succeeded"}
    jobs = AuditJobs(local.store.redis, local.store.keys)
    job_id = jobs.create(AuditRequest(["lt"], 0.0, "test"))
    jobs.set_fields(job_id, state="running")  # its process died before reading anything
    settings = ops_settings(local, audit_unlimited_rate=6000.0)
    ops = Ops(ServerThread(create_app(settings, ctx=OpsContext(settings, dispatcher=local.memory))).start(),
              settings)
    try:
        job = wait_done(ops, job_id)
        assert job["state"] == "done" and job["summary"]["match"] == 4
    finally:
        ops.close()


def test_a_worker_process_resumes_an_unfinished_audit(cluster: Cluster) -> None:
    """An audit whose process died (a stopped CLI, a restarted worker) is carried on by a worker process:
    every worker looks for audits whose lease lapsed, so an audit survives a worker restart."""
    cluster.start_worker(concurrency=2)
    ids = cluster.publisher.publish_many([lt_event(f"w{i}", line_item=LINE_ITEM) for i in range(3)])
    assert set(cluster.wait_for(ids).values()) == {"succeeded"}
    jobs = AuditJobs(cluster.store.redis, cluster.store.keys)
    job_id = jobs.create(AuditRequest(["lt"], 0.0, "test"))
    jobs.set_fields(job_id, state="running")  # its process died before reading anything
    deadline = time.monotonic() + 180  # the workers look every 30 s
    view = jobs.get(job_id)
    while time.monotonic() < deadline and (view is None or view.state != "done"):
        time.sleep(0.5)
        view = jobs.get(job_id)
    assert view is not None and view.state == "done", view
    assert view.counts["lt"]["match"] == 3
