"""The dashboard's flow-control cards in a real headless Chromium: a state badge per destination (reason,
since, rate, parked), the per-minute chart of real deliveries, and pause / resume from the page (reason
prompt, CSRF, confirmation, audit)."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from sandbox.control import SandboxClient
from tests.e2e.conftest import E2E_TOKEN
from tests.integration.conftest import Cluster
from worker.ops.serve import ServerThread
from worker.store.deadletters import DeadLetterQueue

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

WAIT_MS = 20_000  # the page refreshes itself every 5 s
DASH = "\u2013"  # the en dash of the page's count ("1-24 of N" with an en dash)
BREAKER_REASON = "5 consecutive transient failures: 503 Service Unavailable <img src=x onerror=alert(1)>"


def ti_event() -> dict[str, Any]:
    return {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": 3, "score_maximum": 4,
            "target": {"assignment_id": str(uuid.uuid4())}}


def login(page: Page, url: str) -> None:
    page.goto(url + "/login")
    page.fill("#token", E2E_TOKEN)
    page.click("#login-submit")
    expect(page).to_have_url(url + "/")


def test_flow_control_cards_chart_and_pause_resume(cluster: Cluster, vendors: dict[str, SandboxClient],
                                                   ops_server: ServerThread, browser: Browser,
                                                   tmp_path: Path) -> None:
    cluster.start_worker()
    delivered = cluster.publisher.publish_many([ti_event() for _ in range(4)])
    assert set(cluster.wait_for(delivered).values()) == {"succeeded"}
    # the core's fields for an open breaker with parked events (what the flow-control core writes)
    r, keys, now = cluster.store.redis, cluster.store.keys, time.time()
    r.hset(keys.flow("ed"), mapping={"breaker": "open", "breaker_reason": BREAKER_REASON,
                                     "breaker_since": f"{now - 200}", "probe_at": f"{now + 600}"})
    r.zadd(keys.parked("ed"), {str(uuid.uuid4()): now - i for i in range(7)})

    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        login(page, ops_server.url)
        ed = page.locator('#flow-grid .flow-card[data-destination="ed"]')
        ti = page.locator('#flow-grid .flow-card[data-destination="ti"]')
        lt = page.locator('#flow-grid .flow-card[data-destination="lt"]')
        expect(page.locator("#flow-grid .flow-card")).to_have_count(len(cluster.settings.destinations()))

        # badges: state, why, since, rate, parked
        expect(ed.locator(".state-badge")).to_have_text("Open")
        expect(ed.locator(".state-badge")).to_have_attribute("data-state", "open")
        expect(ed.locator(".flow-reason")).to_have_text(BREAKER_REASON)  # as text, never as HTML
        assert page.locator("#flow-grid img").count() == 0
        expect(ed.locator("dd.since")).to_have_text(re.compile(r"^[34]m \d+s ago$"))  # opened 200 s ago
        expect(ed.locator("dd.parked")).to_have_text("7")
        expect(ed.locator(".probe")).to_contain_text("next probe in")
        expect(ti.locator(".state-badge")).to_have_text("Closed")
        expect(ti.locator(".flow-reason")).to_have_text("Delivering normally")
        rate = getattr(cluster.settings.destinations()["ti"], "rate_limit_per_minute", None)
        expect(ti.locator("dd.rate")).to_have_text("unlimited" if rate is None else f"{rate:g}/min")

        # the chart: an SVG line of the real deliveries in the current minute
        chart = ti.locator("svg.chart")
        expect(chart).to_be_visible()
        expect(ti.locator(".legend")).to_contain_text("Delivered 4")
        expect(ti.locator(".legend")).to_contain_text("Failed attempts 0")
        expect(chart.locator("rect.hover")).to_have_count(60)
        titles = chart.locator("rect.hover title").all_text_contents()
        per_minute = [re.fullmatch(r"\d\d:\d\d UTC: (\d+) delivered, (\d+) failed attempts", t) for t in titles]
        assert all(per_minute), titles
        assert sum(int(m.group(1)) for m in per_minute if m) == 4  # the same minutes as the line
        assert sum(int(m.group(2)) for m in per_minute if m) == 0
        points = chart.locator("polyline.delivered").get_attribute("points") or ""
        ys = [float(p.split(",")[1]) for p in points.split()]
        assert len(ys) == 60 and min(ys) < max(ys), "the delivered line has a peak"
        page.screenshot(path=str(tmp_path / "flow-cards.png"), full_page=True)

        # pause from the page: a reason is required; cancel changes nothing
        lt.locator("button.pause").click()
        dialog = page.locator("#pause-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#pause-title")).to_have_text("Pause lt?")
        page.click("#pause-ok")  # empty reason: the browser refuses to submit
        expect(dialog).to_be_visible()
        page.click("#pause-cancel")
        expect(dialog).to_be_hidden()
        assert r.hget(keys.flow("lt"), "paused") is None
        lt.locator("button.pause").click()
        page.fill("#pause-reason", "LMS maintenance 02:00-04:00 UTC")
        page.screenshot(path=str(tmp_path / "flow-pause-dialog.png"))
        page.click("#pause-ok")
        expect(page.locator("#toasts")).to_contain_text("Paused lt")
        expect(dialog).to_be_hidden()
        expect(lt.locator(".state-badge")).to_have_text("Paused")
        expect(lt.locator(".flow-reason")).to_have_text("paused by dashboard: LMS maintenance 02:00-04:00 UTC")
        assert r.hget(keys.flow("lt"), "paused") == b"1"
        expect(page.locator("#audit-body")).to_contain_text("lt: LMS maintenance", timeout=WAIT_MS)
        page.screenshot(path=str(tmp_path / "flow-paused.png"), full_page=True)

        # resume asks for a confirmation
        lt.locator("button.resume").click()
        confirm = page.locator("#confirm")
        expect(confirm).to_be_visible()
        expect(page.locator("#confirm-ok")).to_have_text("Resume lt")
        page.click("#confirm-cancel")
        assert r.hget(keys.flow("lt"), "paused") == b"1"
        lt.locator("button.resume").click()
        page.click("#confirm-ok")
        expect(page.locator("#toasts")).to_contain_text("Resumed lt: now Closed")
        expect(lt.locator(".state-badge")).to_have_text("Closed")
        assert r.hgetall(keys.flow("lt")) == {}

        audit = [(a["actor"], a["action"], a.get("destination")) for a in DeadLetterQueue(cluster.store).audit()]
        assert audit == [("dashboard", "resume", "lt"), ("dashboard", "pause", "lt")]
        assert errors == [], errors
    finally:
        context.close()


def test_flow_view_pages_and_searches_registered_destinations(cluster: Cluster, ops_server: ServerThread,
                                                             browser: Browser) -> None:
    from worker.registry.service import apply_document
    from worker.registry.store import Registry

    table = {"vendor": "ltiaas", "base_url": "https://lms.example", "api_key_env": "NOPE"}
    apply_document(cluster.settings, Registry(cluster.store.redis, cluster.store.keys),
                   {"destinations": {f"school-{i:03d}": table for i in range(60)}}, actor="test")
    total = 60 + len(cluster.settings.destinations())  # and the file's
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        login(page, ops_server.url)
        expect(page.locator("#flow-count")).to_have_text(f"1{DASH}24 of {total}", timeout=WAIT_MS)  # seen by the poll
        cards = page.locator("#flow-grid .flow-card")
        expect(cards).to_have_count(24)
        expect(page.locator("#flow-prev")).to_be_disabled()
        page.click("#flow-next")
        expect(page.locator("#flow-count")).to_have_text(f"25{DASH}48 of {total}", timeout=WAIT_MS)
        expect(page.locator("#flow-prev")).to_be_enabled()
        page.fill("#flow-search", "SCHOOL-05")
        expect(page.locator("#flow-count")).to_have_text(f"1{DASH}10 of 10", timeout=WAIT_MS)
        expect(cards).to_have_count(10)
        expect(cards.first).to_have_attribute("data-destination", "school-050")
        expect(page.locator("#flow-next")).to_be_disabled()
        page.fill("#flow-search", "no-such-school")
        expect(page.locator("#flow-grid .empty")).to_have_text("No destination matches", timeout=WAIT_MS)
        assert errors == []
    finally:
        context.close()
