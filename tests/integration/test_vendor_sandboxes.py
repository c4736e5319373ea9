"""Each adapter against its simulator over real HTTP: success, refusals, stale scores, idempotent replay,
non-idempotent double sends, and injected faults mapped onto the error tree."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr

from sandbox import DEMO_CREDENTIALS, make_app
from sandbox.base import Running, start
from sandbox.control import SandboxClient
from sandbox.edlink import DEMO_PERSON_ID
from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.edlink import EdlinkAdapter
from worker.adapters.ltiaas import LtiaasAdapter
from worker.adapters.thoughtindustries import ThoughtIndustriesAdapter, sign_hs256
from worker.events import GradeEvent
from worker.vendors.edlink import EdlinkDestination
from worker.vendors.ltiaas import LtiaasDestination
from worker.vendors.thoughtindustries import ThoughtIndustriesDestination

pytestmark = pytest.mark.integration

VENDORS = {"vendors": {"lt": "ltiaas", "ed": "edlink", "ti": "thoughtindustries"}}
LT = DEMO_CREDENTIALS["ltiaas"]
ED = DEMO_CREDENTIALS["edlink"]
TI = DEMO_CREDENTIALS["thoughtindustries"]
LINE_ITEM = "https://lms.example.com/api/lti/courses/7/line_items/9/lineitem?type_id=1"
TI_ASSIGNMENT = "123e4567-e89b-12d3-a456-426614174000"
TI_LEARNER = "223e4567-e89b-12d3-a456-426614174000"
T0 = datetime(2025, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)

Adapter = LtiaasAdapter | EdlinkAdapter | ThoughtIndustriesAdapter
Controls = dict[str, SandboxClient]
Servers = dict[str, Running]
Build = Callable[..., Any]


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    running = {v: start(make_app(v)) for v in ("ltiaas", "edlink", "thoughtindustries")}
    yield running
    for r in running.values():
        r.stop()


@pytest.fixture
def control(servers: Servers) -> Iterator[Controls]:
    clients = {v: SandboxClient(r.url) for v, r in servers.items()}
    for c in clients.values():
        c.reset()
    yield clients
    for c in clients.values():
        c.close()


@pytest.fixture
def build(servers: Servers) -> Iterator[Build]:
    made: list[Adapter] = []

    def make(vendor: str, *, timeout: float = 5.0, **secrets: Any) -> Any:
        url = servers[vendor].url
        adapter: Adapter
        if vendor == "ltiaas":
            lt_dest = LtiaasDestination(
                name="lt",
                vendor="ltiaas",
                base_url=url,
                timeout=timeout,
                api_key_env="LT_KEY",
                api_key=SecretStr(secrets.get("key", LT["api_key"])),
            )
            adapter = LtiaasAdapter(lt_dest, AdapterContext(http=make_client(lt_dest)))
        elif vendor == "edlink":
            token = SecretStr(secrets.get("key", ED["integration_token"]))
            ed_dest = EdlinkDestination(
                name="ed",
                vendor="edlink",
                base_url=url,
                timeout=timeout,
                integration_token_env="ED_TOKEN",
                integration_token=token,
            )
            adapter = EdlinkAdapter(ed_dest, AdapterContext(http=make_client(ed_dest)))
        else:
            ti_dest = ThoughtIndustriesDestination(
                name="ti",
                vendor="thoughtindustries",
                base_url=url,
                timeout=timeout,
                api_key_env="TI_KEY",
                api_key=SecretStr(secrets.get("key", TI["api_key"])),
                mode=secrets.get("mode", "json"),
            )
            adapter = ThoughtIndustriesAdapter(ti_dest, AdapterContext(http=make_client(ti_dest)))
        made.append(adapter)
        return adapter

    yield make
    for a in made:
        a.close()


def lt_event(**overrides: Any) -> GradeEvent:
    data: dict[str, Any] = {
        "destination": "lt",
        "learner_id": "lti-user-42",
        "occurred_at": T0.isoformat(),
        "score_given": 0,
        "score_maximum": 10,
        "comment": "try again",
        "target": {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]},
    }
    data.update(overrides)
    return GradeEvent.model_validate(data, context=VENDORS)


def ed_event(**overrides: Any) -> GradeEvent:
    data: dict[str, Any] = {
        "destination": "ed",
        "learner_id": DEMO_PERSON_ID,
        "score_given": 22,
        "score_maximum": 25,
        "comment": "Good job!",
        "target": {
            "class_id": "class-1",
            "assignment_id": "assignment-1",
            "person_token": ED["person_token"],
        },
        "attachments": [
            {"type": "file", "title": "overwritten.txt", "data": [104, 101, 108, 108, 111, 10]},
            {"type": "link", "url": "https://docs.example.com/essay"},
        ],
    }
    data.update(overrides)
    return GradeEvent.model_validate(data, context=VENDORS)


def ti_event(**overrides: Any) -> GradeEvent:
    data: dict[str, Any] = {
        "destination": "ti",
        "learner_id": TI_LEARNER,
        "score_given": 19,
        "score_maximum": 20,
        "comment": "Nice work",
        "target": {"assignment_id": TI_ASSIGNMENT},
    }
    data.update(overrides)
    return GradeEvent.model_validate(data, context=VENDORS)


def lt_score(control: Controls, user: str = "lti-user-42") -> dict[str, Any]:
    """The simulator's stored score of ``user`` on LINE_ITEM."""
    scores = control["ltiaas"].state()["scores"]
    (score,) = [s for s in scores if (s["lineItem"], s["userId"]) == (LINE_ITEM, user)]
    return score


