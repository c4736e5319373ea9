"""The security half of the LTI 1.3 platform simulator: the token endpoint and bearer-token checks.

``POST /login/oauth2/token`` implements the 1EdTech Security Framework's client-credentials grant with a
JWT client assertion (RFC 7523), strictly:

* the body must be ``application/x-www-form-urlencoded`` with ``grant_type=client_credentials``,
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``, the assertion and a
  ``scope``;
* the assertion's header must be ``alg: RS256`` with a ``kid`` found in the tool's JWKS — given to the
  simulator (``jwks``) or fetched from the tool's JWKS URL (``jwks_url``, fetched again for an unknown
  ``kid``, as platforms do after a key rotation; a URL that does not answer is a ``503``);
* the signature must verify; ``iss`` = ``sub`` = the registered client id (else ``401 invalid_client``);
  ``aud`` must be the token URL as addressed (or the configured ``audience``); ``exp`` in the future and
  at most 5 minutes after ``iat``; ``iat`` not in the future; ``jti`` never seen before (else
  ``400 invalid_grant``);
* the scopes must be AGS scopes the registration allows (else ``400 invalid_scope``); the answer grants
  the allowed subset: ``{access_token, token_type: "Bearer", expires_in, scope}``.

:meth:`LtiPlatformAuth.bearer` checks an ``Authorization: Bearer`` token on the service routes: unknown or
expired → ``401``, lacking the route's scope → ``403``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
from jwt.algorithms import RSAAlgorithm

from sandbox.base import Request, Response, SandboxApp

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AGS = "https://purl.imsglobal.org/spec/lti-ags/scope/"
AGS_SCOPES = (f"{AGS}lineitem", f"{AGS}lineitem.readonly", f"{AGS}result.readonly", f"{AGS}score")
MAX_ASSERTION_LIFETIME = 300
LEEWAY = 5
TOKEN_PATH = "/login/oauth2/token"  # noqa: S105 - a path, not a secret


class JwksUnavailable(Exception):
    """The tool's JWKS URL could not be fetched (answered 503: the tool may retry)."""


def _oauth(status: int, error: str, description: str) -> Response:
    return Response(status, {"error": error, "error_description": description})


