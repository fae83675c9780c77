"""The worker's routes: the request models and one thin handler per operation of /openapi.json.

A handler reads the request, asks the :class:`~airbyte_fleet.service.runs.Worker`, and answers
with JSON; whatever goes wrong it raises, and :mod:`airbyte_fleet.service.errors` answers that.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError, PydanticKnownError, from_json

from airbyte_fleet._redact import redact
from airbyte_fleet.coordination import CoordinationError
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.report import CONTENT_SECURITY_POLICY, stored_report
from airbyte_fleet.resolve import run_options_over
from airbyte_fleet.service.errors import (
    BodyTooSlowError,
    InvalidRequestError,
    MetricsUnavailableError,
    NotJSONError,
    RunNotRecordedError,
    UnsupportedMediaTypeError,
    request_as,
)
from airbyte_fleet.service.metrics import Metrics
from airbyte_fleet.service.openapi import LAST_EVENT_ID_PATTERN, openapi_document
from airbyte_fleet.service.readiness import Readiness
from airbyte_fleet.service.responses import JSON_TYPE, json_response
from airbyte_fleet.service.runs import RunNotFoundError, Worker
from airbyte_fleet.service.sse import stream_events
from airbyte_fleet.service.views import RunView

__all__ = ["CONTEXT", "ROUTES", "ApiContext", "PageQuery", "RunRequest"]

ROUTES = web.RouteTableDef()


@dataclass(frozen=True)
class ApiContext:
    """What the handlers serve from (one per application)."""

    worker: Worker
    metrics: Metrics | None
    ready_timeout: float
    keepalive: float
    body_timeout: float = 30.0
    readiness: Readiness = field(init=False)

    def __post_init__(self) -> None:
        # One per application: it keeps the latest check of Airbyte between probes.
        worker = self.worker

        async def check() -> None:
            await worker.check_store(within=self.ready_timeout / 2)
            await worker.client.check()

        checks = Readiness(check, timeout=self.ready_timeout)
        object.__setattr__(self, "readiness", checks)


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

    # A misspelt parameter is an error, not a silent default.
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100, description="runs on the page")
    offset: int = Field(default=0, ge=0, le=10_000_000, description="newest runs to pass over")


# --------------------------------------------------------------------------- handlers


def _context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


@ROUTES.get("/healthz")
async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@ROUTES.get("/readyz")
async def ready(request: web.Request) -> web.Response:
    context = _context(request)
    # Answered within a probe's second, from the latest check of Airbyte (readiness.py).
    reason = (
        "The worker is shutting down."
        if context.worker.closing
        else await context.readiness.reason()
    )
    if reason is not None:
        return json_response({"ready": False, "reason": reason}, 503)
    return json_response({"ready": True})


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
    body = await _json_body(request, _context(request).body_timeout)
    # Strict: JSON's own types, as /openapi.json says (0 is no boolean, "5" no number).
    run = request_as(RunRequest, _integral(body), context=worker.base_options, strict=True)
    try:
        accepted = await worker.submit(run.selection, run.options)
    except (OSError, sqlite3.Error, CoordinationError) as exc:
        raise RunNotRecordedError(str(exc)) from exc
    return json_response(
        {
            "run_id": accepted.run_id,
            "state": accepted.state,
            "warnings": list(accepted.warnings),
        },
        202,
        headers={"Location": f"/runs/{accepted.run_id}"},
    )


async def _json_body(request: web.Request, within: float) -> Any:
    """The body as JSON (never empty). Only ``application/json`` is read: any other type is
    one a web page may send to any address without asking first."""
    if request.content_type != "application/json":
        raise UnsupportedMediaTypeError
    try:
        async with asyncio.timeout(within):
            raw = await request.read()
    except TimeoutError:
        raise BodyTooSlowError(within) from None
    if not raw.strip():
        # The document requires a body: `{}` asks for the defaults.
        raise NotJSONError("it is empty")
    try:
        # pydantic's parser, not json.loads: it stops at a nesting depth (json.loads recurses
        # until Python's stack limit) and refuses lone surrogates (\ud800), which no text
        # encoding downstream can write, as well as NaN and Infinity, which JSON has not. Nothing a
        # client sent stays in its process-wide string cache, which would grow with each request.
        return from_json(raw, allow_inf_nan=False, cache_strings=False)
    except ValueError as exc:
        # Its message says where the body went wrong (line, column), never what it holds.
        raise NotJSONError(str(exc)) from None


def _integral(value: Any) -> Any:
    """*value* with every float that is a whole number as an int: JSON (and /openapi.json's
    "integer") does not tell 5.0 from 5. (from_json bounds the depth of the recursion.)"""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    return value


@ROUTES.get("/runs")
async def list_runs(request: web.Request) -> web.Response:
    query = request_as(PageQuery, dict(request.query), loc=("query",))
    views = _context(request).worker.recent(limit=query.limit, offset=query.offset)
    return json_response(
        {"runs": [v.list_item() for v in views], "limit": query.limit, "offset": query.offset}
    )


# A streamed answer goes out in writes of about this size: one per sync would be a system call
# (and a wait for the socket) per few hundred bytes.
_WRITE_BYTES = 64 * 1024


async def _status_response(
    request: web.Request, view: RunView, status: int = 200
) -> web.StreamResponse:
    """*view*'s ``RunStatus``, the body written one sync at a time (a run of 10,000 syncs is
    megabytes of JSON), through the same secret filter and encoding as :func:`json_response`."""
    if view.result is None or request.method == "HEAD":
        # Small, or no body at all (aiohttp leaves a HEAD's body out of a Response only).
        return json_response(view.status(), status)
    response = web.StreamResponse(status=status)
    response.content_type = JSON_TYPE
    response.charset = "utf-8"
    await response.prepare(request)
    pending: list[bytes] = []
    size = 0
    for piece in view.status_json():
        # A secret lies inside one JSON string, and each piece holds whole values: filtering
        # piece by piece masks what filtering the whole would.
        data = redact(piece).encode("utf-8", "backslashreplace")
        pending.append(data)
        size += len(data)
        if size >= _WRITE_BYTES:
            await response.write(b"".join(pending))
            pending, size = [], 0
    await response.write(b"".join(pending))
    await response.write_eof()
    return response


@ROUTES.get("/runs/{run_id}")
async def get_run(request: web.Request) -> web.StreamResponse:
    run_id = request.match_info["run_id"]
    view = _context(request).worker.view(run_id)
    if view is None:
        raise RunNotFoundError(run_id)
    return await _status_response(request, view)


@ROUTES.get("/runs/{run_id}/events")
async def run_events(request: web.Request) -> web.StreamResponse:
    run_id = request.match_info["run_id"]
    context = _context(request)
    after = _last_event_id(request)
    if not context.worker.knows(run_id):
        raise RunNotFoundError(run_id)
    return await stream_events(request, context.worker, run_id, after, keepalive=context.keepalive)


@ROUTES.get("/runs/{run_id}/report.html")
async def run_report(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    # Off the loop: a run of 10,000 syncs is tens of thousands of events to read.
    page = await asyncio.to_thread(stored_report, _context(request).worker.journal, run_id)
    if page is None:
        raise RunNotFoundError(run_id)
    return web.Response(
        # The same secret filter as every JSON answer (errors in it already passed it once).
        text=redact(page),
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store"},
    )


def _last_event_id(request: web.Request) -> int:
    # Not stripped: HTTP already took the spaces around it off; anything else is not an id.
    raw = request.headers.get("Last-Event-ID", "")
    if not re.fullmatch(LAST_EVENT_ID_PATTERN, raw):
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
async def cancel_run(request: web.Request) -> web.StreamResponse:
    run_id = request.match_info["run_id"]
    worker = _context(request).worker
    worker.cancel(run_id)
    view = worker.view(run_id)
    assert view is not None
    return await _status_response(request, view, 202)