EVENTS = {"ltiaas": lt_event, "edlink": ed_event, "thoughtindustries": ti_event}


# == LTIAAS ===========================================================================================
def test_ltiaas_success_over_the_wire(build: Build, control: Controls) -> None:
    adapter = build("ltiaas")
    event = lt_event()
    result = adapter.deliver(event)
    assert result.status == 204
    stored = lt_score(control)
    assert stored["scoreGiven"] == 0 and stored["scoreMaximum"] == 10
    assert stored["timestamp"] == event.occurred_at_iso == "2025-05-01T12:00:00.123+00:00"
    assert stored["comment"] == "try again" and stored["auth"] == "SERVICE-AUTH-V1"
    (logged,) = control["ltiaas"].requests(method="POST")
    assert logged["path"].count("/") == 4 and "%2F" in logged["path"]  # one encoded segment survived


def test_ltiaas_ltik_auth(build: Build, control: Controls) -> None:
    adapter = build("ltiaas")
    adapter.deliver(lt_event(target={"line_item_id": LINE_ITEM, "ltik": LT["ltik"]}))
    assert lt_score(control)["auth"] == "LTIK-AUTH-V2"


@pytest.mark.parametrize(
    ("key", "target", "vendor_message"),
    [
        (
            LT["api_key"],
            {"ltik": "expired-ltik"},
            "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER: Invalid or expired ltik.",
        ),
        ("wrong-api-key", {"ltik": LT["ltik"]}, "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER: Invalid API key"),
        (
            LT["api_key"],
            {"service_key": "stale-service-key"},
            "INVALID_SERVICE_AUTH_AUTHORIZATION_HEADER: Invalid or expired service key.",
        ),
    ],
)
def test_ltiaas_auth_refusal(
    build: Build,
    control: Controls,
    key: str,
    target: dict[str, str],
    vendor_message: str,
) -> None:
    adapter = build("ltiaas", key=key)
    with pytest.raises(errors.AuthenticationFailed) as info:
        adapter.deliver(lt_event(target={"line_item_id": LINE_ITEM, **target}))
    assert info.value.status == 401
    assert info.value.vendor_message == vendor_message
    assert control["ltiaas"].state()["scores"] == []


def test_ltiaas_exact_401_body_and_strict_routes(servers: Servers, control: Controls) -> None:
    url = servers["ltiaas"].url
    encoded = LINE_ITEM.replace(":", "%3A").replace("/", "%2F").replace("?", "%3F").replace("=", "%3D")
    with httpx.Client(base_url=url) as http:
        r = http.post(
            f"/api/lineitems/{encoded}/scores",
            json={},
            headers={"Authorization": f"LTIK-AUTH-V2 {LT['api_key']}:nope"},
        )
        assert r.status_code == 401
        assert r.json() == {
            "status": 401,
            "error": "Unauthorized",
            "details": {
                "message": "INVALID_LTIK_AUTH_AUTHORIZATION_HEADER",
                "description": "Invalid or expired ltik.",
            },
        }
        bearer = http.post(
            f"/api/lineitems/{encoded}/scores", json={}, headers={"Authorization": f"Bearer {LT['api_key']}"}
        )
        assert bearer.status_code == 401
        assert bearer.json()["details"]["message"] == "UNSUPPORTED_AUTHENTICATION_METHOD"
        missing = http.post(f"/api/lineitems/{encoded}/scores", json={})
        assert missing.status_code == 401 and missing.json() == r.json()
        good = {"Authorization": f"SERVICE-AUTH-V1 {LT['api_key']}:{LT['service_key']}"}
        raw = http.post(
            "/api/lineitems/https%3A%2F%2Flms.example.com/line_items/9/scores", json={}, headers=good
        )
        assert raw.status_code == 404 and raw.json()["status"] == 404
        not_url = http.post("/api/lineitems/line-item-9/scores", json={}, headers=good)
        assert not_url.status_code == 400
        invalid = http.post(
            f"/api/lineitems/{encoded}/scores",
            headers=good,
            json={
                "userId": "u",
                "activityProgress": "Done",
                "gradingProgress": "FullyGraded",
                "scoreGiven": -1,
                "timestamp": "2025-05-01T12:00:00",
            },
        )
        assert invalid.status_code == 400
        description = invalid.json()["details"]["description"]
        for field in ("activityProgress", "scoreGiven", "scoreMaximum", "timestamp"):
            assert field in description


