"""The flow-clean check is written once in Lua (:data:`worker.flow.store.FLOW_CLEAN_LUA`, part of the
delivery's claim script) and its Python counterpart is :func:`worker.flow.decide.admit` answering "go,
no rate" for a destination without a configured rate: this pins that the two agree, against a real Redis."""

from __future__ import annotations

import pytest
import redis

from worker.flow.decide import FlowState, Gate, Knobs, admit
from worker.flow.store import FLOW_CLEAN_LUA

pytestmark = pytest.mark.integration
NOW = 1_000_000.0

STATES: list[dict[str, str]] = [
    {},
    {"breaker": "closed", "failures": "2"},
    {"breaker": ""},
    {"paused": "1"},
    {"paused": "0"},
    {"breaker": "open", "probe_at": str(NOW + 5)},
    {"breaker": "open", "probe_at": str(NOW - 5)},
    {"breaker": "half_open", "probe_deadline": str(NOW + 5)},
    {"rate": "30"},  # an ended rate, as an earlier version wrote it (no times): clean
    {"rate": "30", "rate_since": str(NOW - 5), "rate_until": str(NOW + 20)},   # recovering
    {"rate": "30", "rate_since": str(NOW + 2), "rate_until": str(NOW + 32)},   # lowered, the pause still on
    {"rate": "30", "rate_since": str(NOW - 40), "rate_until": str(NOW - 10)},  # recovered
    {"rate": "fast", "rate_since": str(NOW - 5), "rate_until": str(NOW + 20)},  # garbage is ignored
    {"throttled_until": str(NOW + 5)},
    {"throttled_until": str(NOW - 5)},
    {"sent_t": str(NOW - 1), "sent_n": "7", "epoch": "3"},
]


@pytest.mark.parametrize("raw", STATES, ids=[",".join(s) or "empty" for s in STATES])
def test_the_claims_flow_clean_check_agrees_with_admit(redis_client: redis.Redis, raw: dict[str, str]) -> None:
    key = "gradesync-test:flow-clean"
    redis_client.delete(key)
    if raw:
        redis_client.hset(key, mapping=raw)
    check = redis_client.register_script(
        FLOW_CLEAN_LUA + "local clean = flow_clean(KEYS[1], tonumber(ARGV[1])) if clean then return 1 end return 0")
    in_lua = bool(check(keys=[key], args=[NOW]))
    state = FlowState.parse(raw)
    go = admit(state, Knobs(), NOW, waiting_since=NOW).gate is Gate.GO
    in_python = go and state.effective_rate(Knobs(), NOW) is None
    assert in_lua == in_python
