"""The dashboard's grade audits in a real headless Chromium: the last audit per destination with its
counts and its drifted and missing cells, and a resync of the missing cells after a confirmation."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from playwright.sync_api import Browser, expect

from sandbox import DEMO_CREDENTIALS
from sandbox.base import Running
from sandbox.control import SandboxClient
from tests.e2e.test_dashboard_flow import WAIT_MS, login
from tests.integration.conftest import Cluster
from worker.adapters.ltiaas import score_path
from worker.audit.engine import AuditRunner
from worker.events import GradeEvent
from worker.ops.serve import ServerThread

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

LT = DEMO_CREDENTIALS["ltiaas"]
LINE_ITEM = "https://lms.example/api/lti/courses/3/line_items/3"


def test_last_audit_cells_and_resync_from_the_page(cluster: Cluster, vendors: dict[str, SandboxClient],
                                                   sandbox: dict[str, Running], ops_server: ServerThread,
                                                   browser: Browser) -> None:
    cluster.start_worker()
    target = {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]}
    ids = cluster.publisher.publish_many([{"destination": "lt", "learner_id": f"d{i}", "score_given": 8,
                                           "score_maximum": 10, "target": target} for i in range(3)])
    assert set(cluster.wait_for(ids).values()) == {"succeeded"}
    rec = cluster.store.ledger.load(ids[1])
    assert rec is not None
    ev = GradeEvent.from_wire(rec.wire, vendors=cluster.settings.vendors())
    body = {"userId": ev.learner_id, "activityProgress": "Completed", "gradingProgress": "FullyGraded",
            "timestamp": (ev.occurred_at + timedelta(milliseconds=5)).isoformat()}
    auth = {"Authorization": f"SERVICE-AUTH-V1 {LT['api_key']}:{LT['service_key']}"}
    assert httpx.post(sandbox["ltiaas"].url + score_path(LINE_ITEM), json=body, headers=auth).status_code == 204
    runner = AuditRunner(cluster.settings.model_copy(update={"audit_unlimited_rate": 6000.0}), cluster.store)
    job = runner.create(["lt"], 0.0, actor="test")
    assert runner.run(job) is not None

    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    login(page, ops_server.url)
    row = page.locator('#audits-body tr[data-destination="lt"]')
    expect(row.locator("td.match")).to_have_text("2", timeout=WAIT_MS)
    expect(row.locator("td.missing")).to_have_text("1")
    expect(page.locator("#audit-cells-table tbody tr")).to_have_count(1)
    expect(page.locator("#audit-cells-table tbody tr td").nth(1)).to_have_text("d1")
    row.locator("button.resync").click()
    expect(page.locator("#confirm-ok")).to_have_text("Resync lt")
    page.click("#confirm-cancel")
    assert [s["userId"] for s in vendors["ltiaas"].state()["scores"] if s["scoreGiven"] is None] == ["d1"]
    row.locator("button.resync").click()
    page.click("#confirm-ok")
    expect(page.locator(".toast").last).to_contain_text("Republished 1 grade(s) of lt", timeout=WAIT_MS)
    deadline_ok = False
    for _ in range(200):
        scores = {s["userId"]: s["scoreGiven"] for s in vendors["ltiaas"].state()["scores"]}
        if scores.get("d1") == 8:
            deadline_ok = True
            break
        page.wait_for_timeout(100)
    assert deadline_ok, scores
    assert not errors, errors
