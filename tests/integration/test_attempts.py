"""The delivery's two hot-path operations (`Ledger.claim`, `Ledger.succeed`) and the request histograms aggregated
in the process (:mod:`worker.store.stats`), against a real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from tests.integration.test_delivery import OK, Scripted, deliverer, env, event
from worker.events import GradeEvent
from worker.keys import Keys
from worker.publish import Publisher
from worker.settings import Settings
from worker.store import EventRecord, Store
from worker.store.stats import BUCKETS, Stats

pytestmark = pytest.mark.integration
__all__ = ["env"]  # the fixture, shared with test_delivery

Env = tuple[Settings, Store, Publisher]


def published(store: Store, publisher: Publisher, **over: object) -> tuple[EventRecord, GradeEvent]:
    [eid] = publisher.publish_many([event(**over)])
    record = store.ledger.load(eid)
    assert record is not None
    return record, GradeEvent.from_wire(record.wire, vendors={"lt": "ltiaas"})


def item_keys(store: Store, ev: GradeEvent) -> tuple[str, str]:
    return store.keys.lock("lt", ev.learner_id, ev.item_key()), store.keys.hwm("lt", ev.learner_id, ev.item_key())


def occurred(ev: GradeEvent) -> int:
    return int(ev.occurred_at.timestamp() * 1000)


def test_a_success_is_recorded_counted_and_released_by_the_scripts(env: Env) -> None:
    settings, store, publisher = env
    record, ev = published(store, publisher)
    assert deliverer(settings, store, Scripted([OK])).run(record.event_id, record.token) == "succeeded"
    done = store.ledger.load(record.event_id)
    assert done is not None and (done.state, done.attempts, done.token) == ("succeeded", 1, "")
    assert [a["outcome"] for a in store.ledger.history(record.event_id)] == ["succeeded"]
    lock, hwm = item_keys(store, ev)
    assert store.redis.get(lock) is None
    assert store.redis.get(hwm) == f"{occurred(ev)}|{record.event_id}".encode()
    assert store.stats.processed_totals() == {("lt", "ltiaas", "succeeded"): 1}
    assert sum(store.stats.window(["lt"], ["succeeded"], 2).values()) == 1
    assert store.redis.hget(store.keys.flow("lt"), "sent_n") == b"1"  # the sent-rate estimate counted it
    assert store.redis.zscore(store.keys.inflight("lt"), record.event_id) is None
    assert store.redis.zscore(store.keys.queued, record.event_id) is None
    assert 0 < store.redis.ttl(store.keys.event(record.event_id)) <= settings.ledger_ttl_seconds


def test_claim_checks_token_lease_and_stale_guard_before_starting(env: Env) -> None:
    _, store, publisher = env
    attempts = store.ledger
    record, ev = published(store, publisher)
    lock, hwm = item_keys(store, ev)

    def claim(token: str = record.token, owner: str = "me", fast: bool = True, ms: int = occurred(ev)) -> str:
        return attempts.claim(record, token, lock=lock, hwm=hwm, owner=owner, lease=30, occurred_ms=ms,
                              fast=fast).code

    assert claim(token="not-the-token") == "skipped"
    assert store.redis.get(lock) is None  # no lease taken for a message that must not run
    store.redis.set(lock, "someone-else")
    assert claim() == "busy"
    store.redis.delete(lock)
    store.redis.set(hwm, f"{occurred(ev) + 1}|another-event")
    stale = attempts.claim(record, record.token, lock=lock, hwm=hwm, owner="me", lease=30,
                           occurred_ms=occurred(ev), fast=True)
    assert (stale.code, stale.newest) == ("stale", "another-event")
    assert store.redis.get(lock) == b"me"  # held: the caller records the supersede, then releases
    loaded = store.ledger.load(record.event_id)
    assert loaded is not None and (loaded.state, loaded.attempts) == ("queued", 0)


@pytest.mark.parametrize("flow", [{"paused": "1"}, {"breaker": "open"},
                                  {"rate": "30", "rate_since": "0", "rate_until": "9999999999"},  # lowered after a 429
                                  {"throttled_until": "9999999999"}])
def test_a_destination_with_flow_state_takes_the_general_path(env: Env, flow: dict[str, str]) -> None:
    _, store, publisher = env
    attempts = store.ledger
    record, ev = published(store, publisher)
    lock, hwm = item_keys(store, ev)
    store.redis.hset(store.keys.flow("lt"), mapping=flow)
    got = attempts.claim(record, record.token, lock=lock, hwm=hwm, owner="me", lease=30, occurred_ms=occurred(ev),
                         fast=True)
    assert got.code == "flow"
    loaded = store.ledger.load(record.event_id)
    assert loaded is not None and (loaded.state, loaded.attempts) == ("queued", 0)  # not started
    assert store.redis.hget(store.keys.flow("lt"), "sent_n") is None


def test_claim_starts_the_attempt_on_a_clean_destination(env: Env) -> None:
    _, store, publisher = env
    attempts = store.ledger
    record, ev = published(store, publisher)
    lock, hwm = item_keys(store, ev)
    store.redis.hset(store.keys.flow("lt"), mapping={"breaker": "closed", "failures": "2", "throttled_until": "1"})
    assert attempts.claim(record, record.token, lock=lock, hwm=hwm, owner="me", lease=30, occurred_ms=occurred(ev),
                          fast=False).code == "flow"  # a configured rate: the caller said not fast
    store.redis.delete(lock)
    got = attempts.claim(record, record.token, lock=lock, hwm=hwm, owner="me", lease=30, occurred_ms=occurred(ev),
                         fast=True)
    assert (got.code, got.attempt, got.clean) == ("started", 1, False)  # two failures counted: not clean
    loaded = store.ledger.load(record.event_id)
    assert loaded is not None and (loaded.state, loaded.attempts) == ("in_progress", 1)
    assert store.redis.zscore(store.keys.inflight("lt"), record.event_id) is not None


def test_succeed_keeps_a_newer_mark_and_another_owners_lease(env: Env) -> None:
    _, store, publisher = env
    attempts = store.ledger
    record, ev = published(store, publisher)
    lock, hwm = item_keys(store, ev)
    store.redis.set(hwm, f"{occurred(ev) + 5}|newer")
    store.redis.set(lock, "someone-else")
    attempts.succeed(record, {"n": 1}, result={"status": 204}, lock=lock, hwm=hwm, owner="me",
                     occurred_ms=occurred(ev))
    assert store.redis.get(hwm) == f"{occurred(ev) + 5}|newer".encode()
    assert store.redis.get(lock) == b"someone-else"


def test_request_histograms_are_aggregated_then_written(redis_client: redis.Redis) -> None:
    stats = Stats(redis_client, Keys("gradesync-test-stats"))
    key = stats.keys.stats("requests", "d|ltiaas|score.post|2xx")
    redis_client.delete(key, stats.keys.stats("requests", "series"))
    for seconds in (0.02, 0.2, 0.2):
        stats.request("d", "ltiaas", "score.post", 204, seconds)
    assert redis_client.hgetall(key) == {}  # not yet: written within a second, or when read here
    hist = stats.request_histograms()[("d", "ltiaas", "score.post", "2xx")]
    assert hist["count"] == 3 and hist["sum"] == pytest.approx(0.42)
    assert hist["le:0.025"] == 1 and hist["le:0.25"] == 3 and "le:0.01" not in hist
    assert {f"le:{b}" for b in BUCKETS if b >= 0.25} <= set(hist)


def test_a_failed_flush_keeps_the_counts_for_the_next(redis_client: redis.Redis) -> None:
    keys = Keys("gradesync-test-stats")
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    stats = Stats(down, keys)
    key = keys.stats("requests", "e|ltiaas|score.post|5xx")
    redis_client.delete(key)
    stats.request("e", "ltiaas", "score.post", 503, 0.1)
    with pytest.raises(redis.ConnectionError):
        stats.flush()
    stats.request("e", "ltiaas", "score.post", 503, 0.1)
    stats.r = redis_client
    stats.flush()
    assert redis_client.hget(key, "count") == b"2"


def test_the_flusher_writes_without_a_reader(redis_client: redis.Redis) -> None:
    keys = Keys("gradesync-test-stats")
    stats = Stats(redis_client, keys)
    key = keys.stats("requests", "f|ltiaas|score.post|4xx")
    redis_client.delete(key)
    stats.request("f", "ltiaas", "score.post", 400, 0.1)
    deadline = time.monotonic() + 30
    while redis_client.hget(key, "count") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert redis_client.hget(key, "count") == b"1"
