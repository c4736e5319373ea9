"""Hostile input refused with a reason naming the field (issue 9, items 3-7): JSON that crashes the
standard parser, far-future times, booleans as numbers, control characters, conflicting duplicates."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from worker import safejson
from worker.events import GradeEvent, format_errors
from worker.ops.actions import FilterBody, parse_since
from worker.publish import InvalidEvents, validate_all
from worker.safetext import check_id, printable

VENDORS = {"lt": "ltiaas", "ls": "learningstudio"}


def event(**over: Any) -> dict[str, Any]:
    return {"destination": "lt", "learner_id": "learner-1", "score_given": 8, "score_maximum": 10,
            "target": {"line_item_id": "https://lms.example/li/1", "service_key": "sk-1"}, **over}


def errors_of(data: Any, **ctx: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        GradeEvent.model_validate(data, context={"vendors": VENDORS, **ctx})
    return format_errors(info.value)


# -- JSON the standard parser cannot take ----------------------------------------------------------------
def test_a_5000_digit_number_is_refused_at_its_field() -> None:
    data = safejson.loads('{"destination": "lt", "score_given": %s}' % ("9" * 5000))
    assert isinstance(data["score_given"], safejson.Refused)
    assert "score_given: a number with 5000 digits" in "\n".join(errors_of({**event(), **data}))


def test_nan_and_infinity_are_refused_at_their_field() -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        data = safejson.loads('{"score_given": ' + literal + "}")
        assert errors_of({**event(), **data}) == [f"score_given: {literal} is not a number (must be a finite number)"]


def test_5000_levels_of_nesting_raise_a_clean_error_naming_field_and_item() -> None:
    deep = '{"a":' * 5000 + "1" + "}" * 5000
    with pytest.raises(safejson.JSONInputError) as single:
        safejson.loads('{"destination": "lt", "metadata": ' + deep + "}")
    assert (single.value.index, single.value.field) == (None, "metadata")
    with pytest.raises(safejson.JSONInputError) as batch:
        safejson.loads('[{"learner_id": "x"}, {"target": %s}]' % ("[" * 5000 + "]" * 5000))
    assert (batch.value.index, batch.value.field) == (1, "target")
    with pytest.raises(safejson.JSONInputError, match="nested too deeply"):
        safejson.loads("[" * 40 + "]" * 40)  # parses, but deeper than MAX_DEPTH
    tricky = '{"comment": "[[[[{{ \\" [[", "a\\"b": 1, "metadata": ' + "[" * 5000 + "]" * 5000 + "}"
    with pytest.raises(safejson.JSONInputError) as strings:  # brackets and quotes inside strings do not count
        safejson.loads(tricky)
    assert strings.value.field == "metadata"
    assert safejson.loads('{"comment": "' + "[" * 5000 + '"}') == {"comment": "[" * 5000}


def test_deep_metadata_given_as_python_objects_is_refused_before_pydantic_recurses() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    assert errors_of(event(metadata=deep)) == ["metadata: nested too deeply (at most 8 levels)"]


def test_malformed_json_and_bad_utf8_are_json_input_errors() -> None:
    for raw in (b"{", b"\xff\xfe", b'{"a": 1,}'):
        with pytest.raises(safejson.JSONInputError):
            safejson.loads(raw)


# -- times, numbers, ids ----------------------------------------------------------------------------------
def test_occurred_at_beyond_the_skew_is_refused_and_the_skew_comes_from_the_context() -> None:
    [msg] = errors_of(event(occurred_at="9999-12-31T00:00:00Z"))
    assert msg.startswith("occurred_at: is more than 300 s in the future")
    soon = (datetime.now(UTC) + timedelta(seconds=120)).isoformat()
    GradeEvent.model_validate(event(occurred_at=soon), context={"vendors": VENDORS})  # within 5 min
    assert errors_of(event(occurred_at=soon), max_future_skew=60)[0].startswith("occurred_at: is more than 60 s")
    far = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    stored = GradeEvent.model_validate(event(occurred_at=far), context={"vendors": VENDORS, "max_future_skew": None})
    assert GradeEvent.from_wire(stored.to_wire(), vendors=VENDORS).occurred_at == stored.occurred_at


@pytest.mark.parametrize("field", ["score_given", "score_maximum", "schema_version"])
def test_booleans_are_not_numbers(field: str) -> None:
    assert f"{field}: must be a number, not a boolean" in errors_of(event(**{field: True}))


def test_a_boolean_byte_in_a_file_attachment_is_refused() -> None:
    msgs = errors_of(event(attachments=[{"type": "file", "title": "t", "data": [1, True]}]))
    assert msgs == ["attachments.0.data.1: Input should be a valid integer"]


@pytest.mark.parametrize(("over", "field"), [
    ({"learner_id": "bob\x1b[2J"}, "learner_id"),
    ({"learner_id": "bob\u202eevil"}, "learner_id"),
    ({"destination": "lt\x07"}, "destination"),
    ({"letter_grade": "A\x1b]0;owned\x07"}, "letter_grade"),
    ({"comment": "fine\nbut \x1b[31mred"}, "comment"),
    ({"metadata": {"k\x00ey": 1}}, "metadata"),
    ({"destination": "ls", "target": {"course_id": "c\x9b1", "item_id": "i"}}, "target.course_id"),
])
def test_control_characters_are_refused_in_ids_and_labels(over: dict[str, Any], field: str) -> None:
    msgs = errors_of(event(**over))
    assert any(m.startswith(f"{field}: ") and "control characters" in m for m in msgs), msgs


def test_a_multi_line_comment_is_still_accepted() -> None:
    e = GradeEvent.model_validate(event(comment="line one\r\n\tline two"), context={"vendors": VENDORS})
    assert e.comment == "line one\r\n\tline two"


def test_printable_shows_escapes_instead_of_running_them() -> None:
    assert printable("a\x1b[2Jb\x07\u202ec\nd") == "a\\x1b[2Jb\\x07\\u202ec\\x0ad"
    assert printable(None) == "" and printable("plain ü") == "plain ü"
    assert check_id("ok") == "ok"
    with pytest.raises(ValueError, match=r"found \\x1b"):
        check_id("a\x1b")


# -- one event id, two contents ------------------------------------------------------------------------------
def test_the_same_event_id_with_different_content_refuses_the_batch() -> None:
    eid = str(uuid.uuid4())
    with pytest.raises(InvalidEvents) as info:
        validate_all([event(event_id=eid), event(event_id=eid, score_given=9)], vendors=VENDORS)
    assert list(info.value.errors) == [1]
    assert info.value.errors[1][0].startswith(f"event_id: {eid} is used by an earlier item (0)")
    same = validate_all([event(event_id=eid), event(event_id=eid)], vendors=VENDORS)  # identical: fine
    assert [str(e.event_id) for e in same] == [eid, eid]


# -- dead-letter filters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e400", "1e23", float("nan"), float("inf"), True,
                                   "99999999999999999999999d"])
def test_since_refuses_non_finite_and_absurd_values(value: Any) -> None:
    with pytest.raises(ValueError, match="since:"):
        parse_since(value)
    with pytest.raises(ValidationError):
        FilterBody.model_validate_json(json.dumps({"since": value}) if not isinstance(value, float)
                                       else '{"since": %s}' % ("NaN" if value != value else "Infinity"))
    with pytest.raises(ValueError):
        FilterBody(since=value).to_filter()
