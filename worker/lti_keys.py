"""The tool's RSA keys for LTI 1.3 service auth: parse a PEM, name it (``kid``), publish it (JWK).

A key's ``kid`` is its RFC 7638 JWK thumbprint (base64url SHA-256 of the canonical public JWK), which is
what ``gradesync keys generate-lti`` prints. Tying the ``kid`` to the key makes "the configured ``kid``
belongs to this key" checkable: ``config check`` and the worker refuse a destinations file whose key and
``kid`` were swapped or mistyped during a rotation, instead of letting the platform refuse every token
request later.

Used by the settings validators (so every process refuses the same file), the adapter (signing), the
JWKS endpoint of ``gradesync serve`` and the CLI.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

MIN_RSA_BITS = 2048


class KeyProblem(ValueError):
    """The PEM is not a usable RSA key for RS256, or does not match its ``kid``."""


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk_members(public: rsa.RSAPublicKey) -> dict[str, str]:
    """The required members of the RSA public JWK (``e``, ``kty``, ``n``), the thumbprint's input."""
    numbers = public.public_numbers()
    return {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}


def thumbprint(public: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    canonical = json.dumps(public_jwk_members(public), separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class ToolKey:
    """One of the tool's keys: its ``kid``, its public half, and its private half when we hold it."""

    kid: str
    public: rsa.RSAPublicKey
    private: rsa.RSAPrivateKey | None = None

    def jwk(self) -> dict[str, str]:
        """The public JWK as published at ``/.well-known/jwks.json``."""
        return {**public_jwk_members(self.public), "kid": self.kid, "alg": "RS256", "use": "sig"}

    def private_pem(self) -> bytes:
        if self.private is None:
            raise KeyProblem(f"key {self.kid!r} has no private half")
        return self.private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_key(pem: str, *, kid: str | None = None, require_private: bool = True) -> ToolKey:
    """Parse a PEM (PKCS#8 / PKCS#1 private key, or a public key unless ``require_private``).

    Raises :class:`KeyProblem` when it does not parse, is not RSA, is shorter than 2048 bits or its
    thumbprint is not ``kid`` (when given). Messages never include the key material.
    """
    data = pem.strip().encode("utf-8")
    private: rsa.RSAPrivateKey | None = None
    key: Any
    if b"PRIVATE KEY" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise KeyProblem(f"the private key does not parse as an unencrypted PEM ({type(exc).__name__})") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyProblem(f"the private key is {type(key).__name__.lstrip('_')}, not RSA (RS256 needs RSA)")
        private = key
        public = key.public_key()
    elif b"PUBLIC KEY" in data and not require_private:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise KeyProblem(f"the public key does not parse as PEM ({type(exc).__name__})") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise KeyProblem(f"the public key is {type(key).__name__.lstrip('_')}, not RSA (RS256 needs RSA)")
        public = key
    else:
        wanted = "an RSA private key PEM" if require_private else "an RSA private or public key PEM"
        raise KeyProblem(f"not {wanted} (no '-----BEGIN ... KEY-----' block)")
    if public.key_size < MIN_RSA_BITS:
        raise KeyProblem(f"the RSA key has {public.key_size} bits; at least {MIN_RSA_BITS} are required")
    actual = thumbprint(public)
    if kid is not None and kid != actual:
        raise KeyProblem(f"kid {kid!r} does not match the key (its RFC 7638 thumbprint is {actual!r})")
    return ToolKey(kid=actual, public=public, private=private)


def generate_key(bits: int = 2048) -> ToolKey:
    """A new RSA key pair, named by its thumbprint."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return ToolKey(kid=thumbprint(private.public_key()), public=private.public_key(), private=private)


def jwks(keys: list[ToolKey]) -> dict[str, list[dict[str, str]]]:
    """A JWK Set of the public halves, de-duplicated by ``kid``, in the given order."""
    seen: dict[str, dict[str, str]] = {}
    for key in keys:
        seen.setdefault(key.kid, key.jwk())
    return {"keys": list(seen.values())}
