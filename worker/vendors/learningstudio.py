"""Pearson LearningStudio: its ``destinations.toml`` keys and its event target.

The adapter is :mod:`worker.adapters.learningstudio`; requests are signed with OAuth 1.0a CMAC-AES
(:mod:`worker.adapters.oauth1_cmac`), whose key is the shared secret: AES takes only 16, 24 or 32
bytes, so any other length is refused when the file is read, not at the first delivery.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from worker.vendors.base import DestinationBase, Id, TargetBase


class LearningStudioDestination(DestinationBase):
    vendor: Literal["learningstudio"]
    application_id: str = Field(min_length=1)
    consumer_key: str = Field(min_length=1)
    shared_secret_env: str = Field(min_length=1)
    shared_secret: SecretStr | None = None

    @field_validator("shared_secret")
    @classmethod
    def _aes_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            size = len(value.get_secret_value().encode())
            if size not in (16, 24, 32):
                raise ValueError(f"the shared secret must be 16, 24 or 32 bytes (AES-CMAC key), got {size}")
        return value


class LearningStudioTarget(TargetBase):
    vendor: Literal["learningstudio"] = Field("learningstudio", exclude=True, repr=False)
    course_id: Id = Field(description="the LTI launch's context_id")
    item_id: Id = Field(description="the LTI launch's resource_link_id")

    def item_key(self) -> str:
        return f"{self.course_id}/{self.item_id}"
