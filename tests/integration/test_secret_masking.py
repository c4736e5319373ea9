"""A vendor that echoes our credentials in its error bodies (issue 9, item 1), against a real worker, real
Redis and the HTTP sandbox: every known secret, in every common encoding, is masked in everything stored,
served, printed and logged."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from sandbox import DEMO_CREDENTIALS
from sandbox.control import SandboxClient
from tests.integration.conftest import SECRETS, Cluster
from worker.cli import cli
from worker.ops.api import create_app
from worker.ops.serve import ServerThread
from worker.settings import reset_settings

TOKEN = "it-masking-token-4b8e1c7a9d2f3e5a6c0b"
#: per-event secrets with characters that URL- and JSON-encoding change
SERVICE_KEY = 'evt-service/key+"quoted"&more'
PERSON_TOKEN = "evt-person token/7c2e9a"


def forms(secret: str) -> list[str]:
    """How a vendor may echo ``secret``: as is, URL-encoded, JSON-escaped, in Basic auth either side."""
    return [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        base64.b64encode(f"{secret}:".encode()).decode(),
        base64.b64encode(f"user-{secret[:3]}:{secret}".encode()).decode(),
        base64.b64encode(f"{secret}:x".encode()).decode().rstrip("="),
    ]


def echo_body(secrets: list[str]) -> dict[str, Any]:
    """An error body in every vendor's shape at once, echoing every form of every secret."""
    text = " ".join(f"{n}:[{f}]" for s in secrets for n, f in enumerate(forms(s)))
    return {"message": f"rejected {text}", "error": f"rejected {text}",
            "details": {"message": "rejected", "description": text},
            "$errors": [{"code": "echo", "message": text}], "errors": [text]}


def every_form(secrets: list[str]) -> list[str]:
    return sorted({f for s in secrets for f in forms(s) if len(f) >= 6}, key=len, reverse=True)


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [f for f in every_form(secrets) if f in text]


def redis_dump(client: redis.Redis) -> str:
    """Every value of every key, as text (what a dump of the database shows)."""
    parts: list[str] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            parts.append(repr(client.get(key)))
        elif kind == "hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == "list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind == "zset":
            parts.append(repr(client.zrange(key, 0, -1)))
        elif kind == "set":
            parts.append(repr(client.smembers(key)))
        elif kind == "stream":
            parts.append(repr(client.xrange(key)))
    return "\n".join(p.encode().decode("unicode_escape", errors="replace") for p in parts)


@pytest.fixture
def ops(cluster: Cluster) -> Iterator[httpx.Client]:
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    server = ServerThread(create_app(settings)).start()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        yield http
    server.stop()


def test_echoed_credentials_are_masked_on_every_surface(
    cluster: Cluster, vendors: dict[str, SandboxClient], ops: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest_secrets = {
        "ltiaas": [DEMO_CREDENTIALS["ltiaas"]["api_key"], SERVICE_KEY],
        "edlink": [DEMO_CREDENTIALS["edlink"]["integration_token"], PERSON_TOKEN],
        "thoughtindustries": [DEMO_CREDENTIALS["thoughtindustries"]["api_key"]],
        "learningstudio": [DEMO_CREDENTIALS["learningstudio"]["shared_secret"]],
        "lti_ags": [SECRETS["IT_LTI_KEY"]],  # the tool's private key PEM: a platform could only echo it
    }
    assert set(SECRETS.values()) <= {s for v in dest_secrets.values() for s in v}
    everything = [s for v in dest_secrets.values() for s in v]
    for vendor, secrets in dest_secrets.items():
        # one retryable echo (so last_error is written), then permanent echoes (so it dead-letters)
        vendors[vendor].fault(status=503, times=1, body=echo_body(secrets))
        vendors[vendor].fault(status=403, times=-1, body=echo_body(secrets))
    cluster.start_worker(concurrency=4)
    ids = cluster.publisher.publish_many([
        {"destination": "lt", "learner_id": "learner-echo", "score_given": 1, "score_maximum": 2,
         "target": {"line_item_id": "https://lms.example/api/lti/courses/1/line_items/9",
                    "service_key": SERVICE_KEY}},
        {"destination": "ed", "learner_id": "learner-echo", "score_given": 1, "score_maximum": 2,
         "target": {"class_id": "class-1", "assignment_id": "assignment-1", "person_token": PERSON_TOKEN}},
        {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": 1, "score_maximum": 2,
         "target": {"assignment_id": str(uuid.uuid4())}},
        {"destination": "ls", "learner_id": "learner-echo", "score_given": 1, "score_maximum": 2,
         "target": {"course_id": "course-1", "item_id": "item-1"}},
        {"destination": "lti", "learner_id": "learner-echo", "score_given": 1, "score_maximum": 2,
         "target": {"line_item_url": f"{vendors['lti_ags'].base_url}/api/lti/courses/1/line_items/1"}},
    ])
    assert set(cluster.wait_for(ids, {"dead_lettered"}).values()) == {"dead_lettered"}

    # the vendors really echoed them (the test would prove nothing otherwise) and they were masked
    record = cluster.store.ledger.load(ids[0])
    assert record is not None
    assert "**********" in record.fields["final_error"] and "**********" in record.fields["last_error"]
    assert "**********" in record.fields["reason"]
    lti = cluster.store.ledger.load(ids[4])  # the LTI platform echoed the PEM at its token endpoint
    assert lti is not None and "**********" in lti.fields["final_error"] and "token.post" in lti.fields["reason"]
    history = cluster.store.ledger.history(ids[0])
    assert len(history) >= 2 and all("**********" in (h.get("excerpt") or "") for h in history)

    surfaces: dict[str, str] = {"redis (every key)": redis_dump(cluster.store.redis)}
    for eid in ids:
        surfaces[f"GET /v1/dead-letters/{eid}"] = ops.get(f"/v1/dead-letters/{eid}").text
        surfaces[f"GET /v1/events/{eid}"] = ops.get(f"/v1/events/{eid}").text
    surfaces["GET /v1/dead-letters"] = ops.get("/v1/dead-letters").text
    assert json.loads(surfaces["GET /v1/dead-letters"])["total"] == 5

    with httpx.Client(base_url=str(ops.base_url), timeout=30) as browser:
        assert browser.post("/login", data={"token": TOKEN}).status_code == 303
        surfaces["dashboard list"] = browser.get("/ui/api/dead-letters").text
        for eid in ids:
            drawer = browser.get(f"/ui/api/dead-letters/{eid}")
            assert drawer.status_code == 200, drawer.text
            surfaces[f"dashboard drawer {eid}"] = drawer.text

    monkeypatch.setenv("GRADESYNC_REDIS_URL", cluster.redis_url)
    monkeypatch.setenv("GRADESYNC_DESTINATIONS", str(cluster.destinations))
    reset_settings()
    runner = CliRunner()
    for args in (["dlq", "list"], ["dlq", "list", "--json"], ["dlq", "export"],
                 *[[*cmd, eid] for eid in ids for cmd in (["status", "--json"], ["status"], ["dlq", "show"],
                                                          ["dlq", "show", "--json"])]):
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.output)
        surfaces["gradesync " + " ".join(args)] = result.output

    cluster.stop_workers()
    surfaces["worker log"] = cluster.log(0)
    errors_logged = [line for line in surfaces["worker log"].splitlines()
                     if '"event": "dead_lettered"' in line and '"level": "error"' in line]
    assert len(errors_logged) == 5 and all("**********" in line for line in errors_logged)  # logged, masked

    found = {where: leaks(text, everything) for where, text in surfaces.items()}
    assert {where: f for where, f in found.items() if f} == {}