def test_ltiaas_stale_score_is_superseded(build: Build, control: Controls) -> None:
    adapter = build("ltiaas")
    newer = lt_event(occurred_at=(T0 + timedelta(seconds=5)).isoformat(), score_given=9)
    adapter.deliver(newer)
    with pytest.raises(errors.Superseded) as info:
        adapter.deliver(lt_event(score_given=3))  # older: a late retry of an earlier grade
    assert info.value.vendor_message == "Refusing score with an earlier timestamp"
    with pytest.raises(errors.Superseded):
        adapter.deliver(newer)  # the same timestamp again is refused too
    state = control["ltiaas"].state()
    assert [s["scoreGiven"] for s in state["scores"]] == [9]
    assert state["accepted"] == 1 and state["refused_stale"] == 2


def test_ltiaas_unknown_line_item(build: Build) -> None:
    adapter = build("ltiaas")
    target = {
        "line_item_id": "https://lms.example.com/unknown/line_items/1",
        "service_key": LT["service_key"],
    }
    with pytest.raises(errors.NotFound):
        adapter.deliver(lt_event(target=target))


@pytest.mark.parametrize(
    ("spec", "cls"),
    [
        ({"status": 503, "http_status": 400}, errors.VendorUnavailable),
        ({"status": 503}, errors.VendorUnavailable),
        ({"status": 429, "http_status": 500}, errors.RateLimited),
        ({"status": 404, "http_status": 500}, errors.NotFound),
        ({"status": 409, "http_status": 502}, errors.Superseded),
    ],
)
def test_ltiaas_external_errors(
    build: Build,
    control: Controls,
    spec: dict[str, int],
    cls: type[errors.DeliveryError],
) -> None:
    control["ltiaas"].configure(external_error=spec)
    adapter = build("ltiaas")
    with pytest.raises(errors.DeliveryError) as info:
        adapter.deliver(lt_event())
    assert type(info.value) is cls
    assert info.value.status == spec.get("http_status", spec["status"])
    assert adapter.deliver(lt_event()).status == 204  # only the next POST was affected


# == Edlink ===========================================================================================
def test_edlink_submit_and_grade(build: Build, control: Controls) -> None:
    result = build("edlink").deliver(ed_event())
    assert result.action == "submit+grade"
    (sub,) = control["edlink"].state()["submissions"].values()
    assert sub["state"] == "submitted" and sub["person_id"] == DEMO_PERSON_ID
    assert [a["type"] for a in sub["attempts"][0]["attachments"]] == ["file", "link"]
    assert (sub["grade_points"], sub["grade"], sub["grade_comment"]) == (22, "22", "Good job!")


def test_edlink_idempotent_submit_replays(build: Build, control: Controls) -> None:
    adapter = build("edlink")
    event = ed_event()
    first = adapter.deliver(event)
    second = adapter.deliver(event)  # a redelivery of the same event
    assert first.detail.split()[0] == second.detail.split()[0]  # the submit's original $request
    state = control["edlink"].state()
    (sub,) = state["submissions"].values()
    assert len(sub["attempts"]) == 1
    assert state["replayed"] == 1 and state["idempotency_keys"] == [str(event.event_id)]
    assert len(control["edlink"].requests(method="POST", path=r"/submit$")) == 2
    with pytest.raises(errors.Conflict) as info:  # another event: a real second submit, refused
        adapter.deliver(ed_event(event_id=str(uuid.uuid4())))
    assert info.value.vendor_message is not None and "CONFLICT" in info.value.vendor_message


