"""The operator dashboard at ``/``: one page (static HTML + JS, no build step, no template engine) fed by
small JSON endpoints under ``/ui/api``.

Login: the operator types the API token into a form; a correct token (compared in constant time) gets a
session cookie ``gradesync_session`` = ``v1.<session id>.<expiry>.<HMAC-SHA256>``, signed with a key derived
from the token (so changing the token ends every session), ``HttpOnly``, ``SameSite=Strict``, ``Secure``
behind HTTPS, valid 12 hours. The session id is also kept in Redis (:class:`worker.ops.auth.SessionStore`,
same lifetime): a cookie counts only while its id is there, so logging out ends the session server-side on
every replica. A wrong login token counts against the client's failed-authentication limit
(:class:`worker.ops.auth.AuthLimiter`, 429 when over it).

CSRF: every state-changing request (``POST``) must carry the session's CSRF token — an HMAC of the session
id — in the ``X-CSRF-Token`` header (or the ``csrf_token`` form field for the logout form), and, when the
browser sends an ``Origin``, it must be this server (its ``Host``, or the ``X-Forwarded-Host`` of a trusted
proxy only: :mod:`worker.ops.guard`). The page gets its CSRF token in a ``<meta>`` tag.

No secret is ever rendered: events come from :func:`worker.ops.views.event_view` (redacted), and the
token is never echoed back. Operator actions are audited with actor ``dashboard``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import secrets
import time
from pathlib import Path
from string import Template
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from worker.audit.api import add_audit_dashboard_routes
from worker.ops import actions
from worker.ops.auth import AuthLimiter, SessionStore
from worker.ops.destinations_api import add_dashboard_routes
from worker.ops.ingest import BodyTooLarge, read_body
from worker.ops.overview import OpsContext, overview_json
from worker.ops.views import event_view

HERE = Path(__file__).parent
COOKIE = "gradesync_session"
SESSION_TTL = 12 * 3600
CSRF_HEADER = "X-CSRF-Token"
_INSECURE_SID = "insecure-dev"

#: the dashboard pages load scripts and styles from /static only; nothing inline, nothing third-party
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Sessions:
    """Signed, stateless dashboard sessions and their CSRF tokens."""

    def __init__(self, token: str | None, store: SessionStore | None = None) -> None:
        self.token = token
        self.store = store
        secret = token.encode() if token is not None else secrets.token_bytes(32)
        self._key = hmac.new(secret, b"gradesync dashboard session key v1", hashlib.sha256).digest()

    @property
    def open(self) -> bool:
        """insecure_dev without a token: everyone is logged in."""
        return self.token is None

    def token_ok(self, given: str) -> bool:
        if self.token is None:
            return True
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + SESSION_TTL)
        sid = secrets.token_urlsafe(18)
        if self.store is not None:
            self.store.add(sid, SESSION_TTL)
        payload = f"v1.{sid}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def revoke(self, sid: str) -> None:
        if self.store is not None and not self.open:
            self.store.revoke(sid)

    def verify(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session id of a valid, unexpired cookie, else None."""
        if self.open:
            return _INSECURE_SID
        if not cookie or cookie.count(".") != 3:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        _version, sid, expires = payload.split(".")
        try:
            if int(expires) < (now or time.time()):
                return None
        except ValueError:
            return None
        if self.store is not None and not self.store.alive(sid):
            return None  # logged out (or Redis lost the session)
        return sid

    def csrf(self, sid: str) -> str:
        return self._sign(f"csrf.{sid}")

    def csrf_ok(self, sid: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self.csrf(sid).encode())


def _template(name: str) -> Template:
    return Template((HERE / "templates" / name).read_text(encoding="utf-8"))


def static_app() -> StaticFiles:
    return StaticFiles(directory=HERE / "static")


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    resolved = getattr(request.state, "origin", None)  # set by worker.ops.guard (trusted proxies only)
    host = resolved.host if resolved is not None else request.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc == host


