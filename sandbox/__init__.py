"""Faithful simulators of the five vendor APIs, for the demo, the tests and the benchmarks.

``gradesync sandbox`` serves all five in one process, one port each.
"""

from __future__ import annotations

import importlib
from typing import Any

from sandbox.base import Running, SandboxApp, start
from worker.vendors import BY_NAME, TABLE, VENDORS

#: default port of each simulator (the vendor table's ``sandbox_port``)
DEFAULT_PORTS: dict[str, int] = {row.name: row.sandbox_port for row in TABLE}


def simulator(vendor: str) -> type[SandboxApp]:
    """The simulator class of ``vendor`` (the vendor table's ``simulator``)."""
    module, _, cls = BY_NAME[vendor].simulator.partition(":")
    klass: type[SandboxApp] = getattr(importlib.import_module(module), cls)
    return klass


#: credentials the simulators accept by default (the demo's destinations use the same)
DEMO_CREDENTIALS: dict[str, dict[str, str]] = {row.name: simulator(row.name).DEMO_CREDENTIALS for row in TABLE}


def make_app(vendor: str, **credentials: Any) -> SandboxApp:
    """A simulator of ``vendor`` accepting ``credentials`` (default: :data:`DEMO_CREDENTIALS`)."""
    klass = simulator(vendor)
    return klass(**{**klass.DEMO_CREDENTIALS, **credentials})


def serve_all(host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> dict[str, Running]:
    """Start all five simulators (``ports``: vendor -> port, 0 for a free one)."""
    chosen = {**DEFAULT_PORTS, **(ports or {})}
    return {vendor: start(make_app(vendor), host, chosen[vendor]) for vendor in VENDORS}


__all__ = ["DEFAULT_PORTS", "DEMO_CREDENTIALS", "Running", "SandboxApp", "make_app", "serve_all", "simulator",
           "start"]


def destinations_toml(urls: dict[str, str], names: dict[str, str], secret_envs: dict[str, str], *,
                      timeout: float, max_attempts: int, retry_base_delay: float, retry_max_delay: float,
                      lti_kid: str | None = None) -> str:
    """A destinations file pointing one destination per vendor at the simulators (demo and tests).

    ``urls``, ``names`` and ``secret_envs`` map each vendor to its simulator URL, destination name and
    the environment variable that holds its secret (the simulators accept :data:`DEMO_CREDENTIALS`).
    Vendors missing from ``names`` are left out. ``lti_ags`` needs ``lti_kid``, the kid of the tool key
    whose PEM is in its secret variable (see :mod:`sandbox.lti_demo`).
    """
    policy = (f"timeout = {timeout}\nmax_attempts = {max_attempts}\nretry_base_delay = {retry_base_delay}\n"
              f"retry_max_delay = {retry_max_delay}\n")
    return "".join(
        f'[destinations.{names[v]}]\nvendor = "{v}"\nbase_url = "{urls[v]}"\n'
        f"{simulator(v).destination_keys(urls[v], secret_envs.get(v, ''), lti_kid=lti_kid)}{policy}\n"
        for v in VENDORS if v in names
    )
