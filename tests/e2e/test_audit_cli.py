"""`gradesync audit` as an operator runs it (a separate process): ``--json`` prints one object per cell and
a summary line, secrets masked; ``--resync missing`` republishes the cleared cell only."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from typing import Any

import httpx
import pytest

from sandbox import DEMO_CREDENTIALS
from sandbox.base import Running
from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster
from worker.adapters.ltiaas import score_path
from worker.events import GradeEvent

pytestmark = pytest.mark.e2e

LT = DEMO_CREDENTIALS["ltiaas"]
LINE_ITEM = "https://lms.example/api/lti/courses/2/line_items/4"
KEYS = ["destination", "learner_id", "target", "event_id", "delivered", "found", "verdict", "reason"]


def audit(local: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**local.env, "GRADESYNC_AUDIT_UNLIMITED_RATE": "6000", "GRADESYNC_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "worker.cli", "audit", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_audit_json_lines_and_resync_missing(cluster: Cluster, sandbox: dict[str, Running],
                                             vendors: dict[str, SandboxClient]) -> None:
    local = cluster
    local.start_worker(concurrency=2)
    target = {"line_item_id": LINE_ITEM, "service_key": LT["service_key"]}
    ids = local.publisher.publish_many([{"destination": "lt", "learner_id": who, "score_given": 9,
                                         "score_maximum": 10, "target": target} for who in ("u1", "u2", "u3")])
    assert set(local.wait_for(ids).values()) == {"succeeded"}
    events = {}
    for eid in ids:
        rec = local.store.ledger.load(eid)
        assert rec is not None
        ev = GradeEvent.from_wire(rec.wire, vendors=local.settings.vendors())
        events[ev.learner_id] = ev
    auth = {"Authorization": f"SERVICE-AUTH-V1 {LT['api_key']}:{LT['service_key']}"}
    for who, given in (("u2", 3), ("u3", None)):
        body: dict[str, Any] = {"userId": who, "activityProgress": "Completed", "gradingProgress": "FullyGraded",
                                "timestamp": (events[who].occurred_at + timedelta(milliseconds=5)).isoformat()}
        if given is not None:
            body.update(scoreGiven=given, scoreMaximum=10)
        assert httpx.post(sandbox["ltiaas"].url + score_path(LINE_ITEM), json=body, headers=auth).status_code == 204

    done = audit(local, "lt", "--json", "--since", "1h")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    cells, last = lines[:-1], lines[-1]
    assert last == {"summary": {"match": 1, "drifted": 1, "missing": 1, "unreadable": 0, "error": 0}}
    assert all(list(c) == KEYS for c in cells)
    by = {c["learner_id"]: c for c in cells}
    assert {w: c["verdict"] for w, c in by.items()} == {"u1": "match", "u2": "drifted", "u3": "missing"}
    assert by["u2"]["found"]["score"] == 3 and by["u2"]["delivered"] == {"score": 9, "maximum": 10,
                                                                         "comment": None}
    assert by["u3"]["event_id"] == str(events["u3"].event_id)
    assert LT["service_key"] not in done.stdout and by["u1"]["target"]["service_key"] == "**********"

    plain = audit(local, "lt")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[0].split() == ["DESTINATION", "MATCH", "DRIFTED", "MISSING", "UNREADABLE",
                                                    "ERROR"]
    assert plain.stdout.splitlines()[1].split() == ["lt", "1", "1", "1", "0", "0"]

    fixed = audit(local, "lt", "--json", "--resync", "missing")
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads(fixed.stdout.splitlines()[-1])["resync"]
    assert list(report["republished"]) == [str(events["u3"].event_id)]
    new_id = report["republished"][str(events["u3"].event_id)]
    assert local.wait_for([new_id]) == {new_id: "succeeded"}
    scores = {s["userId"]: s["scoreGiven"] for s in vendors["ltiaas"].dump()["state"]["scores"]}
    assert scores == {"u1": 9, "u2": 3, "u3": 9}

    unknown = audit(local, "nope")
    assert unknown.returncode != 0 and "unknown destination" in unknown.stderr
