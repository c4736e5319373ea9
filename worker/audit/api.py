"""Audits over HTTP (Bearer token, like every ``/v1`` route) and the ``gradesync_audit_cells`` metric.

``POST /v1/audits`` ``{"destinations": [...], "since": "7d", "resync": ["missing"]}`` starts a job in this
process's background (202 with its id); ``GET /v1/audits`` lists recent jobs and the last finished one per
destination; ``GET /v1/audits/{id}`` is the job (state, progress, counts) with its cells (``verdict``,
``limit``, ``offset``); ``POST /v1/audits/{id}/resync`` ``{"verdicts": ["missing"]}`` republishes the
last event of those cells of a finished job. Actor ``api`` (the dashboard's is ``dashboard``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, params
from fastapi.concurrency import run_in_threadpool
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import BaseModel, ConfigDict, Field

from worker import errors
from worker.audit.cli import cell_json
from worker.audit.compare import VERDICTS
from worker.audit.engine import AuditRunner
from worker.audit.jobs import AuditJobs, JobView
from worker.audit.resync import Publishes, resync
from worker.ops import actions
from worker.ops.overview import OpsContext
from worker.redact import redact

Resyncable = Literal["missing", "drifted"]


class AuditBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destinations: list[str] = Field(default_factory=list, max_length=1000,
                                    description="destination names (empty: all configured)")
    since: str | float = Field("7d", description="cells delivered since: 7d, 2h, ISO 8601 or epoch seconds")
    resync: list[Resyncable] = Field(default_factory=list,
                                     description="republish these cells when the audit ends (drifted: explicit)")


def _missing() -> list[Resyncable]:
    return ["missing"]


class ResyncBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdicts: list[Resyncable] = Field(default_factory=_missing, min_length=1)


def job_json(view: JobView) -> dict[str, Any]:
    out: dict[str, Any] = redact(view.as_json())
    return out


def start_audit(runner: AuditRunner, body: AuditBody, actor: str) -> dict[str, Any]:
    try:
        since = actions.parse_since(body.since) or 0.0
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        job_id = runner.create(body.destinations or None, since, actor=actor, resync=tuple(body.resync))
    except errors.ConfigurationError as exc:
        raise HTTPException(404, exc.message) from None
    runner.start(job_id)
    view = runner.jobs.get(job_id)
    assert view is not None
    return job_json(view)


def resync_job(ctx: OpsContext, publisher: Publishes, job_id: str, verdicts: list[str], actor: str) -> dict[str, Any]:
    jobs = AuditJobs(ctx.store.redis, ctx.keys)
    view = jobs.get(job_id)
    if view is None:
        raise HTTPException(404, f"no audit {job_id}")
    if view.state != "done":
        raise HTTPException(409, f"audit {job_id} is {view.state}: resync a finished audit")
    report = resync(ctx.settings, ctx.store, publisher, job_id, tuple(verdicts), actor=actor)
    out: dict[str, Any] = redact(report.as_json())
    return out


def audits_router(ctx: OpsContext, auth: params.Depends, runner: AuditRunner, publisher: Publishes) -> APIRouter:
    router = APIRouter(prefix="/v1/audits", dependencies=[auth], tags=["audits"])

    @router.post("", status_code=202, summary="Start an audit: read delivered grades back and compare")
    async def create(body: AuditBody) -> dict[str, Any]:
        return await run_in_threadpool(start_audit, runner, body, "api")

    @router.get("", summary="Recent audits and the last finished audit of each destination")
    def recent(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
        return {"audits": [job_json(v) for v in runner.jobs.recent(limit)],
                "last": {d: job_json(v) for d, v in sorted(runner.jobs.last_per_destination().items())}}

    @router.get("/{job_id}", summary="One audit: state, progress, counts and its cells")
    def get(job_id: str, verdict: Annotated[list[Literal["match", "drifted", "missing", "unreadable", "error"]]
                                            | None, Query()] = None,
            limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
            offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict[str, Any]:
        view = runner.jobs.get(job_id[:64])
        if view is None:
            raise HTTPException(404, f"no audit {job_id[:64]!r}")
        cells = runner.jobs.results(view.id, offset=offset, limit=limit, verdicts=tuple(verdict or ()))
        return {**job_json(view), "cells": [cell_json(c) for c in cells]}

    @router.post("/{job_id}/resync", summary="Republish the last event of the missing (or drifted) cells")
    async def do_resync(job_id: str, body: ResyncBody) -> dict[str, Any]:
        return await run_in_threadpool(resync_job, ctx, publisher, job_id[:64], list(body.verdicts), "api")

    return router


def audit_families(ctx: OpsContext) -> Iterator[Metric]:
    """``gradesync_audit_cells{destination, verdict}``: the cells of each destination's last finished audit."""
    family = GaugeMetricFamily("gradesync_audit_cells",
                               "cells of the destination's last finished audit, per verdict",
                               labels=["destination", "verdict"])
    for dest, view in sorted(AuditJobs(ctx.store.redis, ctx.keys).last_per_destination().items()):
        for verdict in VERDICTS:
            family.add_metric([dest, verdict], view.counts.get(dest, {}).get(verdict, 0))
    yield family


def auth_dependency(auth: Any) -> params.Depends:
    dep: params.Depends = Depends(auth)
    return dep


class DashboardResync(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdicts: list[Resyncable] = Field(default_factory=_missing, min_length=1)
    confirm: bool = Field(False, description="resync republishes grades: the dashboard asks first")


#: cells of each kind shown per destination on the dashboard
DASHBOARD_CELLS = 50


def dashboard_json(ctx: OpsContext) -> dict[str, Any]:
    """The last finished audit of each destination: its counts and its drifted and missing cells."""
    jobs = AuditJobs(ctx.store.redis, ctx.keys)
    out = []
    for dest, view in sorted(jobs.last_per_destination().items()):
        cells = [c for c in jobs.results(view.id, verdicts=("drifted", "missing")) if c["destination"] == dest]
        out.append({"destination": dest, "audit": view.id, "finished_at": view.finished_at,
                    "counts": view.counts.get(dest, {}),
                    "drifted": [cell_json(c) for c in cells if c["verdict"] == "drifted"][:DASHBOARD_CELLS],
                    "missing": [cell_json(c) for c in cells if c["verdict"] == "missing"][:DASHBOARD_CELLS]})
    running = [job_json(v) for v in jobs.recent(10) if v.state in ("pending", "running")]
    return {"destinations": out, "running": running}


def add_audit_dashboard_routes(api: APIRouter, ctx: OpsContext, csrf: params.Depends) -> None:
    """The dashboard's audit routes on its session-authenticated ``/ui/api`` router."""
    from worker.publish import Publisher

    @api.get("/audits")
    def ui_audits() -> dict[str, Any]:
        return dashboard_json(ctx)

    def _resync(job_id: str, verdicts: list[str]) -> dict[str, Any]:
        publisher = Publisher(ctx.settings, dispatcher=ctx.dispatcher)
        try:
            return resync_job(ctx, publisher, job_id, verdicts, "dashboard")
        finally:
            publisher.close()

    @api.post("/audits/{job_id}/resync", dependencies=[csrf])
    async def ui_resync(job_id: str, body: DashboardResync) -> dict[str, Any]:
        if not body.confirm:
            raise HTTPException(422, "resync republishes grades: confirm it (confirm: true)")
        return await run_in_threadpool(_resync, job_id[:64], list(body.verdicts))
