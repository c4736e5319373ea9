"""The one table of vendors: one row per vendor, from which everything generic is built.

Settings (the ``Destination`` union, :data:`VENDORS`, :data:`SECRET_KEYS`, the documented rate limits),
event target validation, the adapter registry, secret masking, the CLI, the demo and the sandbox all
read :data:`TABLE`. Adding a vendor is one module here (its settings and target models), its adapter
module under ``worker/adapters/``, its simulator under ``sandbox/``, its tests, and one row below.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import Field

from worker.vendors.base import DestinationBase, TargetBase, VendorSpec
from worker.vendors.edlink import EdlinkDestination, EdlinkTarget
from worker.vendors.learningstudio import LearningStudioDestination, LearningStudioTarget
from worker.vendors.lti import LtiAgsDestination, LtiAgsTarget
from worker.vendors.ltiaas import LtiaasDestination, LtiaasTarget
from worker.vendors.thoughtindustries import ThoughtIndustriesDestination, ThoughtIndustriesTarget

TABLE: tuple[VendorSpec, ...] = (
    VendorSpec(
        "learningstudio", LearningStudioDestination, LearningStudioTarget,
        adapter="worker.adapters.learningstudio:LearningStudioAdapter",
        secrets={"shared_secret_env": "shared_secret"},
        simulator="sandbox.learningstudio:LearningStudioSandbox", sandbox_port=8801,
        target_shape="{course_id, item_id}",
    ),
    VendorSpec(
        "ltiaas", LtiaasDestination, LtiaasTarget,
        adapter="worker.adapters.ltiaas:LtiaasAdapter",
        secrets={"api_key_env": "api_key"},
        simulator="sandbox.ltiaas:LtiaasSandbox", sandbox_port=8802,
        target_shape="{line_item_id, service_key|ltik}",
    ),
    VendorSpec(
        "edlink", EdlinkDestination, EdlinkTarget,
        adapter="worker.adapters.edlink:EdlinkAdapter",
        secrets={"integration_token_env": "integration_token"},
        simulator="sandbox.edlink:EdlinkSandbox", sandbox_port=8803,
        target_shape="{class_id, assignment_id, person_token?}",
    ),
    # documented limits (../shared/reference/vendors.md): the standard plan allows 120/min, burst 20;
    # learners are identified by UUID
    VendorSpec(
        "thoughtindustries", ThoughtIndustriesDestination, ThoughtIndustriesTarget,
        adapter="worker.adapters.thoughtindustries:ThoughtIndustriesAdapter",
        secrets={"api_key_env": "api_key"},
        simulator="sandbox.thoughtindustries:ThoughtIndustriesSandbox", sandbox_port=8804,
        target_shape="{assignment_id} (UUID)",
        rate_limit_per_minute=120.0, burst=20, learner_id_is_uuid=True,
    ),
    # platforms fetch the tool's public keys from gradesync's /.well-known/jwks.json
    VendorSpec(
        "lti_ags", LtiAgsDestination, LtiAgsTarget,
        adapter="worker.adapters.lti_ags:LtiAgsAdapter",
        secrets={"private_key_env": "private_key"},
        simulator="sandbox.lti_ags:LtiAgsSandbox", sandbox_port=8805,
        target_shape="{line_item_url} or {lineitems_url, resource_link_id, resource_id?, tag?, label?, "
                     "score_maximum?}",
        publishes_jwks=True,
    ),
)

BY_NAME: dict[str, VendorSpec] = {row.name: row for row in TABLE}
VENDORS: tuple[str, ...] = tuple(BY_NAME)


def spec(vendor: str) -> VendorSpec | None:
    """The row of ``vendor`` (None for an unknown name)."""
    return BY_NAME.get(vendor)


def tagged_union(models: Iterable[type]) -> Any:
    """``Annotated[A | B | …, Field(discriminator="vendor")]`` of the table's models (a pydantic type)."""
    return Annotated[functools.reduce(operator.or_, models), Field(discriminator="vendor")]


__all__ = ["BY_NAME", "TABLE", "VENDORS", "DestinationBase", "TargetBase", "VendorSpec", "spec", "tagged_union"]