class LtiPlatformAuth(SandboxApp):
    """Token endpoint + bearer checks; the AGS simulator (:mod:`sandbox.lti_ags`) builds on it."""

    vendor = "lti_platform"

    def __init__(self, client_id: str, deployment_id: str = "1", jwks: dict[str, Any] | None = None,
                 jwks_url: str | None = None, audience: str | None = None) -> None:
        self.client_id = client_id
        self.deployment_id = deployment_id
        self.jwks: dict[str, Any] = jwks or {"keys": []}
        self.jwks_url = jwks_url
        self.audience = audience
        self.allowed_scopes: tuple[str, ...] = AGS_SCOPES
        self.token_lifetime = 3600
        #: token -> {scopes, expires_at}
        self.tokens: dict[str, dict[str, Any]] = {}
        #: jti -> exp (replay protection while the assertion could still be valid)
        self.seen_jti: dict[str, float] = {}
        self.assertions: list[dict[str, Any]] = []
        self.token_refusals: list[str] = []
        self.jwks_fetches = 0
        super().__init__()

    # -- configuration shared by the platform -------------------------------------------------------
    def configure_auth(self, spec: dict[str, Any]) -> None:
        if "jwks" in spec:
            if not isinstance(spec["jwks"], dict) or not isinstance(spec["jwks"].get("keys"), list):
                raise ValueError("jwks must be a JWK Set: {\"keys\": [...]}")
            self.jwks = spec["jwks"]
        if "jwks_url" in spec:
            self.jwks_url = spec["jwks_url"] or None
        if "audience" in spec:
            self.audience = spec["audience"] or None
        if "allowed_scopes" in spec:
            self.allowed_scopes = tuple(spec["allowed_scopes"] or AGS_SCOPES)
        if "token_lifetime" in spec:
            self.token_lifetime = int(spec["token_lifetime"])
        if spec.get("expire_tokens"):
            for token in self.tokens.values():
                token["expires_at"] = 0.0

    def clear_auth(self) -> None:
        self.tokens.clear()
        self.seen_jti.clear()
        self.assertions.clear()
        self.token_refusals.clear()
        self.allowed_scopes = AGS_SCOPES
        self.token_lifetime = 3600

    def auth_state(self) -> dict[str, Any]:
        return {"tokens_issued": len(self.tokens), "assertions": list(self.assertions),
                "token_refusals": list(self.token_refusals), "jwks_fetches": self.jwks_fetches,
                "allowed_scopes": list(self.allowed_scopes)}

    # -- the token endpoint ---------------------------------------------------------------------------
    def register_auth(self) -> None:
        self.route("POST", TOKEN_PATH)(self._token)

    def _refuse(self, status: int, error: str, description: str) -> Response:
        self.token_refusals.append(f"{error}: {description}")
        return _oauth(status, error, description)

    def _key_for(self, kid: str) -> Any | None:
        for _attempt in range(2):
            for jwk in self.jwks.get("keys", []):
                if isinstance(jwk, dict) and jwk.get("kid") == kid and jwk.get("kty") == "RSA":
                    if jwk.get("alg", "RS256") != "RS256":
                        return None
                    return RSAAlgorithm.from_jwk(json.dumps(jwk))
            if not self.jwks_url:
                return None
            try:
                fetched = httpx.get(self.jwks_url, timeout=5.0)  # unknown kid: the tool may have rotated
            except httpx.TransportError as exc:
                raise JwksUnavailable(f"the tool's JWKS URL does not answer ({type(exc).__name__})") from exc
            self.jwks_fetches += 1
            if fetched.status_code != 200:
                return None
            self.jwks = fetched.json()
        return None

    def _token(self, req: Request, _m: Any) -> Response:
        if (req.header("content-type") or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
            return self._refuse(400, "invalid_request", "the token request must be form-encoded")
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8"), keep_blank_values=True).items()}
        if form.get("grant_type") != "client_credentials":
            return self._refuse(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            return self._refuse(400, "invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion") or ""
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return self._refuse(401, "invalid_client", "the client assertion is not a JWT")
        if header.get("alg") != "RS256" or not header.get("kid"):
            return self._refuse(401, "invalid_client", "the client assertion must be RS256 with a kid")
        try:
            with self.lock:
                key = self._key_for(str(header["kid"]))
        except JwksUnavailable as exc:
            return self._refuse(503, "temporarily_unavailable", str(exc))
        if key is None:
            return self._refuse(401, "invalid_client", f"no RS256 key with kid {header['kid']!r} in the tool's JWKS")
        audience = self.audience or req.url
        try:
            claims = jwt.decode(assertion, key, algorithms=["RS256"], audience=audience, leeway=LEEWAY,
                                options={"require": ["iss", "sub", "aud", "iat", "exp", "jti"]})
        except jwt.InvalidSignatureError:
            return self._refuse(401, "invalid_client", "the client assertion's signature does not verify")
        except jwt.InvalidAudienceError:
            return self._refuse(400, "invalid_grant", f"the client assertion's aud must be {audience}")
        except jwt.ExpiredSignatureError:
            return self._refuse(400, "invalid_grant", "the client assertion has expired")
        except jwt.PyJWTError as exc:
            return self._refuse(400, "invalid_grant", f"the client assertion is invalid: {exc}")
        if claims["iss"] != self.client_id or claims["sub"] != self.client_id:
            return self._refuse(401, "invalid_client", "iss and sub must be the registered client id")
        now = time.time()
        if float(claims["exp"]) - float(claims["iat"]) > MAX_ASSERTION_LIFETIME:
            return self._refuse(400, "invalid_grant", "the client assertion may live at most 5 minutes")
        if float(claims["iat"]) > now + LEEWAY:
            return self._refuse(400, "invalid_grant", "the client assertion was issued in the future")
        requested = form.get("scope", "").split()
        unknown = [s for s in requested if s not in AGS_SCOPES]
        if not requested or unknown:
            return self._refuse(400, "invalid_scope", f"unknown scope(s): {' '.join(unknown) or '(none asked)'}")
        granted = [s for s in requested if s in self.allowed_scopes]
        if not granted:
            return self._refuse(400, "invalid_scope", "none of the requested scopes is allowed to this tool")
        with self.lock:
            self.seen_jti = {j: exp for j, exp in self.seen_jti.items() if exp + LEEWAY > now}
            if claims["jti"] in self.seen_jti:
                return self._refuse(400, "invalid_grant", "the client assertion's jti was already used")
            self.seen_jti[str(claims["jti"])] = float(claims["exp"])
            self.assertions.append({"header": header, "claims": claims})
            token = secrets.token_urlsafe(32)
            self.tokens[token] = {"scopes": granted, "expires_at": now + self.token_lifetime}
        return Response(200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime,
                              "scope": " ".join(granted)}, {"Cache-Control": "no-store"})

    # -- bearer checks on the service routes ------------------------------------------------------------
    def bearer(self, req: Request, *acceptable: str) -> Response | None:
        """None when the request carries a live token holding one of ``acceptable``, else the refusal."""
        scheme, _, token = (req.header("authorization") or "").partition(" ")
        with self.lock:
            record = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if record is None or record["expires_at"] <= time.time():
                return Response(401, {"errors": [{"message": "Invalid access token"}]},
                                {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            if not any(s in record["scopes"] for s in acceptable):
                return Response(403, {"errors": [{"message": f"Access token lacks scope {' or '.join(acceptable)}"}]},
                                {"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
        return None
