"""The ops app's outermost layer (pure ASGI, so it runs before FastAPI reads a single body byte):

1. **Who is asking.** The client address, scheme and public host come from ``X-Forwarded-*`` only when
   the TCP peer is a trusted proxy (:class:`worker.ops.auth.TrustedProxies`); the result replaces
   ``scope["client"]`` / ``scope["scheme"]`` and is kept as ``request.state.origin`` for the dashboard's
   ``Origin`` check.
2. **Authenticate first.** ``/v1/*`` needs the Bearer token and ``/ui/api/*`` a live session *before* the
   body is read: an unauthenticated 78 MB upload is answered 401 after its headers, never buffered.
   A client over the failed-authentication limit gets 429 + ``Retry-After`` (also ``POST /login``).
3. **Body limit on every route.** A ``Content-Length`` over the route's limit is refused at once; a
   chunked body is counted as it streams and refused (:class:`BodyLimitExceeded`, 413) the moment it
   passes the limit. ``POST /v1/events`` and the dead-letter actions may carry ``GRADESYNC_MAX_BODY_BYTES``;
   every other route :data:`SMALL_BODY` (a login form, a logout form, nothing at all for a GET).

The FastAPI dependencies (:class:`worker.ops.api.BearerAuth`, the dashboard's session check) still run
behind this: this layer refuses early and cheaply, they keep each route correct on its own.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.ops.auth import AuthLimiter, TrustedProxies

#: the body limit of every route that takes no JSON document (login and logout forms, GETs)
SMALL_BODY = 8192
_CHALLENGE = 'Bearer realm="gradesync"'
#: on every answer (a pure-ASGI layer rather than a BaseHTTPMiddleware, which would wrap the body stream
#: in a task group and turn the 413 of :class:`BodyLimitExceeded` into FastAPI's generic 400)
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"))


class BodyLimitExceeded(HTTPException):
    """The request body passed its route's limit while it was being read (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes", headers={"Connection": "close"})
        self.limit = limit


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def body_limit_body(path: str, limit: int) -> dict[str, Any]:
    """The 413 document: ``POST /v1/events`` answers in its ErrorList shape, the rest with ``detail``."""
    message = f"request body exceeds {limit} bytes"
    if path.rstrip("/") == "/v1/events":
        return {"errors": [{"index": None, "field": "(body)", "message": message}]}
    return {"detail": message}


class Guard:
    def __init__(self, app: ASGIApp, *, proxies: TrustedProxies, limiter: AuthLimiter | None, token: str | None,
                 session_ok: Callable[[str | None], bool], large_body: int) -> None:
        self.app = app
        self.proxies = proxies
        self.limiter = limiter
        self._token = token.encode() if token is not None else None
        self.session_ok = session_ok
        self.large_body = large_body

    def limit_for(self, method: str, path: str) -> int:
        if method in ("POST", "PUT", "PATCH") and (path.startswith("/v1/") or path.startswith("/ui/api/")):
            return self.large_body
        return SMALL_BODY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        peer = scope["client"][0] if scope.get("client") else ""
        origin = self.proxies.resolve(peer, scope.get("scheme", "http"), headers)
        scope = {**scope, "client": (origin.client, scope["client"][1] if scope.get("client") else 0),
                 "scheme": origin.scheme, "state": {**scope.get("state", {}), "origin": origin}}
        path, method = scope["path"], scope["method"]
        limit = self.limit_for(method, path)
        refusal = self._authenticate(method, path, headers, origin.client)
        declared = headers.get("content-length", "")
        if refusal is not None:
            status, body, extra = refusal
            if declared.isdigit() and int(declared) <= SMALL_BODY:
                await _drain(receive)  # a small form: read it, so the client gets the answer, not a reset
            await self._answer(scope, receive, send, status, body, {"Connection": "close", **extra})
            return
        if declared.isdigit() and int(declared) > limit:
            await self._answer(scope, receive, send, 413, body_limit_body(path, limit), {"Connection": "close"})
            return
        await self.app(scope, _limited(receive, limit), _with_security_headers(send))

    def _authenticate(self, method: str, path: str, headers: dict[str, str],
                      client: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        bearer = path == "/v1" or path.startswith("/v1/")
        login = method == "POST" and path == "/login"
        if self._token is None:  # insecure_dev without a token (warned at start-up)
            return None
        if (bearer or login) and self.limiter is not None:
            wait = self.limiter.retry_after(client)
            if wait is not None:
                self.limiter.rate_limited(client)
                return 429, {"detail": f"too many failed authentications from {client}; try again in {wait} s"}, \
                    {"Retry-After": str(wait)}
        if bearer:
            scheme, _, credential = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not credential:
                return 401, {"detail": "missing Bearer token (Authorization: Bearer <GRADESYNC_API_TOKEN>)"}, \
                    {"WWW-Authenticate": _CHALLENGE}
            if not hmac.compare_digest(credential.strip().encode(), self._token):
                if self.limiter is not None:
                    self.limiter.failed(client, "bearer")
                return 401, {"detail": "invalid token"}, \
                    {"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'}
        if path.startswith("/ui/api/"):
            cookie = cookie_parser(headers.get("cookie", "")).get("gradesync_session")
            if not self.session_ok(cookie):
                return 401, {"detail": "not logged in"}, {}
        return None

    @staticmethod
    async def _answer(scope: Scope, receive: Receive, send: Send, status: int, body: dict[str, Any],
                      headers: dict[str, str]) -> None:
        response = JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store", **headers})
        await response(scope, receive, _with_security_headers(send))


def _with_security_headers(send: Send) -> Send:
    """``send`` adding :data:`SECURITY_HEADERS` to every response that does not set them itself."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def _drain(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`BodyLimitExceeded` once more than ``limit`` body bytes arrived."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyLimitExceeded(limit)
        return message

    return wrapped
