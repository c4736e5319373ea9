"""One delivery run in-process against a real Redis, with a scripted adapter: the decisions the task makes
around the vendor call (tokens, lease, stale guard, hooks) without a worker process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from worker import errors, hooks
from worker.adapters.base import AdapterContext, DeliveryResult
from worker.delivery import AdapterPool, Deliverer
from worker.events import GradeEvent
from worker.publish import Publisher
from worker.settings import Destination, Settings, reset_settings
from worker.store import Store

pytestmark = pytest.mark.integration

TOML = """
[destinations.lt]
vendor = "ltiaas"
base_url = "http://127.0.0.1:9"
api_key_env = "UNIT_LT_KEY"
max_attempts = 2
retry_base_delay = 1.0
retry_max_delay = 1.0
"""


class Scripted:
    """An adapter answering from a script: a DeliveryResult, or an exception to raise."""

    vendor = "ltiaas"

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[GradeEvent] = []

    def deliver(self, event: GradeEvent) -> DeliveryResult:
        self.calls.append(event)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, DeliveryResult)
        return step

    def close(self) -> None:
        return None


@pytest.fixture
def env(redis_client: redis.Redis, redis_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Store, Publisher]]:
    (tmp_path / "d.toml").write_text(TOML)
    monkeypatch.setenv("UNIT_LT_KEY", "k")
    reset_settings()
    settings = Settings(redis_url=redis_url, destinations_file=tmp_path / "d.toml", visibility_timeout=30)
    store = Store.connect(settings)
    publisher = Publisher(settings)
    yield settings, store, publisher
    publisher.close()


def deliverer(settings: Settings, store: Store, adapter: Scripted) -> Deliverer:
    def factory(destination: Destination, ctx: AdapterContext) -> Scripted:
        return adapter

    return Deliverer(settings, store, AdapterPool(settings, store, factory=factory), worker="test")  # type: ignore[arg-type]


def event(**over: Any) -> dict[str, Any]:
    e = {"destination": "lt", "learner_id": "u1", "score_given": 1, "score_maximum": 2,
         "target": {"line_item_id": "https://lms.example/li/1", "service_key": "sk"}}
    e.update(over)
    return e


OK = DeliveryResult(204, "score.post")


def test_a_message_runs_only_with_the_ledgers_token(env: tuple[Settings, Store, Publisher]) -> None:
    settings, store, publisher = env
    [eid] = publisher.publish_many([event()])
    adapter = Scripted([OK])
    d = deliverer(settings, store, adapter)
    token = store.ledger.load(eid).token  # type: ignore[union-attr]
    assert d.run(eid, "not-the-token") == "skipped"
    assert d.run(eid, token) == "succeeded"
    assert d.run(eid, token) == "skipped"  # a re-delivered message: already done
    assert len(adapter.calls) == 1
    assert d.run("00000000-0000-0000-0000-000000000000", token) == "missing"


def test_dead_letter_fires_the_hook_with_the_reason(env: tuple[Settings, Store, Publisher]) -> None:
    settings, store, publisher = env
    seen: list[hooks.DeadLetterNotice] = []
    hooks.on_dead_letter(seen.append)
    try:
        [eid] = publisher.publish_many([event()])
        d = deliverer(settings, store, Scripted([errors.Forbidden("score.post: HTTP 403", status=403)]))
        assert d.run(eid, store.ledger.load(eid).token) == "dead_lettered"  # type: ignore[union-attr]
    finally:
        hooks.unsubscribe(seen.append)
    assert [(n.event_id, n.destination, n.attempts) for n in seen] == [(eid, "lt", 1)]
    assert seen[0].reason == "permanent: HTTP 403 — score.post: HTTP 403"
    assert store.redis.zscore(store.keys.dlq, eid) is not None
    # dead letters expire after dead_letter_ttl_days (default 30), not with the ordinary ledger TTL
    assert 0 < store.redis.ttl(store.keys.event(eid)) <= settings.dead_letter_ttl_seconds  # type: ignore[operator]


def test_a_failing_hook_changes_nothing(env: tuple[Settings, Store, Publisher]) -> None:
    settings, store, publisher = env

    def broken(notice: hooks.DeadLetterNotice) -> None:
        raise RuntimeError("pager down")

    hooks.on_dead_letter(broken)
    try:
        [eid] = publisher.publish_many([event()])
        d = deliverer(settings, store, Scripted([errors.NotFound(status=404)]))
        assert d.run(eid, store.ledger.load(eid).token) == "dead_lettered"  # type: ignore[union-attr]
    finally:
        hooks.unsubscribe(broken)


def test_an_adapter_crash_is_retried_not_lost(env: tuple[Settings, Store, Publisher]) -> None:
    settings, store, publisher = env
    [eid] = publisher.publish_many([event()])
    d = deliverer(settings, store, Scripted([KeyError("bug")]))
    assert d.run(eid, store.ledger.load(eid).token) == "retrying"  # type: ignore[union-attr]
    rec = store.ledger.load(eid)
    assert rec is not None and rec.state == "retrying"
    assert store.schedule.due_time(eid) is not None
    assert store.ledger.history(eid)[0]["message"] == "internal error: KeyError"


def test_busy_learner_item_lease_defers_without_an_attempt(env: tuple[Settings, Store, Publisher]) -> None:
    settings, store, publisher = env
    [eid] = publisher.publish_many([event()])
    ev = GradeEvent.from_wire(store.ledger.load(eid).wire, vendors={"lt": "ltiaas"})  # type: ignore[union-attr]
    assert store.ledger.acquire("lt", ev.learner_id, ev.item_key(), "someone-else", 30)
    adapter = Scripted([OK])
    assert deliverer(settings, store, adapter).run(eid, store.ledger.load(eid).token) == "deferred"  # type: ignore[union-attr]
    rec = store.ledger.load(eid)
    assert rec is not None and rec.state == "queued" and rec.attempts == 0 and adapter.calls == []
    assert store.schedule.due_time(eid) is not None


def test_missing_destination_secret_dead_letters_with_configuration_reason(
    env: tuple[Settings, Store, Publisher], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, store, publisher = env
    [eid] = publisher.publish_many([event()])
    monkeypatch.delenv("UNIT_LT_KEY")
    reset_settings()  # the destinations are read again: the secret is gone
    d = Deliverer(settings, store, AdapterPool(settings, store), worker="test")
    assert d.run(eid, store.ledger.load(eid).token) == "dead_lettered"  # type: ignore[union-attr]
    assert "UNIT_LT_KEY" in store.ledger.load(eid).fields["reason"]  # type: ignore[union-attr]


def test_requeued_older_event_is_superseded_by_a_newer_one_delivered_meanwhile(
    env: tuple[Settings, Store, Publisher],
) -> None:
    from worker.dispatch.memory import InMemoryDispatcher
    from worker.store.deadletters import DeadLetterQueue

    settings, store, publisher = env
    [old] = publisher.publish_many([event(occurred_at="2026-01-01T10:00:00Z", score_given=1)])
    d = deliverer(settings, store, Scripted([errors.NotFound(status=404), OK]))
    assert d.run(old, store.ledger.load(old).token) == "dead_lettered"  # type: ignore[union-attr]
    [new] = publisher.publish_many([event(occurred_at="2026-01-01T11:00:00Z", score_given=2)])
    assert d.run(new, store.ledger.load(new).token) == "succeeded"  # type: ignore[union-attr]

    memory = InMemoryDispatcher()
    report = DeadLetterQueue(store, memory).requeue([old], actor="test")
    assert report.done == 1
    rec = store.ledger.load(old)
    assert rec is not None and rec.state == "queued" and rec.attempts == 0
    assert memory.depths(["lt"]) == {"lt": 1}
    assert memory.drain(d) == 1  # the requeued message, run in this process
    assert store.ledger.load(old).state == "superseded"  # type: ignore[union-attr]
    assert store.ledger.load(old).fields["reason"].startswith(f"a newer event ({new})")  # type: ignore[union-attr]