def test_edlink_grade_only_creates_the_submission(build: Build, control: Controls) -> None:
    result = build("edlink").deliver(ed_event(attachments=[], learner_id="person-2", score_given=0))
    assert result.action == "grade"
    (sub,) = control["edlink"].state()["submissions"].values()
    assert (sub["state"], sub["person_id"], sub["grade_points"], sub["grade"]) == (
        "created",
        "person-2",
        0,
        "0",
    )


def test_edlink_auth_refusals(build: Build) -> None:
    with pytest.raises(errors.AuthenticationFailed) as info:
        build("edlink", key="wrong-token").deliver(ed_event(attachments=[]))
    assert info.value.vendor_message is not None and info.value.vendor_message.startswith("UNAUTHORIZED")
    wrong_person = {
        "class_id": "class-1",
        "assignment_id": "assignment-1",
        "person_token": ED["integration_token"],
    }
    with pytest.raises(errors.AuthenticationFailed):
        build("edlink").deliver(ed_event(target=wrong_person))


def test_edlink_unknown_ids(build: Build) -> None:
    target = {
        "class_id": "unknown-class",
        "assignment_id": "assignment-1",
        "person_token": ED["person_token"],
    }
    with pytest.raises(errors.NotFound):
        build("edlink").deliver(ed_event(target=target))


def test_edlink_warnings_are_logged(build: Build, control: Controls) -> None:
    control["edlink"].configure(warnings=[{"code": "ATTACHMENT_CONVERTED", "message": "link became text"}])
    with structlog.testing.capture_logs() as logs:
        build("edlink").deliver(ed_event())
    entries = [e for e in logs if e["event"] == "edlink.warnings"]
    assert len(entries) == 2 and entries[0]["codes"] == ["ATTACHMENT_CONVERTED"]


def test_edlink_validates_attachments(servers: Servers, control: Controls) -> None:
    with httpx.Client(base_url=servers["edlink"].url) as http:
        r = http.post(
            "/api/v2/my/classes/c/assignments/a/submit",
            headers={"Authorization": f"Bearer {ED['person_token']}"},
            json={
                "attachments": [
                    {"type": "video", "url": "x"},
                    {"type": "file", "title": "f", "size": 3, "data": [1]},
                ]
            },
        )
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"$request", "$errors"}
    assert [e["code"] for e in body["$errors"]] == ["BAD_REQUEST", "BAD_REQUEST"]


# == Thought Industries ===============================================================================
@pytest.mark.parametrize("mode", ["json", "jwt"])
def test_ti_success(build: Build, control: Controls, mode: str) -> None:
    result = build("thoughtindustries", mode=mode).deliver(ti_event())
    assert (result.status, result.detail) == (302, "/learn")
    (activity,) = control["thoughtindustries"].state()["activities"]
    assert activity["via"] == mode
    assert (activity["status"], activity["grade"], activity["gradeFeedback"]) == (
        "completed",
        95,
        "Nice work",
    )
    assert (activity["assignmentId"], activity["learnerId"]) == (TI_ASSIGNMENT, TI_LEARNER)


def test_ti_double_send_is_recorded_twice(build: Build, control: Controls) -> None:
    adapter = build("thoughtindustries")
    event = ti_event()
    adapter.deliver(event)
    adapter.deliver(event)
    assert len(control["thoughtindustries"].state()["activities"]) == 2  # not idempotent: dedupe upstream


def test_ti_refusals(build: Build, control: Controls) -> None:
    with pytest.raises(errors.AuthenticationFailed):
        build("thoughtindustries", key="wrong").deliver(ti_event())
    control["thoughtindustries"].configure(feature_enabled=False)
    with pytest.raises(errors.InvalidRequest) as info:
        build("thoughtindustries").deliver(ti_event())
    assert info.value.vendor_message == "externalActivity feature is not enabled"
    control["thoughtindustries"].configure(feature_enabled=True, unknown_assignments=[TI_ASSIGNMENT])
    with pytest.raises(errors.InvalidRequest) as info:
        build("thoughtindustries", mode="jwt").deliver(ti_event())
    assert info.value.vendor_message == "Assignment submission could not be recorded"
    assert control["thoughtindustries"].state()["activities"] == []


