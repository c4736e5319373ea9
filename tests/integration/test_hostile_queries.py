"""Dead-letter routes of the API and of the dashboard's JSON API refuse NaN, infinite and absurd numbers in
queries and filters with a 4xx, never a 500; a too-deep batch item is named by index and field (issue 9,
item 3)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from pydantic import SecretStr

from tests.integration.conftest import Cluster
from worker.ops.api import create_app
from worker.ops.serve import ServerThread

TOKEN = "it-queries-token-5e7a9c1b3d5f7a9c1e3b"
QUERIES = ["since=nan", "since=NaN", "since=inf", "since=-Infinity", "since=1e400", "since=1e23",
           "offset=1e23", "offset=100000000000000000000000", "offset=-1", "limit=nan", "offset=nan"]
FILTERS = [{"since": "nan"}, {"since": "inf"}, {"since": 1e300}, {"since": "1e23"}, {"since": True}]


@pytest.fixture
def server(cluster: Cluster) -> Iterator[ServerThread]:
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    s = ServerThread(create_app(settings)).start()
    yield s
    s.stop()


def test_api_and_dashboard_answer_4xx_to_hostile_numbers(server: ServerThread) -> None:
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    ui = httpx.Client(base_url=server.url, timeout=30)
    try:
        assert ui.post("/login", data={"token": TOKEN}).status_code == 303
        page = ui.get("/")
        csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        answers: dict[str, int] = {}
        for q in QUERIES:
            answers[f"api ?{q}"] = api.get(f"/v1/dead-letters?{q}").status_code
            answers[f"ui ?{q}"] = ui.get(f"/ui/api/dead-letters?{q}").status_code
        for flt in FILTERS:
            for action in ("requeue", "purge"):
                body = {"filter": flt, "dry_run": True}
                answers[f"api {action} {flt}"] = api.post(f"/v1/dead-letters/{action}", json=body).status_code
                answers[f"ui {action} {flt}"] = ui.post(f"/ui/api/dead-letters/{action}", json=body,
                                                        headers={"X-CSRF-Token": csrf}).status_code
        raw_nan = '{"filter": {"since": NaN}, "dry_run": true}'  # a JSON body with a bare NaN literal
        answers["api requeue NaN literal"] = api.post("/v1/dead-letters/requeue", content=raw_nan,
                                                      headers={"Content-Type": "application/json"}).status_code
        assert {k: v for k, v in answers.items() if not 400 <= v < 500} == {}
        # and the same routes still work with sane values
        assert api.get("/v1/dead-letters?since=2h&offset=0").status_code == 200
        assert ui.get("/ui/api/dead-letters?since=1700000000").status_code == 200
    finally:
        api.close()
        ui.close()


def test_a_deep_item_in_a_batch_is_named_by_index_and_field(server: ServerThread, cluster: Cluster) -> None:
    ok = ('{"destination": "ti", "learner_id": "5e1c7d2a-9b3f-4c6d-8e0a-1b2c3d4e5f60", '
          '"target": {"assignment_id": "6b0f1c2e-3d4a-4b5c-8d6e-7f8091a2b3c4"}}')
    body = f'[{ok}, {ok[:-1]}, "metadata": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}]"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as api:
        answer = api.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    [entry] = answer.json()["errors"]
    assert (entry["index"], entry["field"]) == (1, "metadata") and "nested too deeply" in entry["message"]
    assert [k for k in cluster.store.redis.scan_iter() if b":registry" not in k] == []  # only the registry
