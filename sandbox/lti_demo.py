"""The LTI tool key of a demo or test run: generated once per process, never written to disk.

The worker reads its PEM from the destination's ``private_key_env`` variable; the platform simulator
gets the matching JWKS (directly, or from ``gradesync serve``'s ``/.well-known/jwks.json``).
"""

from __future__ import annotations

from functools import lru_cache

from worker.lti_keys import ToolKey, generate_key, jwks


@lru_cache(maxsize=1)
def demo_key() -> ToolKey:
    return generate_key()


def demo_pem() -> str:
    return demo_key().private_pem().decode("ascii")


def demo_jwks() -> dict[str, list[dict[str, str]]]:
    return jwks([demo_key()])
