"""The worker's routes: the request models and one thin handler per operation of /openapi.json.

A handler reads the request, asks the :class:`~airbyte_fleet.service.runs.Worker`, and answers
with JSON; whatever goes wrong it raises, and :mod:`airbyte_fleet.service.errors` answers that.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError, PydanticKnownError

from airbyte_fleet.api import AirbyteError
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.resolve import run_options_over
from airbyte_fleet.service.errors import (
    InvalidRequestError,
    MetricsUnavailableError,
    NotJSONError,
    RunNotRecordedError,
    request_as,
)
from airbyte_fleet.service.metrics import Metrics
from airbyte_fleet.service.openapi import openapi_document
from airbyte_fleet.service.responses import json_response
from airbyte_fleet.service.runs import RunNotFoundError, Worker
from airbyte_fleet.service.sse import stream_events

__all__ = ["CONTEXT", "ROUTES", "ApiContext", "PageQuery", "RunRequest"]

ROUTES = web.RouteTableDef()


@dataclass(frozen=True)
class ApiContext:
    """What the handlers serve from (one per application)."""

    worker: Worker
    metrics: Metrics | None
    ready_timeout: float
    keepalive: float


CONTEXT = web.AppKey("context", ApiContext)


# --------------------------------------------------------------------------- request models


class RunRequest(BaseModel):
    """``POST /runs``'s body.

    Validate with ``context=worker.base_options``: each option left out comes from the worker's,
    and as the options are checked as one model with the body, every field error names the
    request's own field (``["options", "timeout"]``).
    """

    model_config = ConfigDict(extra="forbid")

    selection: Selection = Field(default_factory=Selection)
    options: RunOptions = Field(default_factory=RunOptions, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError("model_type", "the body must be a JSON object")
        return data

    @field_validator("options", mode="before")
    @classmethod
    def _over_the_workers_options(cls, value: Any, info: ValidationInfo) -> Any:
        base = info.context if isinstance(info.context, RunOptions) else RunOptions()
        if isinstance(value, RunOptions):
            return base  # left out: the default_factory's instance
        if not isinstance(value, dict):
            raise PydanticKnownError("dict_type")
        return run_options_over(base, value)


class PageQuery(BaseModel):
    """``GET /runs``'s query."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000_000)


# --------------------------------------------------------------------------- handlers


def _context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


@ROUTES.get("/healthz")
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@ROUTES.get("/readyz")
async def ready(request: web.Request) -> web.Response:
    reason = await _not_ready(_context(request))
    if reason is not None:
        return json_response({"ready": False, "reason": reason}, 503)
    return json_response({"ready": True})


async def _not_ready(context: ApiContext) -> str | None:
    """Why the worker cannot take runs now, in one sentence; None when it can."""
    if context.worker.closing:
        return "The worker is shutting down."
    try:
        async with asyncio.timeout(context.ready_timeout):
            await context.worker.client.check()
    except TimeoutError:
        return (
            f"Airbyte did not answer within {context.ready_timeout:g} s; check that it is up "
            "and AIRBYTE_BASE_URL points at it."
        )
    except AirbyteError as exc:
        return exc.message
    return None


@ROUTES.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    exporter = _context(request).metrics
    if exporter is None:
        raise MetricsUnavailableError
    body, content_type = exporter.render(request.headers.get("Accept"))
    response = web.Response(body=body)
    # Set verbatim: the exposition format's version parameter must reach the scraper as is.
    response.headers["Content-Type"] = content_type
    return response


@ROUTES.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


@ROUTES.post("/runs")
async def submit_run(request: web.Request) -> web.Response:
    worker = _context(request).worker
    run = request_as(RunRequest, await _json_body(request), context=worker.base_options)
    try:
        session = await worker.submit(run.selection, run.options)
    except (OSError, sqlite3.Error) as exc:
        raise RunNotRecordedError(str(exc)) from exc
    return json_response(
        {
            "run_id": session.run_id,
            "state": session.state,
            "warnings": list(session.plan.warnings),
        },
        202,
        headers={"Location": f"/runs/{session.run_id}"},
    )


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise NotJSONError from None


@ROUTES.get("/runs")
async def list_runs(request: web.Request) -> web.Response:
    query = request_as(PageQuery, dict(request.query), loc=("query",))
    views = _context(request).worker.recent(limit=query.limit, offset=query.offset)
    return json_response(
        {"runs": [v.list_item() for v in views], "limit": query.limit, "offset": query.offset}
    )


@ROUTES.get("/runs/{run_id}")
async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    view = _context(request).worker.view(run_id)
    if view is None:
        raise RunNotFoundError(run_id)
    return json_response(view.status())


@ROUTES.get("/runs/{run_id}/events")
async def run_events(request: web.Request) -> web.StreamResponse:
    run_id = request.match_info["run_id"]
    context = _context(request)
    after = _last_event_id(request)
    if not context.worker.knows(run_id):
        raise RunNotFoundError(run_id)
    return await stream_events(request, context.worker, run_id, after, keepalive=context.keepalive)


def _last_event_id(request: web.Request) -> int:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise InvalidRequestError(
            [
                {
                    "loc": ["header", "Last-Event-ID"],
                    "msg": "the last event id is the number of an event of this stream",
                    "type": "int_parsing",
                }
            ]
        )
    return int(raw or 0)


@ROUTES.post("/runs/{run_id}/cancel")
async def cancel_run(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    worker = _context(request).worker
    worker.cancel(run_id)
    view = worker.view(run_id)
    assert view is not None
    return json_response(view.status(), 202)
