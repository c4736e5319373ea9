"""Destinations registered at run time, end to end: a real `gradesync worker` process, `gradesync serve`'s
app over HTTP (in this process), a vendor simulator over HTTP and a real Redis.

- a destination PUT while the worker runs receives events (within 10 s: the registry is polled every 2 s);
- a changed rate limit takes effect in the running worker;
- a removed destination stops (new events refused; DELETE refused while events are pending, forced:
  they are dead-lettered with a reason);
- its directly given secret is used, yet never readable in Redis, in an API answer, in a log line, nor in
  `destinations list` / `show`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from sandbox import Running, make_app, start
from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster
from tests.integration.test_secret_masking import echo_body, leaks, redis_dump
from worker.cli import cli
from worker.ops.api import create_app
from worker.ops.serve import ServerThread
from worker.registry.store import Registry

pytestmark = pytest.mark.integration

TOKEN = "it-registry-token-8c1f4e2a9b7d3c5e6a0f"
#: the API key of this test's own LTIAAS simulator: only the registry knows it (no environment variable)
SECRET = "tenant-a-direct-api-key-5d9e1b7c3a"
#: what the issue promises: every running worker sees a change within 10 s
PROPAGATION = 10.0


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def event(destination: str, n: int) -> dict[str, object]:
    return {"destination": destination, "learner_id": f"learner-{n}", "score_given": 7, "score_maximum": 10,
            "target": {"line_item_id": f"https://lms.example/api/lti/courses/1/line_items/{n}",
                       "service_key": "demo-service-key"}}


@pytest.fixture
def tenant_vendor() -> Iterator[tuple[Running, SandboxClient]]:
    running = start(make_app("ltiaas", api_key=SECRET))
    client = SandboxClient(running.url)
    yield running, client
    client.close()
    running.server.shutdown()


@pytest.fixture
def api(cluster: Cluster) -> Iterator[httpx.Client]:
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    server = ServerThread(create_app(settings)).start()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        yield http
    server.stop()


def worker_saw(cluster: Cluster, version: int) -> bool:
    """The worker process logged that it rebuilt its destinations at ``version`` (or later)."""
    for line in cluster.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "destinations_changed" and int(entry.get("version", 0)) >= version:
            return True
    return False


def test_a_destination_registered_at_run_time(cluster: Cluster, api: httpx.Client,
                                              tenant_vendor: tuple[Running, SandboxClient]) -> None:
    running, vendor = tenant_vendor
    registry = Registry(cluster.store.redis, cluster.store.keys)
    cluster.start_worker(concurrency=4)
    answers: list[str] = []

    # -- registered while the worker runs, with its secret given directly -----------------------------
    table = {"vendor": "ltiaas", "base_url": running.url, "api_key": SECRET, "max_attempts": 4,
             "retry_base_delay": 0.2, "retry_max_delay": 1.0}
    bad = api.put("/v1/destinations/tenant-a", json={**table, "timeout": 0, "colour": "red"})
    assert bad.status_code == 422 and {tuple(d["loc"]) for d in bad.json()["detail"]} == {
        ("body", "timeout"), ("body", "colour")}
    assert registry.get("tenant-a") is None  # nothing stored
    created = api.put("/v1/destinations/tenant-a", json=table)
    assert created.status_code == 201, created.text
    assert created.json()["config"]["api_key"] == "**********"
    answers.append(created.text)
    vendor.fault(status=503, times=1, body=echo_body([SECRET]))  # the vendor echoes the key once, then works
    published = api.post("/v1/events", json=event("tenant-a", 1))
    assert published.status_code == 202, published.text
    (first,) = published.json()["event_ids"]
    wait_until(lambda: cluster.state(first) == "succeeded", PROPAGATION + 5, "the new destination delivered")
    sent = vendor.requests(method="POST", path="/scores$")
    assert sent and all(SECRET in json.dumps(r) for r in sent)  # the direct secret is what the worker used

    # -- a changed rate limit takes effect in the running worker --------------------------------------
    changed = api.put("/v1/destinations/tenant-a", json={**table, "rate_limit_per_minute": 1, "burst": 1})
    assert changed.status_code == 200 and changed.json()["status"] == "updated"
    answers.append(changed.text)
    wait_until(lambda: worker_saw(cluster, registry.version()), PROPAGATION, "the worker saw the new rate")
    listing = api.get("/v1/destinations", params={"limit": 1000}).json()
    answers.append(json.dumps(listing))
    (row,) = [d for d in listing["destinations"] if d["name"] == "tenant-a"]
    assert row["configured_rate_per_minute"] == 1
    ids = [api.post("/v1/events", json=event("tenant-a", n)).json()["event_ids"][0] for n in (2, 3)]
    wait_until(lambda: "succeeded" in {cluster.state(i) for i in ids}, 30, "one event within the new rate")
    held = [i for i in ids if cluster.state(i) != "succeeded"]
    assert len(held) == 1, "1/min with a burst of 1: the second waits for its slot"
    scheduled = cluster.store.keys.scheduled
    due = wait_until(lambda: cluster.store.redis.zscore(scheduled, held[0]), 30, "the second deferred to its slot")
    assert isinstance(due, float) and due > time.time() + 20  # its rate-limit slot, about a minute away
    assert cluster.state(held[0]) != "succeeded"

    # -- a removal is refused while events are pending, forced: they are dead-lettered ---------------
    refused = api.delete("/v1/destinations/tenant-a")
    assert refused.status_code == 409 and "pending" in refused.json()["detail"]
    forced = api.delete("/v1/destinations/tenant-a", params={"force": "true", "reason": "tenant left"})
    assert forced.status_code == 200 and forced.json()["dead_lettered"] == 1, forced.text
    record = cluster.store.ledger.load(held[0])
    assert record is not None and record.state == "dead_lettered" and "tenant left" in record.fields["reason"]
    # removed: the server refuses its events at once, the worker forgets it within the poll
    refused_event = api.post("/v1/events", json=event("tenant-a", 4))
    assert refused_event.status_code == 422, refused_event.text
    wait_until(lambda: worker_saw(cluster, registry.version()), PROPAGATION, "the worker saw the removal")
    assert api.delete("/v1/destinations/tenant-a").status_code == 404
    audit = [(a["actor"], a["action"]) for a in api.get("/v1/audit").json()["items"]]
    assert audit[:3] == [("api", "destination_remove"), ("api", "destination_apply"), ("api", "destination_apply")]

    # -- the secret was never readable anywhere ------------------------------------------------------
    answers += [api.get(f"/v1/events/{i}").text for i in [first, *ids]]
    answers.append(api.get("/v1/dead-letters").text)
    assert not leaks(redis_dump(cluster.store.redis), [SECRET]), "plaintext secret in Redis"
    assert not [a for a in answers if leaks(a, [SECRET])], "secret in an API answer"
    assert "**********" in cluster.store.ledger.history(first)[0].get("excerpt", "")  # the echo, masked
    assert not leaks(cluster.log(), [SECRET]), "secret in a worker log line"


def test_cli_apply_list_show_remove_never_print_a_secret(cluster: Cluster, tmp_path: object,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in cluster.env.items():
        if key.startswith("GRADESYNC_"):
            monkeypatch.setenv(key, value)
    path = cluster.workdir / "tenants.toml"
    path.write_text("".join(
        f'[destinations.t{i:04d}]\nvendor = "ltiaas"\nbase_url = "https://t{i}.example"\napi_key = "{SECRET}{i}"\n'
        for i in range(1200)) + '[destinations.bad]\nvendor = "ltiaas"\nbase_url = "ftp://x"\napi_key_env = "K"\n')
    runner = CliRunner()
    refused = runner.invoke(cli, ["destinations", "apply", str(path)])
    assert refused.exit_code == 1 and "destination 'bad': key 'base_url'" in refused.output
    registry = Registry(cluster.store.redis, cluster.store.keys)
    assert registry.count() == 0  # all or nothing
    path.write_text(path.read_text().rsplit("[destinations.bad]", 1)[0])
    applied = runner.invoke(cli, ["destinations", "apply", str(path)])
    assert applied.exit_code == 0, applied.output
    assert "1200 created" in applied.output

    pages: list[str] = []
    cursor: str | None = None
    outputs = [applied.output]
    while True:
        args = ["destinations", "list", "--json", "--limit", "500", *(["--cursor", cursor] if cursor else [])]
        out = runner.invoke(cli, args)
        assert out.exit_code == 0, out.output
        outputs.append(out.output)
        doc = json.loads(out.output)
        pages.extend(d["name"] for d in doc["destinations"])
        cursor = doc["next_cursor"]
        if cursor is None:
            break
    assert pages == [f"t{i:04d}" for i in range(1200)]
    shown = runner.invoke(cli, ["destinations", "show", "t0007"])
    assert shown.exit_code == 0 and 'api_key = "**********"' in shown.output
    outputs += [shown.output, runner.invoke(cli, ["destinations", "show", "t0007", "--json"]).output,
                runner.invoke(cli, ["destinations"]).output]
    assert not [o for o in outputs if SECRET in o]
    assert SECRET.encode() not in redis_dump(cluster.store.redis).encode()

    removed = runner.invoke(cli, ["destinations", "remove", "t0007"])
    assert removed.exit_code == 0 and registry.get("t0007") is None
    again = runner.invoke(cli, ["destinations", "remove", "t0007"])
    assert again.exit_code == 1 and "no destination 't0007' is registered" in again.output


def test_ten_thousand_destinations_page_and_search(cluster: Cluster) -> None:
    """The dashboard's destinations view and GET /v1/destinations page and search 10 000 destinations."""
    from worker.registry.service import apply_document

    names = [f"school-{i:05d}" for i in range(10_000)]
    table = {"vendor": "ltiaas", "base_url": "https://lms.example", "api_key_env": "NOPE"}
    apply_document(cluster.settings, Registry(cluster.store.redis, cluster.store.keys),
                   {"destinations": {n: table for n in names}}, actor="test")
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    server = ServerThread(create_app(settings)).start()
    browser = httpx.Client(base_url=server.url, timeout=60)
    try:
        api = {"Authorization": f"Bearer {TOKEN}"}
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = httpx.get(f"{server.url}/v1/destinations", headers=api, timeout=60,
                             params={"limit": 2000, **({"cursor": cursor} if cursor else {})}).json()
            seen.extend(d["name"] for d in page["destinations"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [n for n in seen if n.startswith("school-")] == names

        assert browser.post("/login", data={"token": TOKEN}).status_code == 303
        first = browser.get("/ui/api/destinations", params={"limit": 24, "q": "SCHOOL-09"}).json()
        assert first["total"] == 1000 and len(first["destinations"]) == 24
        assert first["destinations"][0]["name"] == "school-09000" and first["next_cursor"] == "school-09023"
        second = browser.get("/ui/api/destinations",
                             params={"limit": 24, "q": "school-09", "cursor": first["next_cursor"]}).json()
        assert second["destinations"][0]["name"] == "school-09024"
        chart = browser.get("/ui/api/throughput", params={"names": "school-09000,school-09001,nope"}).json()
        assert [s["name"] for s in chart["destinations"]] == ["school-09000", "school-09001"]
        assert browser.get("/ui/api/destinations", params={"limit": 501}).status_code == 422
    finally:
        browser.close()
        server.stop()


def test_among_many_tenants_each_key_is_masked_where_it_is_used(
        cluster: Cluster, tenant_vendor: tuple[Running, SandboxClient]) -> None:
    """Above PROCESS_WIDE_UP_TO destinations their keys are not registered for the whole process (every
    string logged would be searched for every form of every key): a destination's key is bound to each
    delivery of it. A vendor echoing it is still masked in the record and the worker's log."""
    from worker.known_secrets import PROCESS_WIDE_UP_TO
    from worker.registry.service import apply_document

    running, vendor = tenant_vendor
    tenants = {f"school-{i:04d}": {"vendor": "ltiaas", "base_url": running.url, "api_key": f"other-key-{i:04d}-x9",
                                   "max_attempts": 3, "retry_base_delay": 0.2, "retry_max_delay": 1.0}
               for i in range(PROCESS_WIDE_UP_TO + 50)}
    tenants["school-0077"]["api_key"] = SECRET  # the one this simulator accepts
    apply_document(cluster.settings, Registry(cluster.store.redis, cluster.store.keys),
                   {"destinations": tenants}, actor="test")
    vendor.fault(status=503, times=1, body=echo_body([SECRET]))  # echoes the key once, then takes the score
    cluster.start_worker(concurrency=4)
    (eid,) = cluster.publisher.publish_many([event("school-0077", 1)])
    assert cluster.wait_for([eid], {"succeeded"}, timeout=120) == {eid: "succeeded"}
    history = cluster.store.ledger.history(eid)
    assert "**********" in history[0].get("excerpt", ""), history  # the vendor did echo it, masked
    cluster.stop_workers()
    assert not leaks(cluster.log(), [SECRET]), "a tenant's key in a worker log line"
    assert not leaks(redis_dump(cluster.store.redis), [SECRET]), "a tenant's key in Redis"