def test_ti_strict_validation(servers: Servers, control: Controls) -> None:
    auth = {"Authorization": f"Bearer {TI['api_key']}"}
    with httpx.Client(base_url=servers["thoughtindustries"].url) as http:
        path = "/incoming/v2/assignmentExternalActivity"
        bad_ids = http.post(
            path, headers=auth, json={"status": "completed", "assignmentId": "1", "learnerId": "2"}
        )
        assert bad_ids.status_code == 400
        assert bad_ids.json() == {"errors": ["Invalid assignmentId or learnerId (both are required)"]}
        bad_status = http.post(
            path,
            headers=auth,
            json={"status": "done", "assignmentId": TI_ASSIGNMENT, "learnerId": TI_LEARNER},
        )
        assert bad_status.status_code == 400 and bad_status.json()["valid"] is False
        claims = {"status": "completed", "assignmentId": TI_ASSIGNMENT, "learnerId": TI_LEARNER}
        old = sign_hs256({**claims, "iat": int(time.time()) - 600}, TI["api_key"])
        assert http.post(path, headers=auth, params={"jwt": old}).status_code == 401
        forged = sign_hs256({**claims, "iat": int(time.time())}, "not-the-key")
        assert http.post(path, headers=auth, params={"jwt": forged}).status_code == 401
        fresh = sign_hs256({**claims, "iat": int(time.time()), "returnUrl": "/courses/1"}, TI["api_key"])
        ok = http.post(path, headers=auth, params={"jwt": fresh})
        assert (ok.status_code, ok.headers["Location"], ok.content) == (302, "/courses/1", b"")
        no_key = http.post(path, json=claims)
        assert no_key.status_code == 401 and no_key.json()["error"] == "unauthorized"


def test_ti_429_body_retry_after(build: Build, control: Controls) -> None:
    body = {"error": "rate_limit_exceeded", "message": "Too many requests", "retryAfter": 32}
    control["thoughtindustries"].fault(status=429, body=body)  # no Retry-After header
    with pytest.raises(errors.RateLimited) as info:
        build("thoughtindustries").deliver(ti_event())
    assert info.value.retry_after == 32.0


# == injected faults, every vendor ====================================================================
VENDOR_NAMES = ["ltiaas", "edlink", "thoughtindustries"]


@pytest.mark.parametrize("vendor", VENDOR_NAMES)
def test_injected_503(vendor: str, build: Build, control: Controls) -> None:
    control[vendor].fault(status=503)
    adapter = build(vendor)
    with pytest.raises(errors.VendorUnavailable) as info:
        adapter.deliver(EVENTS[vendor]())
    assert info.value.status == 503
    assert info.value.vendor_message  # parsed from the vendor's own error shape
    adapter.deliver(EVENTS[vendor]())


@pytest.mark.parametrize("vendor", VENDOR_NAMES)
def test_injected_429_retry_after(vendor: str, build: Build, control: Controls) -> None:
    control[vendor].fault(status=429, retry_after=7)
    with pytest.raises(errors.RateLimited) as info:
        build(vendor).deliver(EVENTS[vendor]())
    assert info.value.retry_after == 7.0
    if vendor == "thoughtindustries":
        (logged,) = [r for r in control[vendor].requests() if r.get("fault")]
        assert logged["status"] == 429


@pytest.mark.parametrize("vendor", VENDOR_NAMES)
def test_dropped_connection(vendor: str, build: Build, control: Controls) -> None:
    control[vendor].fault(drop=True)
    adapter = build(vendor)
    with pytest.raises(errors.NetworkError):
        adapter.deliver(EVENTS[vendor]())
    adapter.deliver(EVENTS[vendor]())  # the next attempt goes through


@pytest.mark.parametrize("vendor", VENDOR_NAMES)
def test_slow_answer_times_out(vendor: str, build: Build, control: Controls) -> None:
    control[vendor].fault(latency=0.8)
    with pytest.raises(errors.VendorTimeout):
        build(vendor, timeout=0.3).deliver(EVENTS[vendor]())
    deadline = time.monotonic() + 5  # let the simulator finish the abandoned request inside this test
    while not control[vendor].requests() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)


def test_ti_injected_429_body_matches_the_header(servers: Servers, control: Controls) -> None:
    control["thoughtindustries"].fault(status=429, retry_after=9)
    r = httpx.post(servers["thoughtindustries"].url + "/incoming/v2/assignmentExternalActivity", json={})
    assert r.status_code == 429 and r.headers["Retry-After"] == "9"
    assert json.loads(r.content) == {
        "error": "rate_limit_exceeded",
        "message": "Rate limit exceeded. Please retry later.",
        "retryAfter": 9,
    }
