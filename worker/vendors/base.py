"""What every vendor module builds on: the destination settings base, the target base, and the row
:class:`VendorSpec` of the one vendor table (:mod:`worker.vendors`).

A vendor contributes a :class:`DestinationBase` subclass (its ``destinations.toml`` keys) and a
:class:`TargetBase` subclass (the addressing of one grade at that vendor); everything generic —
settings, event validation, the adapter registry, secret masking, the CLI, the sandbox — is built
from the table's rows, so no generic module needs to know a vendor's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FieldSerializationInfo,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from worker.safetext import check_id

MASK = "**********"

Id = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S(.*\S)?$"), AfterValidator(check_id)]
#: short free text printed by operators' tools: no control characters
Label = Annotated[str, AfterValidator(check_id)]
Url = Annotated[str, Field(pattern=r"^https?://[^/?#\s]+[^\s]*$", max_length=2048)]


def reveal(value: SecretStr | None, info: FieldSerializationInfo) -> str | None:
    """A target's secret field: masked, unless dumped with ``context={"reveal_secrets": True}``."""
    if value is None:
        return None
    ctx = info.context or {}
    return value.get_secret_value() if ctx.get("reveal_secrets") else MASK


@dataclass(frozen=True)
class VendorSpec:
    """One row of the vendor table: everything generic code needs to know about a vendor."""

    #: the ``vendor`` value of ``destinations.toml`` (and of the target's tag)
    name: str
    #: its ``[destinations.<name>]`` settings model
    destination: type[DestinationBase]
    #: its event ``target`` model
    target: type[TargetBase]
    #: ``"module:Class"`` of its adapter (imported by the worker on first use)
    adapter: str
    #: each ``*_env`` key -> the credential field it resolves into
    secrets: Mapping[str, str]
    #: ``"module:Class"`` of its simulator (the sandbox package, never imported by the runtime), which also
    #: holds the vendor's demo credentials, demo destination and demo event
    simulator: str
    #: the documented rate limit (requests/minute) and burst, when the vendor documents one
    rate_limit_per_minute: float | None = None
    burst: int | None = None
    #: the vendor requires the event's ``learner_id`` to be a UUID
    learner_id_is_uuid: bool = False
    #: the vendor's platforms fetch the tool's public keys from ``/.well-known/jwks.json``
    publishes_jwks: bool = False
    #: the target's shape, for the exported JSON Schema's description
    target_shape: str = ""
    #: the default port of its simulator in ``gradesync sandbox``
    sandbox_port: int = 0


class TargetBase(BaseModel):
    """The vendor addressing of one grade; subclasses add ``vendor: Literal[<name>]`` (the tag)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: str

    def item_key(self) -> str:
        """What identifies the graded item, for the per learner+item stale guard."""
        raise NotImplementedError


class DestinationBase(BaseModel):
    """The keys every destination has; subclasses add ``vendor: Literal[<name>]`` and credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vendor: str
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    base_url: str
    timeout: float = Field(10.0, gt=0, le=300, description="seconds per HTTP request")
    max_attempts: int = Field(8, ge=1, le=100, description="total attempts before dead-lettering")
    retry_base_delay: float = Field(2.0, gt=0, le=86_400)
    retry_max_delay: float = Field(600.0, gt=0, le=7 * 86_400)
    requeue_rate: float = Field(10.0, gt=0, description="default events/second for a DLQ requeue")
    # flow control (worker/flow): the destination, not the single event, reacts to pressure
    rate_limit_per_minute: float | None = Field(
        None, ge=0,
        description="requests/minute shared by every worker (absent: the vendor's documented limit; 0: none)")
    burst: int | None = Field(None, ge=1, description="requests allowed at once above the rate (default: 1 s worth)")
    max_concurrency: int | None = Field(
        None, ge=1, description="threads of one worker process this destination may hold (default: half)")
    group: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
        description="dedicated worker group: its events go to the broker queue grades.<group> (absent: the "
                    "shared queue grades)")
    max_event_age: float = Field(7 * 86_400.0, gt=0, description="seconds a parked/waiting event may wait")
    breaker_failures: int = Field(5, ge=1, description="consecutive transient failures that open the breaker")
    breaker_cooldown: float = Field(30.0, gt=0, description="seconds open before the first probe")
    breaker_max_cooldown: float = Field(600.0, gt=0, description="cap of the growing cool-down")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("timeout")
    @classmethod
    def _fits_attempt(cls, value: float, info: ValidationInfo) -> float:
        """An attempt makes up to 4 requests and must end before the broker redelivers its message.

        ``attempt_time_limit`` (seconds) comes from the settings that read the file (the visibility
        timeout - 15): the worker, the server and ``gradesync config check`` refuse the same files.
        """
        limit = (info.context or {}).get("attempt_time_limit")
        if limit is not None and value * 4 > limit:
            raise ValueError(f"{value}s x 4 requests exceeds the attempt time limit ({limit}s = visibility "
                             "timeout - 15)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _vendor_rate_limit(cls, data: Any) -> Any:
        """An absent ``rate_limit_per_minute`` takes the vendor's documented limit; 0 means none."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        from worker.vendors import spec

        row = spec(str(data.get("vendor")))
        if "rate_limit_per_minute" not in data:
            data["rate_limit_per_minute"] = row.rate_limit_per_minute if row else None
            if data["rate_limit_per_minute"] is not None and "burst" not in data:
                data["burst"] = row.burst if row else None
        elif data["rate_limit_per_minute"] == 0:
            data["rate_limit_per_minute"] = None
        return data

    @model_validator(mode="after")
    def _delays(self) -> DestinationBase:
        if self.retry_max_delay < self.retry_base_delay:
            raise ValueError("retry_max_delay must be >= retry_base_delay")
        if self.breaker_max_cooldown < self.breaker_cooldown:
            raise ValueError("breaker_max_cooldown must be >= breaker_cooldown")
        return self

    @property
    def configured_burst(self) -> int:
        """Requests allowed at once above the rate: ``burst``, else 1 s worth of the rate."""
        if self.burst is not None:
            return self.burst
        rate = self.rate_limit_per_minute
        return max(1, int(rate / 60)) if rate else 1

    def secret(self, field_name: str) -> SecretStr | None:
        """The credential field ``field_name`` (None when its environment variable was not set)."""
        value = getattr(self, field_name, None)
        return value if isinstance(value, SecretStr) else None

    def missing_secrets(self) -> list[str]:
        """The ``*_env`` keys whose environment variable was not set."""
        from worker.vendors import spec

        row = spec(self.vendor)
        missing = []
        for env_key, field_name in (row.secrets if row else {}).items():
            if getattr(self, field_name) is None:
                missing.append(f"{env_key} (${getattr(self, env_key)})")
        return missing
