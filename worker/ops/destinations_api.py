"""Flow control over HTTP: ``/v1/destinations`` (Bearer token) and the dashboard's JSON routes (session +
CSRF), both backed by :class:`worker.ops.flow_status.FlowStatus`.

``GET /v1/destinations``, ``GET /v1/destinations/{name}`` (404 for a destination that is not configured),
``POST /v1/destinations/{name}/pause`` with ``{"reason": "..."}`` (required, at most 500 characters, else
422) and ``POST /v1/destinations/{name}/resume``. Pause and resume are audited with actor ``api`` (or
``dashboard``). Reasons are redacted on the way out (the second line of defence: a breaker's reason
quotes a vendor's answer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response, params
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.ops import registry_api
from worker.ops.flow_status import MAX_REASON, DestinationStatus, FlowStatus, clean_reason
from worker.ops.overview import OpsContext
from worker.ops.views import iso
from worker.redact import redact_text
from worker.safetext import printable
from worker.store.stats import OUTCOMES

#: the dashboard chart's window (minutes); the per-minute buckets are kept two hours
CHART_MINUTES = 60


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=MAX_REASON,
                        description="why (shown to every operator), e.g. the vendor's maintenance window")

    @field_validator("reason")
    @classmethod
    def _clean(cls, value: str) -> str:
        return clean_reason(value)


def flow_status(ctx: OpsContext) -> FlowStatus:
    return FlowStatus(ctx.store.redis, ctx.keys, ctx.settings.destinations())


def status_json(s: DestinationStatus) -> dict[str, Any]:
    data = s.as_dict()
    data["reason"] = redact_text(s.reason)
    return data


def list_json(ctx: OpsContext, cursor: str | None = None, limit: int | None = None,
              query: str | None = None) -> dict[str, Any]:
    """Every destination's status in name order, or one page of ``limit`` after ``cursor`` (exclusive);
    ``query``: only names containing it (case-insensitive). ``next_cursor``: the cursor of the next page
    (None: the last page); ``total``: how many match ``query``."""
    flow = flow_status(ctx)
    needle = (query or "").strip().lower()
    matching = sorted(n for n in flow.destinations if needle in n.lower())
    names = [n for n in matching if cursor is None or n > cursor]
    page = names[:limit] if limit is not None else names
    more = limit is not None and len(names) > limit
    return {"destinations": [status_json(s) for s in flow.many(page)],
            "next_cursor": page[-1] if more and page else None, "total": len(matching)}


def _one(ctx: OpsContext, name: str) -> dict[str, Any]:
    try:
        return status_json(flow_status(ctx).get(name))
    except KeyError:
        raise HTTPException(404, f"no destination {name!r} is configured") from None


def pause(ctx: OpsContext, name: str, body: PauseBody, actor: str) -> dict[str, Any]:
    try:
        return status_json(flow_status(ctx).pause(name, reason=body.reason, actor=actor))
    except KeyError:
        raise HTTPException(404, f"no destination {name!r} is configured") from None


def resume(ctx: OpsContext, name: str, actor: str) -> dict[str, Any]:
    try:
        return status_json(flow_status(ctx).resume(name, actor=actor))
    except KeyError:
        raise HTTPException(404, f"no destination {name!r} is configured") from None


def throughput_json(ctx: OpsContext, minutes: int = CHART_MINUTES, only: list[str] | None = None) -> dict[str, Any]:
    """Per destination and minute: delivered (succeeded) and failed attempts (retried + dead-lettered);
    ``only``: these destinations (the dashboard's page), else all."""
    vendors = ctx.vendors()
    names = sorted(vendors) if only is None else sorted(n for n in set(only) if n in vendors)
    starts, counts = ctx.store.stats.series(names, OUTCOMES, minutes)
    zero = [0] * len(starts)

    def add(a: list[int], b: list[int]) -> list[int]:
        return [x + y for x, y in zip(a, b, strict=True)]

    return {
        "minute_starts": starts,
        "minutes": [iso(float(t)) for t in starts],
        "destinations": [{
            "name": name,
            "vendor": vendors[name],
            "delivered": counts.get((name, "succeeded"), zero),
            "failed": add(counts.get((name, "retried"), zero), counts.get((name, "dead_lettered"), zero)),
            "dead_lettered": counts.get((name, "dead_lettered"), zero),
            "superseded": counts.get((name, "superseded"), zero),
        } for name in names],
    }


def destinations_router(ctx: OpsContext, auth: Callable[..., Awaitable[None]],
                        refresh: Callable[[], object] | None = None) -> APIRouter:
    """The ``/v1/destinations`` routes (``auth``: the Bearer dependency of every /v1 route; ``refresh``:
    re-read the run-time registry after a change made here)."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(auth)], tags=["destinations"])

    @router.get("/destinations", summary="Flow control of every destination: state, reason, since, rate, parked "
                                         "(paged in name order with cursor + limit)")
    def list_destinations(cursor: Annotated[str | None, Query(max_length=100)] = None,
                          limit: Annotated[int | None, Query(ge=1, le=10_000)] = None) -> dict[str, Any]:
        return list_json(ctx, cursor, limit)

    @router.put("/destinations/{name}", status_code=200,
                summary="Register or update a destination at run time (the keys of destinations.toml; audited)",
                responses={201: {"description": "created"}, 422: {"description": "each problem by key"}})
    async def put_destination(name: str, body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        return await run_in_threadpool(registry_api.put, ctx, name, body, "api", refresh)

    @router.delete("/destinations/{name}", summary="Remove a destination (409 while events of it are pending, "
                                                   "unless force=true: they are dead-lettered; audited)",
                   responses={404: {"description": "not registered"}, 409: {"description": "events pending"}})
    async def delete_destination(name: str, force: bool = False,
                                 reason: Annotated[str, Query(max_length=MAX_REASON)] = "") -> dict[str, Any]:
        return await run_in_threadpool(registry_api.delete, ctx, name, force, printable(reason), "api", refresh)

    @router.get("/destinations/{name}/config", summary="A registered destination's keys (secrets masked)",
                responses={404: {"description": "not registered"}})
    def get_destination_config(name: str) -> dict[str, Any]:
        return registry_api.config(ctx, name)

    @router.get("/destinations/{name}", summary="One destination's flow-control status",
                responses={404: {"description": "no such destination is configured"}})
    def get_destination(name: str) -> dict[str, Any]:
        return _one(ctx, name)

    @router.post("/destinations/{name}/pause",
                 summary="Pause deliveries to a destination by hand (events park; audited)",
                 responses={404: {"description": "no such destination is configured"}})
    async def pause_destination(name: str, body: PauseBody) -> dict[str, Any]:
        return await run_in_threadpool(pause, ctx, name, body, "api")

    @router.post("/destinations/{name}/resume",
                 summary="Lift a manual pause (parked events drain at the rate limit; audited)",
                 responses={404: {"description": "no such destination is configured"}})
    async def resume_destination(name: str) -> dict[str, Any]:
        return await run_in_threadpool(resume, ctx, name, "api")

    return router


def add_dashboard_routes(api: APIRouter, ctx: OpsContext, csrf: params.Depends) -> None:
    """The dashboard's flow-control routes on its session-authenticated ``/ui/api`` router (``csrf``: the
    dependency that checks the CSRF token and the Origin of state-changing requests)."""
    no_store = {"Cache-Control": "no-store"}

    @api.get("/destinations")
    def ui_destinations(response: Response, q: Annotated[str | None, Query(max_length=100)] = None,
                        cursor: Annotated[str | None, Query(max_length=100)] = None,
                        limit: Annotated[int | None, Query(ge=1, le=500)] = None) -> dict[str, Any]:
        response.headers.update(no_store)
        return list_json(ctx, cursor, limit, q)

    @api.get("/throughput")
    def ui_throughput(response: Response,
                      minutes: Annotated[int, Query(ge=5, le=120)] = CHART_MINUTES,
                      names: Annotated[str | None, Query(max_length=60_000)] = None) -> dict[str, Any]:
        response.headers.update(no_store)
        only = [n for n in names.split(",") if n][:500] if names is not None else None
        return throughput_json(ctx, minutes, only)

    @api.post("/destinations/{name}/pause", dependencies=[csrf])
    async def ui_pause(name: str, body: PauseBody) -> dict[str, Any]:
        return await run_in_threadpool(pause, ctx, name, body, "dashboard")

    @api.post("/destinations/{name}/resume", dependencies=[csrf])
    async def ui_resume(name: str) -> dict[str, Any]:
        return await run_in_threadpool(resume, ctx, name, "dashboard")
