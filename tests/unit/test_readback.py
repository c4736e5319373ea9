"""Each vendor's read of a delivered grade (worker/readback) against its simulator over real HTTP: the
grade as delivered, as changed behind gradesync's back through the vendor's own API, and cleared."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sandbox import DEMO_CREDENTIALS, make_app
from sandbox.base import Running, start
from sandbox.control import SandboxClient
from sandbox.lti_demo import demo_jwks, demo_key, demo_pem
from worker import errors
from worker.adapters import build_adapter
from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.adapters.ltiaas import score_path
from worker.events import GradeEvent
from worker.readback import Unreadable, build_reader
from worker.readback.base import Found, Reader
from worker.readback.lti_ags import RESULT_SCOPE, results_url
from worker.vendors.edlink import EdlinkDestination
from worker.vendors.learningstudio import LearningStudioDestination
from worker.vendors.lti import LtiAgsDestination
from worker.vendors.ltiaas import LtiaasDestination
from worker.vendors.thoughtindustries import ThoughtIndustriesDestination

LT, ED, LS, TI = (DEMO_CREDENTIALS[v] for v in ("ltiaas", "edlink", "learningstudio", "thoughtindustries"))
T0 = datetime(2026, 1, 5, 9, 0, 0, 123000, tzinfo=UTC)
LINE_ITEM = "https://lms.example.com/api/lti/courses/7/line_items/9"
VENDORS = {"lt": "ltiaas", "ed": "edlink", "ls": "learningstudio", "ti": "thoughtindustries", "lti": "lti_ags"}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Running]]:
    running = {v: start(make_app(v)) for v in VENDORS.values()}
    SandboxClient(running["lti_ags"].url).configure(jwks=demo_jwks())
    yield running
    for r in running.values():
        r.stop()


@pytest.fixture
def control(servers: dict[str, Running]) -> Iterator[dict[str, SandboxClient]]:
    clients = {v: SandboxClient(r.url) for v, r in servers.items()}
    for c in clients.values():
        c.reset()
    yield clients
    for c in clients.values():
        c.close()


def destination(vendor: str, url: str) -> Any:
    if vendor == "ltiaas":
        return LtiaasDestination(name="lt", vendor="ltiaas", base_url=url, api_key_env="X",
                                 api_key=SecretStr(LT["api_key"]))
    if vendor == "edlink":
        return EdlinkDestination(name="ed", vendor="edlink", base_url=url, integration_token_env="X",
                                 integration_token=SecretStr(ED["integration_token"]))
    if vendor == "learningstudio":
        return LearningStudioDestination(name="ls", vendor="learningstudio", base_url=url,
                                         application_id=LS["application_id"], consumer_key=LS["consumer_key"],
                                         shared_secret_env="X", shared_secret=SecretStr(LS["shared_secret"]))
    if vendor == "thoughtindustries":
        return ThoughtIndustriesDestination(name="ti", vendor="thoughtindustries", base_url=url, api_key_env="X",
                                            api_key=SecretStr(TI["api_key"]))
    return LtiAgsDestination(name="lti", vendor="lti_ags", base_url=url,
                             client_id=DEMO_CREDENTIALS["lti_ags"]["client_id"],
                             token_url=f"{url}/login/oauth2/token", private_key_env="X",
                             private_key=SecretStr(demo_pem()), kid=demo_key().kid)


def event(name: str, target: dict[str, Any], learner: str = "learner-1", **over: Any) -> GradeEvent:
    data: dict[str, Any] = {"destination": name, "learner_id": learner, "occurred_at": T0.isoformat(),
                            "score_given": 87, "score_maximum": 100, "comment": "Well argued", "target": target}
    data.update(over)
    return GradeEvent.validate_for(data, VENDORS, max_future_skew=None)


def deliver_and_reader(vendor: str, url: str, ev: GradeEvent) -> Reader:
    dest = destination(vendor, url)
    adapter = build_adapter(dest, AdapterContext(http=make_client(dest)))
    adapter.deliver(ev)
    adapter.close()
    return build_reader(dest, AdapterContext(http=make_client(dest)))


def test_ltiaas_read_change_and_clear(servers: dict[str, Running], control: dict[str, SandboxClient]) -> None:
    url = servers["ltiaas"].url
    ev = event("lt", {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]})
    reader = deliver_and_reader("ltiaas", url, ev)
    assert reader.read_grade(ev) == Found(87.0, 100.0, "Well argued", True, {"timestamp": ev.occurred_at_iso})
    other = event("lt", {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]}, learner="learner-2")
    assert reader.read_grade(other) is None
    # a teacher's override through the vendor API, newer timestamp
    score = {"userId": "learner-1", "activityProgress": "Completed", "gradingProgress": "FullyGraded",
             "scoreGiven": 60, "scoreMaximum": 100, "timestamp": (T0 + timedelta(hours=1)).isoformat()}
    auth = {"Authorization": f"SERVICE-AUTH-V1 {LT['api_key']}:{LT['service_key']}"}
    path = f"{url}{score_path(LINE_ITEM)}"
    assert httpx.post(path, json=score, headers=auth).status_code == 204
    found = reader.read_grade(ev)
    assert found is not None and found.score == 60 and found.comment is None
    cleared = {**score, "timestamp": (T0 + timedelta(hours=2)).isoformat()}
    del cleared["scoreGiven"], cleared["scoreMaximum"]
    assert httpx.post(path, json=cleared, headers=auth).status_code == 204
    found = reader.read_grade(ev)
    assert found is not None and found.score is None
    reader.close()


def test_ltiaas_read_refused_maps_to_the_error_tree(servers: dict[str, Running],
                                                   control: dict[str, SandboxClient]) -> None:
    url = servers["ltiaas"].url
    ev = event("lt", {"line_item_id": LINE_ITEM, "service_key": "wrong-key"})
    dest = destination("ltiaas", url)
    reader = build_reader(dest, AdapterContext(http=make_client(dest)))
    with pytest.raises(errors.AuthenticationFailed):
        reader.read_grade(ev)
    control["ltiaas"].fault(status=429, retry_after=3, method="GET")
    ok = event("lt", {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]})
    with pytest.raises(errors.RateLimited) as info:
        reader.read_grade(ok)
    assert info.value.retry_after == 3
    reader.close()


def test_lti_ags_results_with_the_readonly_scope_and_paging(servers: dict[str, Running],
                                                            control: dict[str, SandboxClient]) -> None:
    url = servers["lti_ags"].url
    host = url.split("//", 1)[1]
    (item,) = control["lti_ags"].configure(seed=[{"course": "7", "style": "moodle", "resourceLinkId": "rl-1",
                                                  "label": "Quiz", "scoreMaximum": 100, "host": host}])["seeded"]
    control["lti_ags"].configure(page_size=1)
    ev = event("lti", {"line_item_url": item})
    dest = destination("lti_ags", url)
    adapter = build_adapter(dest, AdapterContext(http=make_client(dest)))
    for learner in ("learner-0", "learner-1"):
        adapter.deliver(event("lti", {"line_item_url": item}, learner=learner))
    adapter.close()
    reader = build_reader(dest, AdapterContext(http=make_client(dest)))
    assert reader.read_grade(ev) == Found(87.0, 100.0, "Well argued", True)
    reqs = [r for r in control["lti_ags"].dump()["requests"] if "/results" in r["path"]]
    assert reqs and reqs[-1]["query"]["user_id"] == ["learner-1"]
    assert reqs[-1]["headers"]["accept"] == "application/vnd.ims.lis.v2.resultcontainer+json"
    tokens = [r for r in control["lti_ags"].dump()["requests"] if r["path"].endswith("/token")]
    assert RESULT_SCOPE in tokens[-1]["body"].replace("%3A", ":").replace("%2F", "/")
    assert results_url(item) == item.replace("/lineitem?", "/lineitem/results?")
    # no result for a learner never graded (Canvas answers [])
    assert reader.read_grade(event("lti", {"line_item_url": item}, learner="nobody")) is None
    reader.close()


def test_lti_ags_result_pages_are_followed(servers: dict[str, Running],
                                                  control: dict[str, SandboxClient]) -> None:
    url = servers["lti_ags"].url
    host = url.split("//", 1)[1]
    (item,) = control["lti_ags"].configure(seed=[{"course": "8", "style": "canvas", "resourceLinkId": "rl-2",
                                                  "label": "Essay", "scoreMaximum": 10, "host": host}])["seeded"]
    dest = destination("lti_ags", url)
    adapter = build_adapter(dest, AdapterContext(http=make_client(dest)))
    for i in range(3):
        adapter.deliver(event("lti", {"line_item_url": item}, learner=f"p{i}", score_given=i + 5, score_maximum=10))
    adapter.close()
    control["lti_ags"].configure(page_size=1, ignore_filters=True)  # a platform ignoring ?user_id
    reader = build_reader(dest, AdapterContext(http=make_client(dest)))
    found = reader.read_grade(event("lti", {"line_item_url": item}, learner="p2"))
    assert found is not None and found.score == 7 and found.maximum == 10
    pages = [r for r in control["lti_ags"].dump()["requests"] if r["path"].endswith("/results")]
    assert [r["query"].get("page") for r in pages] == [None, ["2"], ["3"]]  # rel="next" followed to p2
    reader.close()


def test_learningstudio_reads_its_grade_and_a_blank_one(servers: dict[str, Running],
                                                        control: dict[str, SandboxClient]) -> None:
    url = servers["learningstudio"].url
    control["learningstudio"].configure(items={"c1/i1": {"pointsPossible": 50}})
    ev = event("ls", {"course_id": "c1", "item_id": "i1"}, learner="28456671")
    reader = deliver_and_reader("learningstudio", url, ev)
    found = reader.read_grade(ev)
    assert found is not None and (found.score, found.maximum, found.comment) == (43.5, 50.0, "Well argued")
    assert reader.read_grade(event("ls", {"course_id": "c1", "item_id": "i1"}, learner="99")) is None
    control["learningstudio"].configure(blank_grades=["28456672/c1/i1"])
    blank = reader.read_grade(event("ls", {"course_id": "c1", "item_id": "i1"}, learner="28456672"))
    assert blank is not None and blank.score is None and blank.comment is None
    reader.close()


def test_edlink_reads_the_submission_list(servers: dict[str, Running], control: dict[str, SandboxClient]) -> None:
    url = servers["edlink"].url
    target = {"class_id": "class-1", "assignment_id": "asg-1"}
    dest = destination("edlink", url)
    adapter = build_adapter(dest, AdapterContext(http=make_client(dest)))
    for i in range(3):
        adapter.deliver(event("ed", target, learner=f"person-{i}", score_given=20 + i, score_maximum=25,
                              comment=f"c{i}"))
    adapter.close()
    reader = build_reader(dest, AdapterContext(http=make_client(dest)))
    found = reader.read_grade(event("ed", target, learner="person-2"))
    assert found is not None and (found.score, found.maximum, found.comment) == (22.0, None, "c2")
    assert reader.read_grade(event("ed", target, learner="person-9")) is None
    # paging: one submission per page
    import worker.readback.edlink as mod
    old, mod.PAGE_SIZE = mod.PAGE_SIZE, 1
    try:
        found = reader.read_grade(event("ed", target, learner="person-1"))
        assert found is not None and found.score == 21
        pages = [r for r in control["edlink"].dump()["requests"] if r["path"].endswith("/submissions")]
        assert len(pages) >= 3
    finally:
        mod.PAGE_SIZE = old
    reader.close()


def test_thoughtindustries_is_unreadable_without_a_request(servers: dict[str, Running],
                                                           control: dict[str, SandboxClient]) -> None:
    dest = destination("thoughtindustries", servers["thoughtindustries"].url)
    reader = build_reader(dest, AdapterContext(http=make_client(dest)))
    ev = event("ti", {"assignment_id": "123e4567-e89b-12d3-a456-426614174000"},
               learner="223e4567-e89b-12d3-a456-426614174000")
    with pytest.raises(Unreadable):
        reader.read_grade(ev)
    assert control["thoughtindustries"].counts()["requests"] == 0
    reader.close()
