"""Graceful shutdown with real worker processes: a SIGTERM during in-flight vendor calls lets them finish,
starts no new vendor request, hands the rest back, and another worker delivers everything exactly once
(counted vendor-side)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import pytest

from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration


def ti_event(n: int) -> dict[str, Any]:
    return {"destination": "ti", "learner_id": str(uuid.uuid4()), "score_given": n, "score_maximum": 50,
            "target": {"assignment_id": str(uuid.uuid4())}}


def ls_event(n: int) -> dict[str, Any]:
    return {"destination": "ls", "learner_id": str(28456600 + n), "score_given": n, "score_maximum": 100,
            "target": {"course_id": "31388494", "item_id": "100561235546"}}


def _wait_inflight(cluster: Cluster, destination: str, at_least: int, timeout: float = 60.0) -> None:
    key = cluster.store.keys.inflight(destination)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.store.redis.zcard(key) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"never {at_least} attempts in flight:\n{cluster.log()[-3000:]}")


def _sigterm_and_wait(cluster: Cluster) -> int:
    worker = cluster.workers[0]
    os.killpg(worker.pid, signal.SIGTERM)
    return worker.wait(timeout=120)


def test_sigterm_lets_in_flight_calls_finish_and_loses_or_repeats_nothing(
        cluster: Cluster, vendors: dict[str, SandboxClient]) -> None:
    ti = vendors["thoughtindustries"]
    ti.fault(latency=2.0, times=-1)
    events = [ti_event(i) for i in range(16)]
    ids = cluster.publisher.publish_many(events)
    # flow control (issue 8) would keep ti to half the threads and its documented 120/min: lift both here
    text = cluster.destinations.read_text()
    cluster.destinations.write_text(text.replace("[destinations.ti]\n", "[destinations.ti]\nmax_concurrency = 8\n"
                                                 "rate_limit_per_minute = 0\n"))
    cluster.start_worker(concurrency=8)
    _wait_inflight(cluster, "ti", 6)
    assert _sigterm_and_wait(cluster) == 0
    log = cluster.log(0)
    assert "shutdown_started" in log and "shutdown_grace_exceeded" not in log
    written = {a["learnerId"] for a in ti.state()["activities"]}
    for eid, event in zip(ids, events, strict=True):  # what was written is recorded as written, and only that
        assert (cluster.state(eid) == "succeeded") == (event["learner_id"] in written)
    assert any(cluster.state(eid) != "succeeded" for eid in ids)  # work was left for the next worker

    ti.clear_faults()
    cluster.start_worker(concurrency=4)
    assert set(cluster.wait_for(ids).values()) == {"succeeded"}
    per_learner = [a["learnerId"] for a in ti.state()["activities"]]
    assert sorted(per_learner) == sorted(e["learner_id"] for e in events)  # each exactly once


def test_no_new_request_starts_after_sigterm_the_attempt_is_handed_back(
        cluster: Cluster, vendors: dict[str, SandboxClient]) -> None:
    ls = vendors["learningstudio"]
    ls.fault(latency=2.0, times=-1, method="GET")  # the worker is inside a GET when the SIGTERM comes
    events = [ls_event(i) for i in range(4)]
    ids = cluster.publisher.publish_many(events)
    text = cluster.destinations.read_text()  # flow control's fair share would keep ls to half the threads
    cluster.destinations.write_text(text.replace("[destinations.ls]\n", "[destinations.ls]\nmax_concurrency = 4\n"))
    cluster.start_worker(concurrency=4)
    _wait_inflight(cluster, "ls", 4)
    assert _sigterm_and_wait(cluster) == 0
    assert ls.requests(method="POST") == [] and ls.requests(method="PUT") == []  # the write never started
    for eid in ids:
        rec = cluster.store.ledger.load(eid)
        assert rec is not None and rec.state == "retrying" and rec.attempts == 0, rec
        assert rec.fields["handbacks"] == "1"
        assert cluster.store.schedule.due_time(eid) is not None

    ls.clear_faults()
    cluster.start_worker(concurrency=2)
    assert set(cluster.wait_for(ids).values()) == {"succeeded"}
    grades = ls.state()["grades"]
    assert sorted(k.split("/")[0] for k in grades) == sorted(str(e["learner_id"]) for e in events)
    assert len(ls.requests(method="POST")) + len(ls.requests(method="PUT")) == len(events)
