"""The dashboard in a real headless Chromium: login, overview, dead-letter browser, detail, requeue (then
delivered by the running worker), purge with confirmation."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from sandbox import DEMO_CREDENTIALS
from sandbox.control import SandboxClient
from tests.e2e.conftest import E2E_TOKEN
from tests.integration.conftest import SECRETS, Cluster
from worker.ops.serve import ServerThread
from worker.store.deadletters import DeadLetterQueue

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SERVICE_KEY = DEMO_CREDENTIALS["ltiaas"]["service_key"]
WAIT_MS = 20_000  # the page refreshes itself every 5 s


def lt_event(learner: str) -> dict[str, Any]:
    return {
        "destination": "lt",
        "learner_id": learner,
        "score_given": 9,
        "score_maximum": 10,
        "comment": "<b>not markup</b>",
        "target": {"line_item_id": "https://lms.example/api/lti/courses/4/line_items/2", "service_key": SERVICE_KEY},
    }


def ti_event() -> dict[str, Any]:
    return {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": 3, "score_maximum": 4,
            "target": {"assignment_id": str(uuid.uuid4())}}


def dead_letter(cluster: Cluster, vendors: dict[str, SandboxClient], learner: str) -> str:
    vendors["ltiaas"].fault(status=400, times=1, path="/scores")
    [eid] = cluster.publisher.publish_many([lt_event(learner)])
    cluster.wait_for([eid], {"dead_lettered"})
    return eid


def assert_no_secret(page: Page) -> None:
    html = page.content()
    for secret in [*SECRETS.values(), E2E_TOKEN, SERVICE_KEY]:
        assert secret not in html, f"{secret!r} is in the page"


def test_dashboard_in_a_real_browser(cluster: Cluster, vendors: dict[str, SandboxClient], ops_server: ServerThread,
                                     browser: Browser, tmp_path: Path) -> None:
    cluster.start_worker()
    [delivered] = cluster.publisher.publish_many([ti_event()])
    first = dead_letter(cluster, vendors, "learner-e2e-1")
    assert cluster.wait_for([delivered]) == {delivered: "succeeded"}

    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        # login: a wrong token is refused, the right one opens the dashboard
        page.goto(ops_server.url + "/")
        expect(page).to_have_url(ops_server.url + "/login")
        page.fill("#token", "not-the-token")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_have_text("That token is not valid.")
        expect(page).to_have_url(ops_server.url + "/login")
        assert not [c for c in context.cookies() if c["name"] == "gradesync_session"]
        page.fill("#token", E2E_TOKEN)
        page.click("#login-submit")
        expect(page).to_have_url(ops_server.url + "/")
        [cookie] = [c for c in context.cookies() if c["name"] == "gradesync_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # overview numbers per destination
        lt_row = page.locator('#overview-body tr[data-destination="lt"]')
        ti_row = page.locator('#overview-body tr[data-destination="ti"]')
        expect(lt_row.locator('td[data-col="dead_letters"]')).to_have_text("1")
        expect(lt_row.locator('td[data-col="failed_5m"]')).to_have_text("1")
        expect(lt_row.locator('td[data-col="failed_60m"]')).to_have_text("1")
        expect(ti_row.locator('td[data-col="succeeded_5m"]')).to_have_text("1")
        expect(ti_row.locator('td[data-col="succeeded_60m"]')).to_have_text("1")
        expect(ti_row.locator('td[data-col="dead_letters"]')).to_have_text("0")
        expect(lt_row.locator('td[data-col="queue_depth"]')).to_have_text("0")
        expect(page.locator("#t-dead")).to_have_text("1")
        expect(page.locator("#health-redis")).to_have_attribute("data-state", "ok")
        expect(page.locator("#health-broker")).to_have_attribute("data-state", "ok")

        # the dead letter is in the browser; its detail shows the attempts and no secret
        row = page.locator(f'#dlq-body tr[data-event-id="{first}"]')
        expect(row).to_be_visible()
        expect(row).to_contain_text("learner-e2e-1")
        expect(row).to_contain_text("HTTP 400")
        row.locator("a.link").click()
        detail = page.locator("#detail")
        expect(detail).to_be_visible()
        expect(page.locator("#detail-title")).to_have_text(first)
        expect(page.locator("#detail-attempts")).to_have_text("1")
        expect(page.locator("#detail-history tbody tr")).to_have_count(1)
        expect(page.locator("#detail-history tbody tr").first).to_contain_text("400")
        expect(detail).to_contain_text("**********")
        expect(detail).to_contain_text("<b>not markup</b>")  # shown as text, never as HTML
        assert page.locator("#detail b").count() == 0
        assert_no_secret(page)
        page.screenshot(path=str(tmp_path / "dead-letter-detail.png"))

        # requeue it from the page: the running worker delivers it
        page.click("#detail-requeue")
        expect(page.locator("#toasts")).to_contain_text("Requeued 1 of 1")
        expect(detail).to_be_hidden()
        assert cluster.wait_for([first]) == {first: "succeeded"}
        expect(row).to_have_count(0, timeout=WAIT_MS)
        expect(lt_row.locator('td[data-col="dead_letters"]')).to_have_text("0", timeout=WAIT_MS)

        # purge needs a confirmation: cancel keeps the dead letter, confirm deletes it for good
        second = dead_letter(cluster, vendors, "learner-e2e-2")
        page.fill("#f-learner", "learner-e2e-2")
        page.click("#f-apply")
        row2 = page.locator(f'#dlq-body tr[data-event-id="{second}"]')
        expect(row2).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#dlq-body tr")).to_have_count(1)
        row2.locator('input[type="checkbox"]').check()
        expect(page.locator("#purge-selected")).to_have_text("Purge selected (1)")
        page.click("#purge-selected")
        confirm = page.locator("#confirm")
        expect(confirm).to_be_visible()
        expect(page.locator("#confirm-ok")).to_have_text("Purge 1")
        expect(confirm).to_contain_text("cannot be undone")
        page.click("#confirm-cancel")
        expect(confirm).to_be_hidden()
        assert cluster.state(second) == "dead_lettered"
        page.click("#purge-selected")
        expect(confirm).to_be_visible()
        page.click("#confirm-ok")
        expect(page.locator("#toasts")).to_contain_text("Purged 1 dead letter")
        expect(row2).to_have_count(0, timeout=WAIT_MS)
        assert cluster.store.ledger.load(second) is None

        # every action is in the audit log as the dashboard's; the purge dialogs' previews are not actions
        actions = [(a["actor"], a["action"], a["dry_run"]) for a in DeadLetterQueue(cluster.store).audit()]
        assert actions == [("dashboard", "purge", False), ("dashboard", "requeue", False)]
        expect(page.locator("#audit-body")).to_contain_text("dashboard", timeout=WAIT_MS)

        page.click("#f-clear")
        expect(page.locator("#dlq-body")).to_contain_text("The dead-letter queue is empty", timeout=WAIT_MS)
        assert_no_secret(page)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
        assert errors == [], errors

        # signing out ends the session
        page.click("#logout")
        expect(page).to_have_url(ops_server.url + "/login")
        page.goto(ops_server.url + "/")
        expect(page).to_have_url(ops_server.url + "/login")
    finally:
        context.close()
