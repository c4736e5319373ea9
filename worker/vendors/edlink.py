"""Edlink: its ``destinations.toml`` keys and its event target.

The adapter is :mod:`worker.adapters.edlink`. The target's optional ``person_token`` (the learner's own
token, needed to submit attachments) is a :class:`SecretStr`, masked in every dump.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_serializer

from worker.vendors.base import DestinationBase, Id, TargetBase, reveal


class EdlinkDestination(DestinationBase):
    vendor: Literal["edlink"]
    integration_token_env: str = Field(min_length=1)
    integration_token: SecretStr | None = None


class EdlinkTarget(TargetBase):
    vendor: Literal["edlink"] = Field("edlink", exclude=True, repr=False)
    class_id: Id
    assignment_id: Id
    person_token: SecretStr | None = Field(None, description="the learner's Edlink user token (secret)")

    _ser = field_serializer("person_token")(reveal)

    def item_key(self) -> str:
        return f"{self.class_id}/{self.assignment_id}"
