"""The normalized grade event: one vendor-neutral model every producer publishes.

``target`` is the vendor addressing of the grade. Its shape depends on the vendor of the event's
``destination``, looked up in the vendor map the caller gives (``context={"vendors": {...}}``, or
:meth:`GradeEvent.validate_for`), and is validated as that vendor's target model (the vendor table's
``target`` column, :mod:`worker.vendors`).

Per-event credentials (``service_key``, ``ltik``, ``person_token``) are :class:`SecretStr`: every
ordinary dump shows ``**********``; only :meth:`GradeEvent.to_wire` (the broker / store form) reveals
them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID, uuid4

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker.safejson import Refused, depth
from worker.safetext import check_id
from worker.vendors import BY_NAME, TABLE, TargetBase, tagged_union
from worker.vendors.base import Id, Label

SCHEMA_VERSION: Literal[1] = 1
MAX_METADATA_BYTES = 4096
#: nesting levels allowed inside ``metadata``
MAX_METADATA_DEPTH = 8
#: how far in the future ``occurred_at`` may be when no ``max_future_skew`` is given in the context
DEFAULT_MAX_FUTURE_SKEW = 300.0


class ActivityProgress(StrEnum):
    INITIALIZED = "Initialized"
    STARTED = "Started"
    IN_PROGRESS = "InProgress"
    SUBMITTED = "Submitted"
    COMPLETED = "Completed"


class GradingProgress(StrEnum):
    FULLY_GRADED = "FullyGraded"
    PENDING = "Pending"
    PENDING_MANUAL = "PendingManual"
    FAILED = "Failed"
    NOT_READY = "NotReady"


if TYPE_CHECKING:
    #: any vendor's target (statically: the base; at run time: the union tagged by ``vendor``)
    Target = TargetBase
else:
    Target = tagged_union(row.target for row in TABLE)


class LinkAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["link"]
    url: Label = Field(pattern=r"^https?://", max_length=2048)
    title: Annotated[str, Field(max_length=255), AfterValidator(check_id)] | None = None


class TextAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["text"]
    text: str = Field(min_length=1, max_length=100_000)
    title: Annotated[str, Field(max_length=255), AfterValidator(check_id)] | None = None


class FileAttachment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["file"]
    title: Label = Field(min_length=1, max_length=255)
    data: list[Annotated[StrictInt, Field(ge=0, le=255)]] = Field(max_length=65_536, description="byte array")

    @property
    def size(self) -> int:
        return len(self.data)


Attachment = Annotated[LinkAttachment | TextAttachment | FileAttachment, Field(discriminator="type")]


def _vendor_map(info: ValidationInfo) -> Mapping[str, str]:
    """The destination -> vendor map the validation was given (``context={"vendors": {...}}``).

    Explicit on purpose: which vendor a destination is comes from the caller's settings
    (:func:`worker.publish.validation_context`, :meth:`GradeEvent.validate_for`), never from a global.
    """
    ctx = info.context or {}
    if "vendors" not in ctx:
        raise ValueError("validation needs the destinations' vendor map: context={'vendors': {name: vendor}} "
                         "(or GradeEvent.validate_for)")
    vendors: Mapping[str, str] = ctx["vendors"]  # not copied: with 10 000 destinations a copy per field
    return vendors                                # validated cost more than the rest of the validation


def _future_skew(info: ValidationInfo) -> float | None:
    """Seconds ``occurred_at`` may lie in the future: the context's ``max_future_skew`` (None: unchecked,
    as when the worker re-reads a stored event), else :data:`DEFAULT_MAX_FUTURE_SKEW`."""
    ctx = info.context or {}
    if "max_future_skew" in ctx:
        value = ctx["max_future_skew"]
        return None if value is None else float(value)
    return DEFAULT_MAX_FUTURE_SKEW


class GradeEvent(BaseModel):
    """A normalized, vendor-neutral grade event."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="GradeEvent")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: UUID = Field(default_factory=uuid4, description="idempotency key; generated when absent")
    destination: Label = Field(min_length=1, max_length=100, description="a configured destination name")
    learner_id: Id
    occurred_at: AwareDatetime = Field(
        default_factory=lambda: datetime.now(UTC),
        validate_default=True,
        description="ISO 8601 with timezone; orders events of one learner+item; the AGS timestamp",
    )
    score_given: float | None = Field(None, ge=0)
    score_maximum: float | None = Field(None, gt=0, validate_default=True)
    letter_grade: Annotated[str, Field(max_length=20), AfterValidator(check_id)] | None = None
    comment: str | None = Field(None, max_length=10_000)
    activity_progress: ActivityProgress = ActivityProgress.COMPLETED
    grading_progress: GradingProgress = GradingProgress.FULLY_GRADED
    target: Target
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _tag_target(cls, data: Any, info: ValidationInfo) -> Any:
        """Tell the target which vendor model to validate against (from the destination)."""
        if isinstance(data, dict) and isinstance(data.get("target"), dict):
            vendor = _vendor_map(info).get(str(data.get("destination")))
            if vendor is not None:
                data = {**data, "target": {**data["target"], "vendor": vendor}}
        return data

    @field_validator("destination")
    @classmethod
    def _known_destination(cls, value: str, info: ValidationInfo) -> str:
        known = _vendor_map(info)
        if value not in known:
            names = sorted(known)
            listed = ", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20 else "")
            raise ValueError(f"unknown destination {value!r} (configured: {listed or 'none'})")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _utc_millis(cls, value: datetime, info: ValidationInfo) -> datetime:
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+14:00 has no UTC form
            raise ValueError("is out of range once converted to UTC") from None
        skew = _future_skew(info)
        if skew is not None and value > datetime.now(UTC) + timedelta(seconds=skew):
            raise ValueError(f"is more than {skew:g} s in the future (a future time would supersede every "
                             "later grade of this learner and item)")
        return value.replace(microsecond=(value.microsecond // 1000) * 1000)

    @field_validator("score_given", "score_maximum", "schema_version", mode="before")
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("comment")
    @classmethod
    def _comment_text(cls, value: str | None) -> str | None:
        return value if value is None else check_id(value, multiline=True)

    @field_validator("score_given", "score_maximum")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("score_maximum")
    @classmethod
    def _maximum_with_given(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None and info.data.get("score_given") is not None:
            raise ValueError("required when score_given is present")
        return value

    @field_validator("learner_id")
    @classmethod
    def _uuid_if_the_vendor_wants_one(cls, value: str, info: ValidationInfo) -> str:
        vendor = _vendor_map(info).get(str(info.data.get("destination")))
        row = BY_NAME.get(vendor) if vendor is not None else None
        if row is not None and row.learner_id_is_uuid:
            try:
                UUID(value)
            except ValueError:
                raise ValueError(f"must be a UUID for a {vendor} destination") from None
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _shallow(cls, value: Any) -> Any:
        """Checked before pydantic walks it: a 5 000-deep dict must not reach its recursion guard."""
        if isinstance(value, dict):
            if depth(value, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
                raise ValueError(f"nested too deeply (at most {MAX_METADATA_DEPTH} levels)")
            for key in value:
                if isinstance(key, str):
                    try:
                        check_id(key)
                    except ValueError as exc:
                        raise ValueError(f"key {key[:40]!r}: {exc}") from None
        return value

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_BYTES:
            raise ValueError(f"must serialize to at most {MAX_METADATA_BYTES} bytes of JSON")
        return value

    @classmethod
    def validate_for(
        cls, data: Any, vendors: Mapping[str, str], *, max_future_skew: float | None = DEFAULT_MAX_FUTURE_SKEW
    ) -> GradeEvent:
        """Validate ``data`` against ``vendors`` (destination name -> vendor, e.g. ``Settings.vendors()``)."""
        return cls.model_validate(data, context={"vendors": dict(vendors), "max_future_skew": max_future_skew})

    # -- forms -----------------------------------------------------------------------------------
    def to_wire(self) -> str:
        """JSON with secrets revealed: only for the broker, the store and the vendor call."""
        return self.model_dump_json(context={"reveal_secrets": True})

    @classmethod
    def from_wire(cls, raw: str | bytes, *, vendors: Mapping[str, str]) -> GradeEvent:
        """The stored event back (its ``occurred_at`` was checked against the clock when published)."""
        return cls.model_validate_json(raw, context={"max_future_skew": None, "vendors": dict(vendors)})

    def redacted(self) -> dict[str, Any]:
        """A JSON-ready dict with every secret masked (logs, status, pages)."""
        return self.model_dump(mode="json")

    @property
    def vendor(self) -> str:
        return self.target.vendor

    def item_key(self) -> str:
        return self.target.item_key()

    @property
    def occurred_at_iso(self) -> str:
        """``occurred_at`` as ISO 8601, UTC, millisecond precision (the AGS ``timestamp``)."""
        return self.occurred_at.isoformat(timespec="milliseconds")


def format_errors(exc: ValidationError) -> list[str]:
    """One ``field.path: reason`` line per problem, tag segments of tagged unions removed."""
    lines: list[str] = []
    seen: set[str] = set()
    tags = {*BY_NAME, "link", "text", "file"}
    dest_bad = any(e["loc"][:1] == ("destination",) for e in exc.errors())
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if str(p) not in tags]
        if dest_bad and err["type"] == "union_tag_not_found" and loc[:1] == ["target"]:
            continue  # the target can't be checked until the destination is known
        msg = err["msg"]
        if isinstance(err.get("input"), Refused):
            msg = err["input"].reason
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif msg.startswith("Assertion failed, "):
            msg = msg[len("Assertion failed, ") :]
        path = ".".join(loc[:8]) + (".…" if len(loc) > 8 else "")
        line = f"{path or '(event)'}: {msg}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


def event_json_schema() -> dict[str, Any]:
    """The exported JSON Schema of :class:`GradeEvent`."""
    schema = GradeEvent.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    shapes = "; ".join(f"{row.name} {row.target_shape}" for row in TABLE)
    schema["description"] = (
        f"A normalized grade event. `target` takes the shape of the destination vendor's target: {shapes}."
    )
    return schema
