"""Vendor adapters, one module per vendor behind :class:`worker.adapters.base.Adapter`."""

from __future__ import annotations

import importlib

from producers.settings import Destination
from worker.adapters.base import Adapter, AdapterContext, DeliveryResult

#: vendor -> "module:class" of its adapter (imported on first use)
REGISTRY: dict[str, str] = {
    "learningstudio": "worker.adapters.learningstudio:LearningStudioAdapter",
    "ltiaas": "worker.adapters.ltiaas:LtiaasAdapter",
    "edlink": "worker.adapters.edlink:EdlinkAdapter",
    "thoughtindustries": "worker.adapters.thoughtindustries:ThoughtIndustriesAdapter",
    "lti_ags": "worker.adapters.lti_ags:LtiAgsAdapter",
}


def build_adapter(destination: Destination, ctx: AdapterContext) -> Adapter:
    """The adapter registered for the destination's vendor."""
    module, _, name = REGISTRY[destination.vendor].partition(":")
    cls = getattr(importlib.import_module(module), name)
    adapter: Adapter = cls(destination, ctx)
    return adapter


__all__ = ["REGISTRY", "Adapter", "AdapterContext", "DeliveryResult", "build_adapter"]
