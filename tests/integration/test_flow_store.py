"""The flow-control Lua scripts against a real Redis: the GCRA's reservations, the one probe, the
compare-and-set of a transition, parking and the drain, and the per-destination scheduled counts."""

from __future__ import annotations

import pytest
import redis

from worker.flow.decide import FlowState, Knobs, Outcome, Transition, after
from worker.flow.store import FlowStore
from worker.keys import Keys
from worker.store.ledger import Ledger
from worker.store.schedule import RetrySchedule

pytestmark = pytest.mark.integration
NOW = 1_000_000.0


@pytest.fixture
def flow(redis_client: redis.Redis) -> FlowStore:
    return FlowStore(redis_client, Keys("t"))


def ledger(flow: FlowStore) -> Ledger:
    """Parking writes the event's record, so it is the ledger's (the drain and the probe are flow's)."""
    return Ledger(flow.r, flow.keys, 3600)


def test_gcra_allows_the_burst_then_spaces_every_slot(flow: FlowStore) -> None:
    slots = [flow.reserve("d", 60.0, 3, now=NOW) for _ in range(6)]  # one a second, three at once
    assert slots == [NOW, NOW, NOW, NOW + 1, NOW + 2, NOW + 3]
    assert flow.reserve("d", 60.0, 3, now=NOW + 10) == NOW + 10  # idle time refills the burst
    assert flow.reserve("other", 60.0, 3, now=NOW) == NOW  # per destination


def test_gcra_not_before_gives_no_burst_after_a_pause(flow: FlowStore) -> None:
    slots = [flow.reserve("d", 60.0, 3, now=NOW, not_before=NOW + 5) for _ in range(3)]
    assert slots == [NOW + 5, NOW + 6, NOW + 7]


def test_only_one_probe_is_claimed(flow: FlowStore, redis_client: redis.Redis) -> None:
    key = flow.keys.flow("d")
    redis_client.hset(key, mapping={"breaker": "open", "probe_at": str(NOW + 5)})
    assert not flow.claim_probe("d", now=NOW, deadline=NOW + 60)  # cool-down not over
    assert flow.claim_probe("d", now=NOW + 5, deadline=NOW + 60)
    assert not flow.claim_probe("d", now=NOW + 6, deadline=NOW + 60)  # the probe is running
    assert flow.state("d").breaker == "half_open"
    assert float(redis_client.hget(flow.keys.flow("d"), "breaker_since") or 0) == NOW + 5
    assert flow.claim_probe("d", now=NOW + 61, deadline=NOW + 120)  # it never reported: probe again
    redis_client.hset(key, "paused", "1")
    assert not flow.claim_probe("d", now=NOW + 500, deadline=NOW + 600)


def test_apply_recomputes_when_the_state_changed_meanwhile(flow: FlowStore, redis_client: redis.Redis) -> None:
    knobs = Knobs(breaker_failures=2)
    seen: list[int] = []

    def compute(state: FlowState) -> Transition:
        seen.append(state.failures)
        if len(seen) == 1:  # another worker records a failure between our read and our write
            redis_client.hset(flow.keys.flow("d"), "failures", "1")
        return after(state, knobs, Outcome.TRANSIENT, NOW, detail="HTTP 503")

    transition = flow.apply("d", knobs, compute)
    assert seen == [0, 1]  # the first computation was discarded
    assert transition.opened and flow.state("d").breaker == "open"


def test_park_drain_and_release(flow: FlowStore, redis_client: redis.Redis) -> None:
    keys = flow.keys
    for i in range(5):
        ledger(flow).hold("d", f"e{i}", now=NOW + i, reason="paused")
    assert flow.parked_count("d") == 5
    assert redis_client.hget(keys.event("e0"), "parked_reason") == b"paused"
    assert flow.drain("d", 2, now=NOW + 10) == 2
    assert [m.decode() for m in redis_client.zrange(keys.scheduled, 0, -1)] == ["e0", "e1"]
    assert redis_client.zcard(keys.scheduled_of("d")) == 2
    assert flow.release("d", ["e4", "missing"], now=NOW + 10) == 1
    assert flow.oldest_parked("d", 10) == ["e2", "e3"]


def test_release_probe_sends_one_parked_event_when_the_cooldown_is_over(flow: FlowStore,
                                                                        redis_client: redis.Redis) -> None:
    redis_client.hset(flow.keys.flow("d"), mapping={"breaker": "open", "probe_at": str(NOW + 5)})
    ledger(flow).hold("d", "a", now=NOW)
    ledger(flow).hold("d", "b", now=NOW + 1)
    assert not flow.release_probe("d", now=NOW)
    assert flow.release_probe("d", now=NOW + 5)
    assert not flow.release_probe("d", now=NOW + 6)  # at most one every 10 s
    assert flow.oldest_parked("d", 10) == ["b"]


def test_scheduled_counts_per_destination_follow_the_claims(redis_client: redis.Redis) -> None:
    keys = Keys("t")
    schedule = RetrySchedule(redis_client, keys)
    for eid, dest in (("a", "x"), ("b", "x"), ("c", "y")):
        redis_client.hset(keys.event(eid), "destination", dest)
        redis_client.zadd(keys.scheduled, {eid: NOW})
        redis_client.zadd(keys.scheduled_of(dest), {eid: NOW})
    assert sorted(schedule.claim_due(NOW, 2)) == ["a", "b"]
    assert redis_client.zcard(keys.scheduled_of("x")) == 0 and redis_client.zcard(keys.scheduled_of("y")) == 1
    assert schedule.recover(NOW + 120) == 2  # a crashed pump's claims come back, counted again
    assert redis_client.zcard(keys.scheduled_of("x")) == 2


def test_the_flow_pump_looks_only_at_destinations_in_the_parking_index(flow: FlowStore) -> None:
    from worker.flow.drain import FULL_SCAN_EVERY, FlowPump
    from worker.settings import parse_destinations

    one = parse_destinations({"destinations": {"d": {"vendor": "ltiaas", "base_url": "http://x", "api_key_env": "K"}}},
                             environ={})["d"]
    dests = {f"d{i}": one for i in range(1000)}
    pump = FlowPump(flow, lambda: dests, lambda ids: [None] * len(ids))
    looked: list[list[str]] = []
    names = pump._names
    pump._names = lambda d, indexed, now: looked.append(names(d, indexed, now)) or looked[-1]  # type: ignore[method-assign]
    assert pump.tick(now=NOW) == 0 and len(looked[-1]) == 1000  # the first tick looks at every destination
    ledger(flow).hold("d7", "e1", now=NOW, reason="paused")
    assert flow.parking() == {"d7"}
    flow.r.hset(flow.keys.flow("d7"), "paused", "1")  # still paused: stays parked
    pump.tick(now=NOW + 1)
    assert looked[-1] == ["d7"] and flow.parking() == {"d7"}
    assert flow.release("d7", ["e1"], now=NOW + 2) == 1
    pump.tick(now=NOW + 2)
    assert flow.parking() == set()  # empty: out of the index
    pump.tick(now=NOW + 3)
    assert looked[-1] == []
    pump.tick(now=NOW + 2 + FULL_SCAN_EVERY)
    assert len(looked[-1]) == 1000  # the periodic full pass (events parked by hand, or before the index)
