"""The run-time registry over HTTP (Bearer token, audited with actor ``api``), beside the flow-control
routes of :mod:`worker.ops.destinations_api`:

- ``PUT /v1/destinations/{name}``: the destination's table as JSON (the keys of ``destinations.toml``; a
  secret may be given directly: stored encrypted, never returned). 201 created, 200 updated (or
  unchanged), 422 with one ``{"loc": ["body", key], "msg": …}`` per problem (the input is never echoed).
- ``DELETE /v1/destinations/{name}``: 409 while events of it are pending (queued, retrying, parked, in
  progress) unless ``?force=true``, which dead-letters them with a reason; 404 when not registered.
- ``GET /v1/destinations/{name}/config``: its table, secrets masked.

Every running worker and this server see a change within 10 s (this server at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

from worker.ops.overview import OpsContext
from worker.registry.codec import masked
from worker.registry.pending import dead_letter_pending, pending_events
from worker.registry.service import DocumentError, keep_unchanged, prepare_all
from worker.registry.store import Registry


def registry(ctx: OpsContext) -> Registry:
    return Registry(ctx.store.redis, ctx.keys)


def put(ctx: OpsContext, name: str, body: Any, actor: str, refresh: Callable[[], object] | None) -> JSONResponse:
    if not isinstance(body, dict):
        return JSONResponse({"detail": [{"loc": ["body"], "msg": "must be a JSON object (the destination's keys)",
                                         "type": "dict_type"}]}, status_code=422)
    try:
        prepared = prepare_all(ctx.settings, {name: body}, source="PUT /v1/destinations")
    except DocumentError as exc:
        detail = [{"loc": ["body", *([k] if k else [])], "msg": m, "type": "value_error"} for _, k, m in exc.problems]
        return JSONResponse({"detail": detail}, status_code=422)
    reg = registry(ctx)
    status = reg.upsert(keep_unchanged(ctx.settings, reg, prepared), actor=actor, source="api")[name]
    if refresh is not None:
        refresh()  # this server at once; the workers within their poll
    stored = reg.get(name)
    return JSONResponse({"name": name, "status": status, "config": masked(stored) if stored else {}},
                        status_code=201 if status == "created" else 200)


def delete(ctx: OpsContext, name: str, force: bool, reason: str, actor: str,
           refresh: Callable[[], object] | None) -> dict[str, Any]:
    reg = registry(ctx)
    if reg.get(name) is None:
        raise HTTPException(404, f"no destination {name!r} is registered")
    pending = pending_events(ctx.store, name)
    if pending and not force:
        raise HTTPException(409, f"{len(pending)} event(s) of {name!r} are pending (queued, retrying, parked or "
                                 "in progress); wait for them, or force=true to dead-letter them")
    reg.delete(name, actor=actor, reason=reason)
    dead = 0
    if pending:
        dead = dead_letter_pending(ctx.store, name, f"destination {name} was removed by {actor}"
                                                    + (f": {reason}" if reason else ""))
    if refresh is not None:
        refresh()
    return {"name": name, "removed": True, "dead_lettered": dead}


def config(ctx: OpsContext, name: str) -> dict[str, Any]:
    stored = registry(ctx).get(name)
    if stored is None:
        raise HTTPException(404, f"no destination {name!r} is registered")
    return {"name": name, "config": masked(stored)}
