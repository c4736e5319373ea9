"""The hostile-input corpus (``corpus/*.case``) through every way in: HTTP ingest, `gradesync publish` and
``publish_many()``. Each case is refused naming its field, nothing is published, and Redis stays empty."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr

from tests.integration.conftest import Cluster
from worker import safejson
from worker.cli import cli
from worker.ops.api import create_app
from worker.ops.serve import ServerThread
from worker.publish import InvalidEvents
from worker.settings import reset_settings

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(CORPUS.glob("*.case"))
TOKEN = "it-corpus-token-2d4f6a8c0e1b3d5f7a9c"


def load(path: Path) -> tuple[str, str]:
    header, _, body = path.read_text(encoding="utf-8").partition("\n")
    assert header.startswith("# field: "), path
    return header.removeprefix("# field: ").strip(), body.rstrip("\n")


def names_field(messages: list[str], field: str) -> bool:
    """Does one message start with ``field`` (``field: reason``, or a deeper path below it)?"""
    return any(m == field or m.startswith((f"{field}:", f"{field}.")) for m in messages)


@pytest.fixture
def ingest(cluster: Cluster) -> Iterator[httpx.Client]:
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    server = ServerThread(create_app(settings)).start()
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}) as http:
        yield http
    server.stop()


def test_the_corpus_has_more_than_40_cases() -> None:
    assert len(CASES) > 40
    assert all(load(p)[0] for p in CASES)


def test_every_case_is_refused_by_http_ingest_naming_the_field(
    cluster: Cluster, ingest: httpx.Client, redis_client: redis.Redis
) -> None:
    wrong: dict[str, Any] = {}
    for path in CASES:
        field, body = load(path)
        answer = ingest.post("/v1/events", content=body.encode("utf-8"))
        if field == "(json)":
            ok = answer.status_code == 400 and "not valid JSON" in answer.text
        else:
            entries = answer.json().get("errors", []) if answer.status_code == 422 else []
            ok = names_field([f"{e['field']}: {e['message']}" for e in entries], field)
        if not ok:
            wrong[path.name] = (answer.status_code, answer.text[:300])
    assert wrong == {}
    # nothing recorded, nothing queued (the server applied its destinations file to the run-time registry)
    assert [k for k in redis_client.scan_iter() if b":registry" not in k] == []


def test_every_case_is_a_per_line_error_of_gradesync_publish(
    cluster: Cluster, redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADESYNC_REDIS_URL", cluster.redis_url)
    monkeypatch.setenv("GRADESYNC_DESTINATIONS", str(cluster.destinations))
    reset_settings()
    runner = CliRunner()
    wrong: dict[str, Any] = {}
    for path in CASES:
        field, body = load(path)
        source = tmp_path / f"{path.stem}.jsonl"
        source.write_text(body + "\n", encoding="utf-8")
        result = runner.invoke(cli, ["publish", str(source)])
        out = result.output
        label = "item 2" if body.startswith("[") else "line 1"
        expected = f"{label}: not valid JSON" if field == "(json)" else f"{label}: {field}"
        lines = [line for line in out.splitlines() if line.startswith(label)]
        ok = (result.exit_code == 1 and "nothing published" in out and "Traceback" not in out
              and isinstance(result.exception, SystemExit | None)
              and any(line.startswith((f"{expected}:", f"{expected}.", expected)) for line in lines))
        if field == "event_id":  # the duplicate case: the second item is the one refused
            ok = ok or (result.exit_code == 1 and "item 2: event_id:" in out)
        if not ok:
            wrong[path.name] = (result.exit_code, out[-400:])
    assert wrong == {}
    assert redis_client.dbsize() == 0


def test_every_case_is_refused_by_publish_many(cluster: Cluster, redis_client: redis.Redis) -> None:
    wrong: dict[str, Any] = {}
    for path in CASES:
        field, body = load(path)
        try:
            data = safejson.loads(body)
        except safejson.JSONInputError as exc:  # a caller parsing untrusted JSON gets the field too
            if not (field == "(json)" or exc.field == field):
                wrong[path.name] = ("JSONInputError", exc.field, str(exc))
            continue
        items = data if isinstance(data, list) else [data]
        try:
            cluster.publisher.publish_many(items)
        except InvalidEvents as exc:
            if not names_field([m for lines in exc.errors.values() for m in lines], field):
                wrong[path.name] = exc.errors
            continue
        wrong[path.name] = "published!"
    assert wrong == {}
    assert redis_client.dbsize() == 0


def test_skip_invalid_never_publishes_the_conflicting_duplicate(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRADESYNC_REDIS_URL", cluster.redis_url)
    monkeypatch.setenv("GRADESYNC_DESTINATIONS", str(cluster.destinations))
    reset_settings()
    _, body = load(CORPUS / "39-duplicate-event-id-different-content.case")
    source = tmp_path / "dupes.json"
    source.write_text(body, encoding="utf-8")
    result = CliRunner().invoke(cli, ["publish", "--skip-invalid", "--json", str(source)])
    assert result.exit_code == 0, result.output
    assert "item 2: event_id:" in result.output
    [eid] = [x for x in safejson.loads(result.output.strip().splitlines()[-1])]
    record = cluster.store.ledger.load(eid)
    assert record is not None and '"score_given":8' in record.wire.replace(" ", "")  # the first one
