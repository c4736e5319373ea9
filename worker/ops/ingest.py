"""HTTP ingest: ``POST /v1/events`` for producers that are not written in Python.

This router knows only the producer side (validation and :class:`~worker.publish.Publisher`); it never
imports worker or adapter code. The caller (``worker.ops.api``) supplies authentication as router
dependencies.

The body limit is enforced while the body is read (``Content-Length`` first, then every received chunk,
so a chunked upload cannot get around it) and before any JSON parsing. Every item is validated before
anything is published; an invalid batch answers 422 with one entry per item and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.params import Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from worker import safejson
from worker.events import GradeEvent
from worker.publish import InvalidEvents, Publisher, PublishError
from worker.settings import ServerSettings

EVENT_SCHEMA_REF = "#/components/schemas/{model}"


class Accepted(BaseModel):
    event_ids: list[str] = Field(description="the ids of the published events, in input order")


class ItemError(BaseModel):
    index: int | None = Field(description="the item's position in the array (0 for a single object); "
                                          "null when the body as a whole is wrong")
    field: str = Field(description="dotted path of the field, e.g. target.line_item_id; (event) for the "
                                   "whole item, (body) for the whole request")
    message: str


class ErrorList(BaseModel):
    errors: list[ItemError]


class Problem(BaseModel):
    detail: str


class Unavailable(BaseModel):
    detail: str
    published: list[str] = Field(description="event ids confirmed published before the failure")


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (:class:`BodyTooLarge`) as soon as more than ``limit`` bytes arrive."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(limit)
        except ValueError:
            pass  # h11 rejects a malformed Content-Length before we get here
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


def item_errors(errors: dict[int, list[str]]) -> list[ItemError]:
    """``InvalidEvents.errors`` ("field.path: reason" lines per item) as structured entries."""
    out: list[ItemError] = []
    for index, lines in sorted(errors.items()):
        for line in lines:
            path, sep, message = line.partition(": ")
            if not sep:
                path, message = "(event)", line
            out.append(ItemError(index=index, field=path, message=message))
    return out


def _errors(status: int, entries: Sequence[ItemError], headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorList(errors=list(entries)).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def _body_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return _errors(status, [ItemError(index=None, field="(body)", message=message)], headers)


def event_schemas() -> dict[str, Any]:
    """GradeEvent and the models it uses, for ``components.schemas`` of the OpenAPI document."""
    schema = GradeEvent.model_json_schema(mode="validation", ref_template=EVENT_SCHEMA_REF)
    defs: dict[str, Any] = schema.pop("$defs", {})
    return {**defs, "GradeEvent": schema}


_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": EVENT_SCHEMA_REF.format(model="GradeEvent")},
                    {"type": "array", "items": {"$ref": EVENT_SCHEMA_REF.format(model="GradeEvent")},
                     "minItems": 1},
                ]
            }
        }
    },
}


def ingest_router(
    settings: ServerSettings, publisher: Publisher, *, dependencies: Sequence[Depends] = ()
) -> APIRouter:
    """``POST /v1/events`` publishing through ``publisher``; ``dependencies`` guard it (authentication)."""
    router = APIRouter(prefix="/v1", tags=["ingest"], dependencies=list(dependencies))
    limit = settings.max_body_bytes
    max_batch = settings.max_batch

    @router.post(
        "/events",
        status_code=202,
        summary="Publish grade events",
        description=(
            "One GradeEvent object or an array of at most `max_batch` of them. Every item is validated "
            "first: if any is invalid, nothing is published and the answer lists each problem by item "
            "index and field. The request body may not exceed `max_body_bytes`."
        ),
        openapi_extra={"requestBody": _REQUEST_BODY},
        responses={
            202: {"model": Accepted, "description": "published"},
            400: {"model": ErrorList, "description": "not JSON, or neither an object nor an array"},
            413: {"model": ErrorList, "description": "body over max_body_bytes, or over max_batch events"},
            422: {"model": ErrorList, "description": "invalid events; nothing was published"},
            503: {"model": Unavailable, "description": "Redis or the broker is unavailable"},
        },
    )
    async def publish_events(request: Request) -> JSONResponse:
        try:
            raw = await read_body(request, limit)
        except BodyTooLarge:
            return _body_error(413, f"request body exceeds {limit} bytes", {"Connection": "close"})
        try:
            data: Any = safejson.loads(raw)
        except safejson.JSONInputError as exc:
            if exc.field == "(body)":
                return _body_error(400, str(exc))
            return _errors(422, [ItemError(index=exc.index if exc.index is not None else 0, field=exc.field,
                                           message=str(exc))])
        if isinstance(data, dict):
            items: list[Any] = [data]
        elif isinstance(data, list):
            items = data
        else:
            return _body_error(400, "must be a grade event object or an array of them")
        if not items:
            return _body_error(422, "empty array: send at least one event")
        if len(items) > max_batch:
            return _body_error(413, f"{len(items)} events in one request; at most {max_batch} are accepted")
        try:
            ids = await run_in_threadpool(publisher.publish_many, items)
        except InvalidEvents as exc:
            return _errors(422, item_errors(exc.errors))
        except PublishError as exc:
            body = Unavailable(detail=str(exc), published=exc.published).model_dump()
            return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
        return JSONResponse(Accepted(event_ids=ids).model_dump(), status_code=202)

    return router
