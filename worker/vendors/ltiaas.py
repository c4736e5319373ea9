"""LTIAAS (LTI Advantage as a Service): its ``destinations.toml`` keys and its event target.

The adapter is :mod:`worker.adapters.ltiaas`. The target carries one per-event credential, the
platform's service key or the launch's ltik; both are :class:`SecretStr` (masked in every dump).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator

from worker.vendors.base import DestinationBase, Label, TargetBase, reveal


class LtiaasDestination(DestinationBase):
    vendor: Literal["ltiaas"]
    api_key_env: str = Field(min_length=1)
    api_key: SecretStr | None = None


class LtiaasTarget(TargetBase):
    vendor: Literal["ltiaas"] = Field("ltiaas", exclude=True, repr=False)
    line_item_id: Label = Field(description="the full line item URL", max_length=2048)
    service_key: SecretStr | None = Field(None, description="SERVICE-AUTH-V1 service key (secret)")
    ltik: SecretStr | None = Field(None, description="LTIK-AUTH-V2 launch token (secret)")

    @field_validator("line_item_id")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) < 12:
            raise ValueError("must be the full line item URL (http:// or https://)")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> LtiaasTarget:
        if (self.service_key is None) == (self.ltik is None):
            raise ValueError("exactly one of service_key or ltik is required")
        return self

    _ser = field_serializer("service_key", "ltik")(reveal)

    def item_key(self) -> str:
        return self.line_item_id
