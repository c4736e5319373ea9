"""The normalized grade event: every validation rule, with the error text a producer sees."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from worker.events import GradeEvent, event_json_schema, format_errors

VENDORS = {"ls": "learningstudio", "lt": "ltiaas", "ed": "edlink", "ti": "thoughtindustries"}
LEARNER = str(uuid.uuid4())
TARGETS: dict[str, dict[str, Any]] = {
    "ls": {"course_id": "31388494", "item_id": "100561235546"},
    "lt": {"line_item_id": "https://lms.example/api/lti/courses/1/line_items/7", "service_key": "sk-secret"},
    "ed": {"class_id": "c-1", "assignment_id": "a-1", "person_token": "pt-secret"},
    "ti": {"assignment_id": str(uuid.uuid4())},
}


def event(dest: str = "lt", **over: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"destination": dest, "learner_id": LEARNER, "score_given": 8, "score_maximum": 10,
                         "target": TARGETS[dest]}
    e.update(over)
    return e


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        GradeEvent.model_validate(data, context={"vendors": VENDORS})
    return format_errors(info.value)


@pytest.mark.parametrize("dest", sorted(VENDORS))
def test_valid_event_for_each_vendor(dest: str) -> None:
    e = GradeEvent.model_validate(event(dest), context={"vendors": VENDORS})
    assert e.vendor == VENDORS[dest]
    assert e.activity_progress == "Completed" and e.grading_progress == "FullyGraded"
    assert isinstance(e.event_id, uuid.UUID)


def test_defaults_and_normalisation() -> None:
    e = GradeEvent.model_validate(event(occurred_at="2025-03-01T10:00:00.123456+02:00"), context={"vendors": VENDORS})
    assert e.occurred_at_iso == "2025-03-01T08:00:00.123+00:00"  # UTC, milliseconds
    fresh = GradeEvent.model_validate(event(), context={"vendors": VENDORS})
    assert fresh.occurred_at.microsecond % 1000 == 0


def test_zero_is_a_score() -> None:
    e = GradeEvent.model_validate(event(score_given=0), context={"vendors": VENDORS})
    assert e.score_given == 0


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"destination": "nope"}, "destination: unknown destination 'nope' (configured: ed, ls, lt, ti)"),
        ({"learner_id": ""}, "learner_id: String should have at least 1 character"),
        ({"learner_id": " padded "}, "learner_id: String should match pattern"),
        ({"score_given": -1}, "score_given: Input should be greater than or equal to 0"),
        ({"score_maximum": 0}, "score_maximum: Input should be greater than 0"),
        ({"score_maximum": None}, "score_maximum: required when score_given is present"),
        ({"score_given": float("inf")}, "score_given: must be a finite number"),
        ({"occurred_at": "2025-03-01T10:00:00"}, "occurred_at: Input should have timezone info"),
        ({"occurred_at": "yesterday"}, "occurred_at: Input should be a valid datetime"),
        ({"event_id": "not-a-uuid"}, "event_id: Input should be a valid UUID"),
        ({"activity_progress": "Done"},
         "activity_progress: Input should be 'Initialized', 'Started', 'InProgress', 'Submitted' or 'Completed'"),
        ({"grading_progress": "Graded"},
         "grading_progress: Input should be 'FullyGraded', 'Pending', 'PendingManual', 'Failed' or 'NotReady'"),
        ({"letter_grade": "A" * 21}, "letter_grade: String should have at most 20 characters"),
        ({"metadata": {"blob": "x" * 5000}}, "metadata: must serialize to at most 4096 bytes of JSON"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"attachments": [{"type": "link", "url": "ftp://x"}]}, "attachments.0.url: String should match pattern"),
        ({"attachments": [{"type": "video"}]}, "attachments.0: Input tag 'video' found using 'type' does not match"),
        ({"target": {"line_item_id": "https://lms.example/li/1"}},
         "target: exactly one of service_key or ltik is required"),
        ({"target": {"line_item_id": "https://lms.example/li/1", "service_key": "a", "ltik": "b"}},
         "target: exactly one of service_key or ltik is required"),
        ({"target": {"line_item_id": "7", "service_key": "a"}},
         "target.line_item_id: must be the full line item URL (http:// or https://)"),
        ({"target": {"course_id": "1", "item_id": "2"}}, "target.line_item_id: Field required"),
    ],
)
def test_rules(over: dict[str, Any], expected: str) -> None:
    msgs = errors_of(event(**over))
    assert any(m.startswith(expected) for m in msgs), msgs


@pytest.mark.parametrize(
    ("dest", "target", "expected"),
    [
        ("ls", {"course_id": "1"}, "target.item_id: Field required"),
        ("ls", {"course_id": "1", "item_id": "2", "extra": 1}, "target.extra: Extra inputs are not permitted"),
        ("ed", {"class_id": "c"}, "target.assignment_id: Field required"),
        ("ti", {"assignment_id": "abc"}, "target.assignment_id: Input should be a valid UUID"),
    ],
)
def test_target_rules_per_vendor(dest: str, target: dict[str, Any], expected: str) -> None:
    msgs = errors_of(event(dest, target=target))
    assert any(m.startswith(expected) for m in msgs), msgs


def test_thoughtindustries_learner_must_be_uuid() -> None:
    assert errors_of(event("ti", learner_id="bob")) == [
        "learner_id: must be a UUID for a thoughtindustries destination"
    ]


def test_every_problem_is_reported_at_once() -> None:
    msgs = errors_of(event(learner_id="", score_given=-2, activity_progress="x"))
    assert len(msgs) == 3


def test_secrets_are_masked_except_on_the_wire() -> None:
    e = GradeEvent.model_validate(event("lt"), context={"vendors": VENDORS})
    assert "sk-secret" not in json.dumps(e.redacted())
    assert "sk-secret" not in repr(e)
    assert e.redacted()["target"]["service_key"] == "**********"
    wire = e.to_wire()
    assert "sk-secret" in wire
    back = GradeEvent.from_wire(wire, vendors=VENDORS)
    assert back == e
    ed = GradeEvent.model_validate(event("ed"), context={"vendors": VENDORS})
    assert "pt-secret" not in json.dumps(ed.redacted()) and "pt-secret" in ed.to_wire()


def test_item_keys_identify_the_gradebook_cell() -> None:
    keys = {d: GradeEvent.model_validate(event(d), context={"vendors": VENDORS}).item_key() for d in VENDORS}
    assert keys["ls"] == "31388494/100561235546"
    assert keys["lt"] == TARGETS["lt"]["line_item_id"]
    assert keys["ed"] == "c-1/a-1"
    assert keys["ti"] == TARGETS["ti"]["assignment_id"]


def test_json_schema_is_exported() -> None:
    schema = event_json_schema()
    assert schema["title"] == "GradeEvent"
    assert {"destination", "learner_id", "target"} <= set(schema["required"])
    assert "event_id" in schema["properties"] and "occurred_at" in schema["properties"]
