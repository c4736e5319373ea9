"""The one ASGI app of ``gradesync serve``: HTTP ingest, the dead-letter API, the dashboard, ``/metrics``,
``/healthz`` (readiness: Redis and the broker answer) and ``/livez`` (liveness: the process answers).

Authentication: every ``/v1`` route requires ``Authorization: Bearer $GRADESYNC_API_TOKEN`` (compared in
constant time); anything else answers 401 with ``WWW-Authenticate: Bearer``. The dashboard logs in with
the same token (see :mod:`worker.ops.dashboard`). Without a token the app refuses to be built, unless
``GRADESYNC_INSECURE_DEV=1``, and then it says so loudly. ``/healthz``, ``/livez``, ``/metrics``, ``/openapi.json``
need no token and show no secret.

Before any of that, :class:`worker.ops.guard.Guard` (pure ASGI) resolves the client behind trusted
proxies, authenticates ``/v1`` and ``/ui/api`` requests before their body is read, rate-limits failed
authentication and enforces a body limit on every route. The token must be at least 32 characters
(:func:`worker.ops.auth.check_token`).
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis
import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from worker.audit.api import audits_router, auth_dependency
from worker.audit.engine import AuditRunner
from worker.known_secrets import register_destinations
from worker.ops import actions
from worker.ops.auth import AuthLimiter, SessionStore, TrustedProxies, check_token
from worker.ops.dashboard import Sessions, dashboard_router, static_app
from worker.ops.destinations_api import destinations_router
from worker.ops.guard import BodyLimitExceeded, Guard, body_limit_body
from worker.ops.ingest import event_schemas, ingest_router
from worker.ops.jwks import jwks_router
from worker.ops.metrics import metrics_router
from worker.ops.overview import OpsContext, overview_json
from worker.ops.views import event_view
from worker.publish import Publisher
from worker.registry.live import LiveDestinations
from worker.registry.store import Registry
from worker.settings import ConfigError, Settings, get_settings, without_credentials
from worker.store.deadletters import DLQFilter

log = structlog.get_logger("gradesync.api")

INSECURE_WARNING = (
    "INSECURE: GRADESYNC_INSECURE_DEV=1 and no GRADESYNC_API_TOKEN: the HTTP API and the dashboard accept "
    "ANY caller without authentication. Use this only on a development machine, never in production."
)
_CHALLENGE = 'Bearer realm="gradesync"'


def api_token(settings: Settings) -> str | None:
    """The configured API token; raises :class:`ConfigError` when there is none and insecure_dev is off."""
    token = settings.api_token.get_secret_value() if settings.api_token is not None else ""
    if token:
        return check_token(token)
    if not settings.insecure_dev:
        raise ConfigError(
            "GRADESYNC_API_TOKEN is not set: `gradesync serve` will not start without a token for the HTTP "
            "API and the dashboard (set GRADESYNC_INSECURE_DEV=1 to run without one on a development machine)"
        )
    return None


_BEARER = HTTPBearer(auto_error=False, scheme_name="bearer", description="GRADESYNC_API_TOKEN")


class BearerAuth:
    """A FastAPI dependency: the request must carry the API token as a Bearer credential."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode() if token is not None else None

    async def __call__(self, credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> None:
        if self._token is None:  # insecure_dev without a token (warned at startup)
            return
        if credentials is None:
            raise HTTPException(401, "missing Bearer token (Authorization: Bearer <GRADESYNC_API_TOKEN>)",
                                headers={"WWW-Authenticate": _CHALLENGE})
        if not hmac.compare_digest(credentials.credentials.encode(), self._token):
            raise HTTPException(401, "invalid token",
                                headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'})


# -- health -------------------------------------------------------------------------------------------
def check_redis(ctx: OpsContext) -> str | None:
    """None when Redis answers, else what went wrong (no address, no credentials: /healthz is public)."""
    try:
        ctx.store.redis.ping()
    except (redis.RedisError, OSError) as exc:
        log.warning("health_redis_failed", redis=without_credentials(ctx.settings.redis_url), error=type(exc).__name__)
        return f"Redis unavailable ({type(exc).__name__})"
    return None


def check_broker(ctx: OpsContext) -> str | None:
    url = ctx.settings.broker
    try:
        ctx.dispatcher.ping()
    except Exception as exc:  # kombu / amqp / redis connection errors of every kind
        log.warning("health_broker_failed", broker=without_credentials(url), error=type(exc).__name__)
        return f"broker unavailable ({type(exc).__name__})"
    return None


def health_router(ctx: OpsContext) -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", summary="Is Redis reachable, is the broker reachable",
                responses={503: {"description": "Redis or the broker is unreachable"}})
    def healthz() -> JSONResponse:
        checks = {"redis": check_redis(ctx), "broker": check_broker(ctx)}
        ok = all(v is None for v in checks.values())
        body = {
            "status": "ok" if ok else "unavailable",
            "checks": {name: "ok" if problem is None else "failed" for name, problem in checks.items()},
            "failed": [name for name, problem in checks.items() if problem is not None],
            "errors": {name: problem for name, problem in checks.items() if problem is not None},
        }
        return JSONResponse(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})

    @router.get("/livez", summary="The process answers (Redis is NOT checked: a liveness probe)")
    def livez() -> JSONResponse:
        # a restart cannot fix a Redis outage, so liveness never depends on it (readiness: /healthz)
        return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})

    return router


