"""Faithful simulators of the five vendor APIs, for the demo, the tests and the benchmarks.

``gradesync sandbox`` serves all five in one process, one port each.
"""

from __future__ import annotations

import importlib
from typing import Any

from producers.vendors import TABLE
from sandbox.base import Running, SandboxApp, start

#: default port of each simulator (the vendor table's ``sandbox_port``)
DEFAULT_PORTS: dict[str, int] = {row.name: row.sandbox_port for row in TABLE}

#: credentials the simulators accept by default (the demo's destinations use the same)
DEMO_CREDENTIALS: dict[str, dict[str, str]] = {
    "learningstudio": {
        "application_id": "demo-application-id",
        "consumer_key": "demo-consumer-key",
        "shared_secret": "demo-secret-0016",  # AES-CMAC key: 16, 24 or 32 bytes
    },
    "ltiaas": {"api_key": "demo-ltiaas-api-key", "service_key": "demo-service-key", "ltik": "demo-ltik"},
    "edlink": {"integration_token": "demo-edlink-integration-token", "person_token": "demo-person-token"},
    "thoughtindustries": {"api_key": "demo-ti-api-key"},
    # the tool's key pair is generated per run (sandbox.lti_demo); the platform gets its JWKS
    "lti_ags": {"client_id": "demo-lti-client-id", "deployment_id": "demo-deployment-1"},
}

#: vendor -> "module:class" of its simulator (the vendor table's ``simulator``)
_CLASSES = {row.name: row.simulator for row in TABLE}


def make_app(vendor: str, **credentials: Any) -> SandboxApp:
    """A simulator of ``vendor`` accepting ``credentials`` (default: :data:`DEMO_CREDENTIALS`)."""
    module, _, cls = _CLASSES[vendor].partition(":")
    klass = getattr(importlib.import_module(module), cls)
    creds = {**DEMO_CREDENTIALS[vendor], **credentials}
    app: SandboxApp = klass(**creds)
    return app


def serve_all(host: str = "127.0.0.1", ports: dict[str, int] | None = None) -> dict[str, Running]:
    """Start all five simulators (``ports``: vendor -> port, 0 for a free one)."""
    chosen = {**DEFAULT_PORTS, **(ports or {})}
    return {vendor: start(make_app(vendor), host, chosen[vendor]) for vendor in _CLASSES}


__all__ = ["DEFAULT_PORTS", "DEMO_CREDENTIALS", "Running", "SandboxApp", "make_app", "serve_all", "start"]


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
    ls = DEMO_CREDENTIALS["learningstudio"]
    extra = {
        "learningstudio": f'application_id = "{ls["application_id"]}"\nconsumer_key = "{ls["consumer_key"]}"\n'
                          f'shared_secret_env = "{secret_envs.get("learningstudio")}"\n',
        "ltiaas": f'api_key_env = "{secret_envs.get("ltiaas")}"\n',
        "edlink": f'integration_token_env = "{secret_envs.get("edlink")}"\n',
        "thoughtindustries": f'api_key_env = "{secret_envs.get("thoughtindustries")}"\n',
        "lti_ags": f'client_id = "{DEMO_CREDENTIALS["lti_ags"]["client_id"]}"\n'
                   f'token_url = "{urls.get("lti_ags")}/login/oauth2/token"\n'
                   f'private_key_env = "{secret_envs.get("lti_ags")}"\nkid = "{lti_kid}"\n',
    }
    return "".join(
        f'[destinations.{names[v]}]\nvendor = "{v}"\nbase_url = "{urls[v]}"\n{extra[v]}{policy}\n'
        for v in _CLASSES if v in names
    )
