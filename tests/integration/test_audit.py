"""The audit against the vendor simulators over real HTTP and a real Redis: deliver, change one grade and
clear others behind gradesync's back through the vendors' own APIs (newer timestamps), audit, then
``resync missing``: the cleared cells come back, the teacher's override stays."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest

from sandbox import DEMO_CREDENTIALS
from sandbox.base import Running
from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster
from worker.adapters import build_adapter
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.learningstudio import GradebookItem, LearningStudioAdapter, grade_path
from worker.adapters.ltiaas import score_path
from worker.audit.engine import AuditRunner
from worker.audit.resync import resync
from worker.events import GradeEvent
from worker.readback import build_reader
from worker.readback.base import Found, Reader

pytestmark = pytest.mark.integration

LINE_ITEM = "https://lms.example/api/lti/courses/1/line_items/1"
LT = DEMO_CREDENTIALS["ltiaas"]
TI_ASSIGNMENT = "123e4567-e89b-12d3-a456-426614174000"
TI_LEARNER = "223e4567-e89b-12d3-a456-426614174000"


def events(lti_url: str) -> list[dict[str, Any]]:
    lt = {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]}
    out: list[dict[str, Any]] = [
        {"destination": "lt", "learner_id": who, "score_given": 80 + i, "score_maximum": 100, "comment": f"c{i}",
         "target": lt} for i, who in enumerate(("lt-a", "lt-b", "lt-c"))]
    out += [{"destination": "ed", "learner_id": who, "score_given": 20 + i, "score_maximum": 25,
             "target": {"class_id": "class-1", "assignment_id": "asg-1"}} for i, who in enumerate(("ed-1", "ed-2"))]
    out += [{"destination": "ls", "learner_id": who, "score_given": 7, "score_maximum": 10,
             "target": {"course_id": "c1", "item_id": "i1"}} for who in ("1001", "1002")]
    out.append({"destination": "ti", "learner_id": TI_LEARNER, "score_given": 5, "score_maximum": 10,
                "target": {"assignment_id": TI_ASSIGNMENT}})
    out.append({"destination": "lti", "learner_id": "lti-1", "score_given": 9, "score_maximum": 10,
                "target": {"lineitems_url": f"{lti_url}/api/lti/courses/5/line_items", "resource_link_id": "rl-1",
                           "label": "Quiz"}})
    return out


def deliver(local: Cluster, items: list[dict[str, Any]]) -> dict[str, GradeEvent]:
    ids = local.publisher.publish_many(items)
    states = local.wait_for(ids)
    assert set(states.values()) == {"succeeded"}, states
    vendors = local.settings.vendors()
    loaded = {eid: local.store.ledger.load(eid) for eid in ids}
    return {eid: GradeEvent.from_wire(rec.wire, vendors=vendors) for eid, rec in loaded.items() if rec}


def behind_the_back(local: Cluster, sandbox: dict[str, Running], by_learner: dict[str, GradeEvent]) -> None:
    """A teacher overrides lt-b; lt-c is cleared (AGS score without scoreGiven); ed-2's grade is cleared;
    ls 1002's grade is deleted — each through the vendor's own API, with a newer timestamp where it has one."""
    auth = {"Authorization": f"SERVICE-AUTH-V1 {LT['api_key']}:{LT['service_key']}"}
    url = sandbox["ltiaas"].url + score_path(LINE_ITEM)
    for who, given in (("lt-b", 40), ("lt-c", None)):
        stamp = (by_learner[who].occurred_at + timedelta(milliseconds=10)).isoformat(timespec="milliseconds")
        body: dict[str, Any] = {"userId": who, "activityProgress": "Completed", "gradingProgress": "FullyGraded",
                                "timestamp": stamp, "comment": "c1"}
        if given is not None:
            body.update(scoreGiven=given, scoreMaximum=100)
        assert httpx.post(url, json=body, headers=auth).status_code == 204
    ed_token = DEMO_CREDENTIALS["edlink"]["integration_token"]
    patched = httpx.patch(f"{sandbox['edlink'].url}/api/v2/graph/classes/class-1/assignments/asg-1/submissions/ed-2",
                          json={"grade_points": None, "grade_comment": None},
                          headers={"Authorization": f"Bearer {ed_token}"})
    assert patched.status_code == 200
    ls_dest = local.settings.destinations()["ls"]
    ls = build_adapter(ls_dest, AdapterContext(http=make_client(ls_dest), cache=local.store.cache))
    assert isinstance(ls, LearningStudioAdapter)
    item, _ = ls._gradebook_item(by_learner["1002"].target)  # type: ignore[arg-type]
    assert isinstance(item, GradebookItem)
    gone = ls._exchange("DELETE", grade_path("1002", "c1", item.id), "ls.grade.delete")
    assert gone.status_code == 204
    ls.close()


def verdicts(runner: AuditRunner, job_id: str) -> dict[str, str]:
    return {str(c["learner_id"]): c["verdict"] for c in runner.jobs.results(job_id)}


def test_audit_finds_drift_and_missing_and_resync_restores_only_missing(
        local: Cluster, sandbox: dict[str, Running], vendors: dict[str, SandboxClient]) -> None:
    local.start_local(concurrency=4)
    delivered = deliver(local, events(sandbox["lti_ags"].url))
    by_learner = {e.learner_id: e for e in delivered.values()}
    behind_the_back(local, sandbox, by_learner)
    settings = local.settings.model_copy(update={"audit_unlimited_rate": 6000.0})
    runner = AuditRunner(settings, local.store)
    job_id = runner.create(None, 0.0, actor="test")
    view = runner.run(job_id)
    assert view is not None and view.state == "done" and view.total == view.done == 9
    assert verdicts(runner, job_id) == {
        "lt-a": "match", "lt-b": "drifted", "lt-c": "missing", "ed-1": "match", "ed-2": "missing",
        "1001": "match", "1002": "missing", TI_LEARNER: "unreadable", "lti-1": "match"}
    assert view.summary == {"match": 4, "drifted": 1, "missing": 3, "unreadable": 1, "error": 0}
    cells = {c["learner_id"]: c for c in runner.jobs.results(job_id)}
    assert cells["lt-b"]["found"]["score"] == 40 and cells["lt-b"]["delivered"]["score"] == 81
    assert cells["lt-a"]["target"]["service_key"] == "**********"  # secrets masked in results
    assert LT["service_key"] not in json.dumps(runner.jobs.results(job_id))
    assert runner.jobs.last_per_destination()["lt"].id == job_id
    # the audit never wrote to a gradebook
    assert not [r for r in vendors["ltiaas"].dump()["requests"] if r["method"] == "POST" and r["status"] == 204
                and json.loads(r["body"]).get("userId") == "lt-a" and r["t"] > view.created_at]

    report = resync(settings, local.store, local.publisher, job_id, ("missing",), actor="test")
    assert sorted(report.republished) == sorted(cells[w]["event_id"] for w in ("lt-c", "ed-2", "1002"))
    assert local.wait_for(list(report.republished.values())) == dict.fromkeys(report.republished.values(),
                                                                               "succeeded")
    history = local.store.ledger.history(cells["lt-c"]["event_id"])
    assert history[-1]["operator_action"] == "resync" and history[-1]["new_event_id"] == report.republished[
        cells["lt-c"]["event_id"]]
    assert any(json.loads(e.get("filters", "{}")).get("audit") == job_id for e in _audit_log(local))

    again = runner.create(None, 0.0, actor="test")
    runner.run(again)
    assert verdicts(runner, again) == {
        "lt-a": "match", "lt-b": "drifted", "lt-c": "match", "ed-1": "match", "ed-2": "match",
        "1001": "match", "1002": "match", TI_LEARNER: "unreadable", "lti-1": "match"}
    scores = {s["userId"]: s["scoreGiven"] for s in vendors["ltiaas"].dump()["state"]["scores"]}
    assert scores == {"lt-a": 80, "lt-b": 40, "lt-c": 82}  # the override stays, the cleared grade is back


def _audit_log(local: Cluster) -> list[dict[str, str]]:
    out = []
    for _, raw in local.store.redis.xrevrange(local.store.keys.audit, count=50):
        out.append({(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                    for k, v in raw.items()})
    return out


class StopAfter:
    """A reader that stops the job after ``n`` reads (a worker dying mid-audit)."""

    def __init__(self, inner: Reader, n: int, stop: threading.Event) -> None:
        self.inner, self.left, self.stop, self.vendor = inner, n, stop, inner.vendor

    def read_grade(self, event: GradeEvent) -> Found | None:
        self.left -= 1
        if self.left <= 0:
            self.stop.set()
        return self.inner.read_grade(event)

    def close(self) -> None:
        self.inner.close()


def test_an_interrupted_audit_resumes_from_its_checkpoint(
        local: Cluster, sandbox: dict[str, Running], vendors: dict[str, SandboxClient]) -> None:
    local.start_local(concurrency=4)
    lt = {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]}
    deliver(local, [{"destination": "lt", "learner_id": f"p{i}", "score_given": i, "score_maximum": 10,
                     "target": lt} for i in range(12)])
    settings = local.settings.model_copy(update={"audit_unlimited_rate": 6000.0})
    stop = threading.Event()
    first = AuditRunner(settings, local.store,
                        reader_factory=lambda d, ctx: StopAfter(build_reader(d, ctx), 5, stop))
    job_id = first.create(["lt"], 0.0, actor="test")
    view = first.run(job_id, stop=stop)
    assert view is not None and view.state == "running" and view.done == 5 and view.total == 12
    second = AuditRunner(settings, local.store)
    assert second.resume_unfinished() == [job_id]
    from worker.audit.engine import wait_finished
    final = wait_finished(second.jobs, job_id, timeout=60)
    assert final is not None and final.state == "done" and final.done == 12
    ids = [c["event_id"] for c in second.jobs.results(job_id)]
    assert len(ids) == len(set(ids)) == 12  # no cell read twice into the results, none skipped
    reads = [r for r in vendors["ltiaas"].dump()["requests"] if r["method"] == "GET"]
    assert len(reads) == 12


def test_an_audit_holds_while_the_destination_is_paused(
        local: Cluster, sandbox: dict[str, Running], vendors: dict[str, SandboxClient]) -> None:
    local.start_local(concurrency=2)
    lt = {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]}
    deliver(local, [{"destination": "lt", "learner_id": f"q{i}", "score_given": i, "score_maximum": 10,
                     "target": lt} for i in range(3)])
    from worker.audit.engine import wait_finished
    from worker.ops.flow_status import FlowStatus
    flow = FlowStatus(local.store.redis, local.store.keys, local.settings.destinations())
    flow.pause("lt", reason="maintenance", actor="test")
    settings = local.settings.model_copy(update={"audit_unlimited_rate": 6000.0})
    runner = AuditRunner(settings, local.store)
    job_id = runner.create(["lt"], 0.0, actor="test")
    runner.start(job_id)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = runner.jobs.get(job_id)
        if view is not None and view.holding.get("lt"):
            break
        time.sleep(0.05)
    assert view is not None and view.holding["lt"] == "the destination is paused" and view.done == 0
    assert not vendors["ltiaas"].requests(method="GET")  # no read while paused
    flow.resume("lt", actor="test")
    final = wait_finished(runner.jobs, job_id, timeout=60)
    assert final is not None and final.state == "done" and final.summary["match"] == 3


def test_reads_take_their_share_of_the_destinations_limit(local: Cluster) -> None:
    from worker.audit.pace import AuditPace
    from worker.flow.store import FlowStore
    dest = local.settings.destinations()["lt"].model_copy(update={"rate_limit_per_minute": 600.0, "burst": 10})
    now = time.time()
    pace = AuditPace(local.store, dest, share=0.2, unlimited_rate=120.0, clock=lambda: now)
    slots = [pace._own_slot(600.0 * 0.2, now) for _ in range(4)]
    assert [round(s - now, 3) for s in slots] == [0.0, 0.5, 1.0, 1.5]  # 20 % of 600/min: one read per 0.5 s
    flow = FlowStore(local.store.redis, local.store.keys)
    assert pace.turn()  # the first read: its own slot now, and a slot of the shared limiter
    tat = float(flow.raw("lt")["tat"])
    assert tat > now  # the deliveries' limiter counted the read