# -- /v1: events, overview, dead letters, audit ------------------------------------------------------------
def _since(value: str | None) -> float | None:
    try:
        return actions.parse_since(value)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _event_id(value: str) -> str:
    eid = actions.normalize_id(value)
    if eid is None:
        raise HTTPException(404, f"no event {value!r} (event ids are UUIDs)")
    return eid


Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
#: an offset beyond this is refused (4xx), never handed to Redis as a huge or float number
MAX_OFFSET = 10_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="entries to skip")]


def v1_router(ctx: OpsContext, auth: BearerAuth) -> APIRouter:
    router = APIRouter(prefix="/v1", dependencies=[Depends(auth)])

    @router.get("/events/{event_id}", tags=["ingest"], summary="An event's ledger entry (secrets masked)")
    def get_event(event_id: str) -> dict[str, Any]:
        eid = _event_id(event_id)
        record = ctx.store.ledger.load(eid)
        if record is None:
            raise HTTPException(404, f"no event {eid} in the ledger (never published, or expired)")
        return event_view(ctx.store, record)

    @router.get("/overview", tags=["ops"],
                summary="Per destination: queue, in progress, retries, dead letters")
    def get_overview() -> dict[str, Any]:
        return overview_json(ctx)

    @router.get("/dead-letters", tags=["dead letters"], summary="List dead letters (newest first)")
    def list_dead_letters(
        destination: str | None = None, vendor: str | None = None,
        error: Annotated[str | None, Query(description="case-insensitive substring of the error")] = None,
        learner: str | None = None,
        since: Annotated[str | None, Query(description="ISO 8601, epoch seconds, or 30m / 2h / 7d")] = None,
        limit: Limit = 50, offset: Offset = 0,
    ) -> dict[str, Any]:
        flt = DLQFilter(destination=destination or None, vendor=vendor or None, error=error or None,
                                learner=learner or None, since=_since(since))
        items, total = ctx.dlq.list(flt, limit=limit, offset=offset)
        return actions.page_json(items, total, limit, offset)

    @router.get("/dead-letters/{event_id}", tags=["dead letters"],
                summary="One dead letter: the event (secrets masked), its errors and every attempt")
    def get_dead_letter(event_id: str) -> dict[str, Any]:
        eid = _event_id(event_id)
        record = ctx.dlq.get(eid)
        if record is None:
            raise HTTPException(404, f"{eid} is not in the dead-letter queue")
        return event_view(ctx.store, record)

    @router.post("/dead-letters/requeue", tags=["dead letters"],
                 summary="Requeue dead letters by id, by filter, or all (rate-capped; dry_run to preview)")
    async def requeue(body: actions.RequeueBody) -> dict[str, Any]:
        report = await run_in_threadpool(actions.requeue, ctx, body, "api")
        return actions.report_json(report)

    @router.post("/dead-letters/purge", tags=["dead letters"],
                 summary="Delete dead letters for good, by id, by filter, or all (dry_run to preview)")
    async def purge(body: actions.SelectionBody) -> dict[str, Any]:
        report = await run_in_threadpool(actions.purge, ctx, body, "api")
        return actions.report_json(report)

    @router.delete("/dead-letters/{event_id}", tags=["dead letters"],
                   summary="Delete one dead letter for good")
    def delete_dead_letter(event_id: str) -> dict[str, Any]:
        eid = _event_id(event_id)
        if ctx.dlq.get(eid) is None:
            raise HTTPException(404, f"{eid} is not in the dead-letter queue")
        report = ctx.dlq.purge([eid], actor="api")
        if report.done != 1:
            raise HTTPException(404, f"{eid} is not in the dead-letter queue")
        return actions.report_json(report)

    @router.get("/audit", tags=["dead letters"], summary="Operator actions, newest first")
    def audit(limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> dict[str, Any]:
        return actions.audit_json(ctx.dlq.audit(limit))

    return router


# -- the app -----------------------------------------------------------------------------------------------


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 with each problem's location and message, never the input: a NaN in the body must not turn the
    answer into a 500 (JSON cannot carry it), and a refused secret is not echoed back."""
    problems = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"loc": list(p.get("loc", ())), "msg": str(p.get("msg", "")), "type": str(p.get("type", ""))}
              for p in problems]
    return JSONResponse({"detail": detail}, status_code=422)


def create_app(settings: Settings | None = None, *, ctx: OpsContext | None = None) -> FastAPI:
    """The ops app. Raises :class:`ConfigError` without an API token (unless insecure_dev) or when the
    destinations file is invalid."""
    settings = settings or get_settings()
    token = api_token(settings)
    if settings.destinations_file.exists():  # absent: the run-time registry alone (worker.registry)
        settings.destinations()  # fail now on a bad destinations file, not at the first request
        register_destinations(settings)  # masked by value in every page and answer
    proxies = TrustedProxies.parse(settings.trusted_proxies)
    if token is None:
        log.warning("insecure_dev", message=INSECURE_WARNING)
    ctx = ctx or OpsContext(settings)
    # installed while the app runs (lifespan): the file applied to the run-time registry, then polled, so
    # a destination registered at run time is served (ingest, pages, JWKS) within seconds, no restart
    live = LiveDestinations(settings, Registry(ctx.store.redis, ctx.keys))
    publisher = Publisher(settings, dispatcher=ctx.dispatcher)

    audits = AuditRunner(settings, ctx.store, publisher=publisher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(live.install)
        register_destinations(settings)  # masked by value in every page and answer
        stop = threading.Event()
        threading.Thread(target=audits.resume_forever, args=(stop,), name="audit-resume", daemon=True).start()
        yield
        stop.set()
        live.close()
        publisher.close()
        ctx.close()

    app = FastAPI(
        title="gradesync",
        version="1",
        summary="Grade events in, gradebooks out: ingest, dead letters, dashboard, metrics.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.exception_handler(RequestValidationError)(_invalid_request)
    limiter = AuthLimiter(ctx.store.redis, ctx.keys, limit=settings.auth_fail_limit, window=settings.auth_fail_window)
    sessions = Sessions(token, SessionStore(ctx.store.redis, ctx.keys))
    app.add_middleware(Guard, proxies=proxies, limiter=limiter, token=token,
                       session_ok=lambda cookie: sessions.verify(cookie) is not None,
                       large_body=settings.max_body_bytes)

    async def body_too_large(request: Request, exc: Exception) -> Response:
        limit = exc.limit if isinstance(exc, BodyLimitExceeded) else settings.max_body_bytes
        return JSONResponse(body_limit_body(request.url.path, limit), status_code=413,
                            headers={"Connection": "close"})

    app.add_exception_handler(BodyLimitExceeded, body_too_large)
    auth = BearerAuth(token)
    app.include_router(ingest_router(settings, publisher, dependencies=[Depends(auth)]))
    app.include_router(v1_router(ctx, auth))
    app.include_router(destinations_router(ctx, auth, refresh=live.refresh))
    app.include_router(audits_router(ctx, auth_dependency(auth), audits, publisher))
    app.include_router(health_router(ctx))
    app.include_router(metrics_router(ctx))
    app.include_router(dashboard_router(ctx, token, sessions=sessions, limiter=limiter))
    app.include_router(jwks_router(settings, ctx.store.cache))
    app.mount("/static", static_app(), name="static")
    app.state.ops = ctx
    app.state.auth_limiter = limiter

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(event_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
