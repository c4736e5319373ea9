"""Reads of delivered grades, one module per vendor behind :class:`worker.readback.base.Reader`.

:data:`REGISTRY` maps each vendor to ``"module:Class"`` of its reader (imported on first use), as the
adapter registry does for deliveries.
"""

from __future__ import annotations

import importlib

from worker.adapters.base import AdapterContext
from worker.readback.base import Found, Reader, Unreadable
from worker.settings import Destination

REGISTRY: dict[str, str] = {
    "learningstudio": "worker.readback.learningstudio:LearningStudioReader",
    "ltiaas": "worker.readback.ltiaas:LtiaasReader",
    "edlink": "worker.readback.edlink:EdlinkReader",
    "thoughtindustries": "worker.readback.thoughtindustries:ThoughtIndustriesReader",
    "lti_ags": "worker.readback.lti_ags:LtiAgsReader",
}


def build_reader(destination: Destination, ctx: AdapterContext) -> Reader:
    """The reader registered for the destination's vendor."""
    module, _, name = REGISTRY[destination.vendor].partition(":")
    reader: Reader = getattr(importlib.import_module(module), name)(destination, ctx)
    return reader


__all__ = ["REGISTRY", "Found", "Reader", "Unreadable", "build_reader"]
