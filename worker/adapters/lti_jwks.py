"""The public halves of an LTI 1.3 destination's keys, published by workers in the shared cache so
that ``gradesync serve`` can serve the JWKS without holding any private key (see :mod:`worker.ops.jwks`)."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from worker.adapters.base import Cache
from worker.lti_keys import KeyProblem, ToolKey, load_key, thumbprint
from worker.vendors.lti import LtiAgsDestination

NAMESPACE = "lti_jwks"
#: how long a published public key stays without a worker publishing it again
PUBLISHED_TTL = 30 * 86_400


def local_keys(destination: LtiAgsDestination) -> list[tuple[str, ToolKey | None]]:
    """(kid, the key when this process can parse it) of the destination's signing and rotation keys."""
    out: list[tuple[str, ToolKey | None]] = []
    pems = [(destination.kid, destination.private_key)] + [(k.kid, k.key) for k in destination.rotation_keys]
    for kid, secret in pems:
        key = None
        if secret is not None:
            try:
                key = load_key(secret.get_secret_value(), kid=kid, require_private=False)
            except KeyProblem:  # the settings validator refuses it; never here
                key = None
        out.append((kid, key))
    return out


def publish_public_keys(destination: LtiAgsDestination, cache: Cache) -> None:
    """Store the public JWKs of the keys this worker holds, for the web app's JWKS endpoint."""
    for kid, key in local_keys(destination):
        if key is not None:
            cache.set_json(NAMESPACE, kid, key.jwk(), PUBLISHED_TTL)


def published_jwk(kid: str, jwk: Any) -> dict[str, str] | None:
    """The published JWK if it is an RSA public key whose thumbprint is ``kid``."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or "d" in jwk:
        return None
    try:
        numbers = rsa.RSAPublicNumbers(_b64_int(str(jwk["e"])), _b64_int(str(jwk["n"])))
        public = numbers.public_key()
    except (KeyError, ValueError):
        return None
    if thumbprint(public) != kid:
        return None
    return ToolKey(kid, public).jwk()


def _b64_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


