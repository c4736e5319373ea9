"""``GET /.well-known/jwks.json``: the public keys of every ``lti_ags`` destination, for platforms.

A platform registered with gradesync's JWKS URL fetches this to verify the client assertions the worker
signs. It is unauthenticated (it holds only public keys) and cacheable for five minutes. Each
destination contributes its signing key and its ``rotation_keys`` (the next key before a switch, the
retired one after it), de-duplicated by ``kid``.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from producers.lti_keys import KeyProblem, ToolKey, jwks, load_key
from producers.settings import LtiAgsDestination, Settings

CACHE_CONTROL = "public, max-age=300"
log = structlog.get_logger("gradesync.jwks")


def tool_keys(settings: Settings) -> list[ToolKey]:
    """The public keys to publish (signing keys first), skipping keys whose variable is not set."""
    keys: list[ToolKey] = []
    for name, d in sorted(settings.destinations().items()):
        if not isinstance(d, LtiAgsDestination):
            continue
        if d.missing_secrets():  # published without it, the platform refuses that destination's tokens
            log.warning("jwks_key_missing", destination=name, missing=", ".join(d.missing_secrets()))
        if d.private_key is not None:
            keys.append(load_key(d.private_key.get_secret_value(), kid=d.kid))
        for rk in d.rotation_keys:
            if rk.key is not None:
                try:
                    keys.append(load_key(rk.key.get_secret_value(), kid=rk.kid, require_private=False))
                except KeyProblem:  # the settings validator already refused it; never here
                    continue
    return keys


def jwks_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["lti"])
    document = jwks(tool_keys(settings))

    @router.get("/.well-known/jwks.json", summary="The tool's public keys (LTI 1.3 JWKS)")
    def published_jwks() -> JSONResponse:
        return JSONResponse(document, headers={"Cache-Control": CACHE_CONTROL})

    return router
