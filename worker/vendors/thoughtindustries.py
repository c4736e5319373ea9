"""Thought Industries: its ``destinations.toml`` keys and its event target.

The adapter is :mod:`worker.adapters.thoughtindustries`. The vendor identifies learners by UUID, so
the table row asks event validation to require a UUID ``learner_id``.
"""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import Field, SecretStr

from worker.vendors.base import DestinationBase, TargetBase


class ThoughtIndustriesDestination(DestinationBase):
    vendor: Literal["thoughtindustries"]
    api_key_env: str = Field(min_length=1)
    api_key: SecretStr | None = None
    mode: Literal["json", "jwt"] = "json"


class ThoughtIndustriesTarget(TargetBase):
    vendor: Literal["thoughtindustries"] = Field("thoughtindustries", exclude=True, repr=False)
    assignment_id: UUID

    def item_key(self) -> str:
        return str(self.assignment_id)