def dashboard_router(ctx: OpsContext, token: str | None, *, sessions: Sessions | None = None,
                     limiter: AuthLimiter | None = None) -> APIRouter:
    sessions = sessions or Sessions(token)
    router = APIRouter(include_in_schema=False)
    page, login_page = _template("dashboard.html"), _template("login.html")

    def session(request: Request) -> str:
        sid = sessions.verify(request.cookies.get(COOKIE))
        if sid is None:
            raise HTTPException(401, "not logged in")
        return sid

    def csrf(request: Request, sid: str = Depends(session)) -> str:
        if not _same_origin(request):
            raise HTTPException(403, "cross-origin request refused")
        if not sessions.csrf_ok(sid, request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, "missing or invalid CSRF token")
        return sid

    def login_response(error: str = "", status: int = 200) -> HTMLResponse:
        css = "error" if error else "error hidden"
        body = login_page.substitute(error=html.escape(error), error_class=css)
        return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)

    @router.get("/")
    def index(request: Request) -> Response:
        sid = sessions.verify(request.cookies.get(COOKIE))
        if sid is None:
            return RedirectResponse("/login", status_code=303, headers={"Cache-Control": "no-store"})
        body = page.substitute(csrf_token=html.escape(sessions.csrf(sid)),
                               insecure_class="insecure" if sessions.open else "insecure hidden")
        return HTMLResponse(body, headers=PAGE_HEADERS)

    @router.get("/login")
    def login_form(request: Request) -> Response:
        if sessions.verify(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse("/", status_code=303)
        return login_response()

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            return login_response("Cross-origin login refused.", 403)
        try:
            raw = await read_body(request, 8192)
        except BodyTooLarge:
            return login_response("Request too large.", 413)
        given = parse_qs(raw.decode("utf-8", errors="replace")).get("token", [""])[0].strip()
        if not given or not sessions.token_ok(given):
            if limiter is not None and not sessions.open:
                limiter.failed(request.client.host if request.client else "", "login")
            return login_response("That token is not valid.", 401)
        response = RedirectResponse("/", status_code=303, headers={"Cache-Control": "no-store"})
        response.set_cookie(COOKIE, sessions.issue(), max_age=SESSION_TTL, path="/", httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        sid = sessions.verify(request.cookies.get(COOKIE))
        if sid is None:
            return RedirectResponse("/login", status_code=303)
        try:
            raw = await read_body(request, 8192)
        except BodyTooLarge:
            raise HTTPException(413, "request too large") from None
        form = parse_qs(raw.decode("utf-8", errors="replace"))
        given = request.headers.get(CSRF_HEADER) or form.get("csrf_token", [""])[0]
        if not _same_origin(request) or not sessions.csrf_ok(sid, given):
            raise HTTPException(403, "missing or invalid CSRF token")
        sessions.revoke(sid)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    api = APIRouter(prefix="/ui/api", dependencies=[Depends(session)])
    no_store = {"Cache-Control": "no-store"}

    @api.get("/overview")
    def overview(response: Response) -> dict[str, Any]:
        response.headers.update(no_store)
        return overview_json(ctx)

    @api.get("/dead-letters")
    def dead_letters(
        response: Response, destination: str | None = None, vendor: str | None = None,
        error: str | None = None, learner: str | None = None, since: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 25, offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    ) -> dict[str, Any]:
        response.headers.update(no_store)
        try:
            flt = actions.FilterBody(destination=destination, vendor=vendor, error=error, learner=learner,
                                     since=since).to_filter()
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        items, total = ctx.dlq.list(flt, limit=limit, offset=offset)
        return actions.page_json(items, total, limit, offset)

    @api.get("/dead-letters/{event_id}")
    def dead_letter(event_id: str, response: Response) -> dict[str, Any]:
        response.headers.update(no_store)
        eid = actions.normalize_id(event_id)
        record = ctx.dlq.get(eid) if eid else None
        if record is None:
            raise HTTPException(404, "not in the dead-letter queue")
        return event_view(ctx.store, record)

    @api.post("/dead-letters/requeue", dependencies=[Depends(csrf)])
    async def requeue(body: actions.RequeueBody) -> dict[str, Any]:
        report = await run_in_threadpool(actions.requeue, ctx, body, "dashboard")
        return actions.report_json(report)

    @api.post("/dead-letters/purge", dependencies=[Depends(csrf)])
    async def purge(body: actions.PurgeBody) -> dict[str, Any]:
        if not body.dry_run and not body.confirm:
            raise HTTPException(422, "purging deletes dead letters for good: confirm it (confirm: true)")
        report = await run_in_threadpool(actions.purge, ctx, body, "dashboard")
        return actions.report_json(report)

    @api.get("/audit")
    def audit(response: Response, limit: Annotated[int, Query(ge=1, le=500)] = 20) -> dict[str, Any]:
        response.headers.update(no_store)
        return actions.audit_json(ctx.dlq.audit(limit))

    add_dashboard_routes(api, ctx, Depends(csrf))
    add_audit_dashboard_routes(api, ctx, Depends(csrf))
    router.include_router(api)
    return router
