"""``GET /.well-known/jwks.json``: the public keys of every destination whose vendor publishes a JWKS
(the vendor table's ``publishes_jwks``), for platforms.

A platform registered with gradesync's JWKS URL fetches this to verify the client assertions the worker
signs. It is unauthenticated (it holds only public keys) and cacheable for five minutes. Each
destination contributes its signing key and its ``rotation_keys`` (the next key before a switch, the
retired one after it), de-duplicated by ``kid``.

The web app need not hold the tool's private keys (in the Kubernetes manifests it holds no vendor
credential): every worker that builds such a destination's adapter publishes the public halves in the shared
cache (:func:`worker.adapters.lti_jwks.publish_public_keys`). For each ``kid`` the destinations file
names, this endpoint serves the key it can parse itself, or else the one the workers published — after
checking that the published JWK's thumbprint is that ``kid``.
"""

from __future__ import annotations

from typing import TypeGuard

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from worker.adapters.base import Cache
from worker.adapters.lti_jwks import NAMESPACE, local_keys, published_jwk
from worker.registry.lazy import vendors_of
from worker.settings import Destination, Settings
from worker.vendors import spec
from worker.vendors.lti import LtiAgsDestination

CACHE_CONTROL = "public, max-age=300"
log = structlog.get_logger("gradesync.jwks")


def publishes_jwks(d: Destination) -> TypeGuard[LtiAgsDestination]:
    """Does the destination's vendor publish the tool's keys (the vendor table's ``publishes_jwks``)?"""
    row = spec(d.vendor)
    return row is not None and row.publishes_jwks and isinstance(d, LtiAgsDestination)


def document(settings: Settings, cache: Cache | None) -> dict[str, list[dict[str, str]]]:
    """The JWK Set: per ``kid`` named in the file, the local key or else the one a worker published."""
    seen: dict[str, dict[str, str]] = {}
    dests = settings.destinations()
    for name, vendor in sorted(vendors_of(dests).items()):
        row = spec(vendor)
        if row is None or not row.publishes_jwks:  # decided without building the model (thousands of them)
            continue
        d = dests.get(name)
        if d is None or not publishes_jwks(d):
            continue
        for kid, key in local_keys(d):
            if kid in seen:
                continue
            jwk = key.jwk() if key is not None else None
            if jwk is None and cache is not None:
                jwk = published_jwk(kid, cache.get_json(NAMESPACE, kid))
            if jwk is None:
                log.warning("jwks_key_missing", destination=name, kid=kid,
                            hint="no worker has published it yet and this process cannot read it")
                continue
            seen[kid] = jwk
    return {"keys": list(seen.values())}


def jwks_router(settings: Settings, cache: Cache | None = None) -> APIRouter:
    router = APIRouter(tags=["lti"])

    @router.get("/.well-known/jwks.json", summary="The tool's public keys (LTI 1.3 JWKS)")
    def published_jwks() -> JSONResponse:
        return JSONResponse(document(settings, cache), headers={"Cache-Control": CACHE_CONTROL})

    return router
