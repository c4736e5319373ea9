"""The audit's pure verdict: delivered vs found (worker/audit/compare.py), table-tested."""

from __future__ import annotations

import pytest

from worker.audit.compare import Delivered, Verdict, compare
from worker.readback.base import Found

D = Delivered(87.0, 100.0, "Well argued")

CASES = [
    ("same score and comment", D, Found(87, 100, "Well argued", True), Verdict.MATCH),
    ("AGS result on another scale (0..1)", D, Found(0.87, 1.0, "Well argued", True), Verdict.MATCH),
    ("LearningStudio points rescaled and rounded", Delivered(2, 3, None), Found(33.33, 50, None, True),
     Verdict.MATCH),
    ("no maximum returned: compared as given", D, Found(87, None, "Well argued", True), Verdict.MATCH),
    ("comment not returned (Blackboard)", D, Found(87, 100, None, False), Verdict.MATCH),
    ("empty comment equals none", Delivered(5, 10, None), Found(5, 10, "", True), Verdict.MATCH),
    ("teacher override", D, Found(60, 100, "Well argued", True), Verdict.DRIFTED),
    ("override on another scale", D, Found(0.6, 1.0, None, False), Verdict.DRIFTED),
    ("no maximum, other points", D, Found(86, None, "Well argued", True), Verdict.DRIFTED),
    ("comment changed", D, Found(87, 100, "Resubmit please", True), Verdict.DRIFTED),
    ("comment removed", D, Found(87, 100, None, True), Verdict.DRIFTED),
    ("score where none was delivered", Delivered(None, None, "note"), Found(3, 10, "note", True),
     Verdict.DRIFTED),
    ("no grade at all", D, None, Verdict.MISSING),
    ("cleared score (Moodle null)", D, Found(None, 1.0, None, False), Verdict.MISSING),
    ("blank grade (LearningStudio)", D, Found(None, 50, None, True), Verdict.MISSING),
    ("comment-only delivery, comment cleared", Delivered(None, None, "note"), Found(None, None, None, True),
     Verdict.MISSING),
    ("zero delivered, zero held", Delivered(0, 10, None), Found(0, 10, None, True), Verdict.MATCH),
    ("zero delivered, cleared", Delivered(0, 10, None), Found(None, 10, None, True), Verdict.MISSING),
]


@pytest.mark.parametrize(("delivered", "found", "verdict"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_verdict(delivered: Delivered, found: Found | None, verdict: Verdict) -> None:
    outcome = compare(delivered, found)
    assert outcome.verdict is verdict
    if verdict is not Verdict.MATCH:
        assert outcome.reason


def test_drift_reason_names_both_values() -> None:
    assert compare(D, Found(60, 100, "Well argued", True)).reason == "score 60/100 held, 87/100 delivered"
