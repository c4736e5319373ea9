"""Vendor adapters, one module per vendor behind :class:`worker.adapters.base.Adapter`.

The registry is the vendor table's ``adapter`` column (:mod:`worker.vendors`): each adapter module
is imported the first time a destination of its vendor is built.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from worker.adapters.base import Adapter, AdapterContext, DeliveryResult
from worker.settings import Destination
from worker.vendors import TABLE

#: vendor -> "module:class" of its adapter (imported on first use)
REGISTRY: dict[str, str] = {row.name: row.adapter for row in TABLE}


@cache
def _adapter_class(vendor: str) -> Any:
    module, _, name = REGISTRY[vendor].partition(":")
    return getattr(importlib.import_module(module), name)


def build_adapter(destination: Destination, ctx: AdapterContext) -> Adapter:
    """The adapter registered for the destination's vendor."""
    adapter: Adapter = _adapter_class(destination.vendor)(destination, ctx)
    return adapter


__all__ = ["REGISTRY", "Adapter", "AdapterContext", "DeliveryResult", "build_adapter"]
