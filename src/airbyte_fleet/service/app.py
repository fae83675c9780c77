"""The worker's HTTP API (aiohttp) and the ``airbyte-fleet serve`` entry point.

Routes: ``POST /runs``, ``GET /runs``, ``GET /runs/{id}``, ``GET /runs/{id}/events`` (SSE),
``POST /runs/{id}/cancel``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` and
``GET /openapi.json``. Every route but ``/healthz`` and ``/metrics`` needs the bearer token when
one is configured; every body is JSON and passes the secret filter on its way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airbyte_fleet.api import AirbyteClient, AirbyteError
from airbyte_fleet.config import AirbyteSettings, load_settings
from airbyte_fleet.engine.journal import Journal
from airbyte_fleet.engine.options import Selection
from airbyte_fleet.engine.plan import PlanError
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.service.auth import auth_middleware
from airbyte_fleet.service.ledger import Ledger
from airbyte_fleet.service.metrics import Metrics
from airbyte_fleet.service.openapi import openapi_document
from airbyte_fleet.service.options import ServeOptions, check_bind
from airbyte_fleet.service.responses import (
    error_response,
    errors_of,
    json_response,
    validation_response,
)
from airbyte_fleet.service.runs import (
    RunConflictError,
    RunNotFoundError,
    ShuttingDownError,
    Worker,
)
from airbyte_fleet.service.schedules import Schedule, Scheduler, ScheduleState, parse_schedules
from airbyte_fleet.service.sse import stream_events
from airbyte_fleet.settings_file import (
    FileConfig,
    load_file_config,
    merge_run_options,
    run_overrides_from_env,
)

__all__ = ["Running", "build_app", "launch", "serve"]

log = structlog.get_logger("airbyte_fleet.service")


@dataclass(frozen=True)
class _Config:
    worker: Worker
    metrics: Metrics | None
    ready_timeout: float
    keepalive: float
    max_body_bytes: int


CONFIG = web.AppKey("config", _Config)


# --------------------------------------------------------------------------- request models


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selection: Selection = Field(default_factory=Selection)
    options: dict[str, Any] = Field(default_factory=dict)


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000_000)


# --------------------------------------------------------------------------- middlewares


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413) as JSON like every other answer; no stack traces."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: f"There is no route {request.method} {request.path}; see /openapi.json.",
            405: f"{request.path} does not accept {request.method}; see /openapi.json.",
            413: "The request body is too large.",
        }.get(exc.status, exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, message, headers=headers)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:
        log.error("request_failed", method=request.method, path=request.path, error=repr(exc))
        return error_response(500, "The worker failed on this request; its log has the details.")


def _body_limit(limit: int) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Refuse on the declared length before reading anything; a chunked body that grows past
        # the limit is stopped by aiohttp's client_max_size while it is read.
        if request.content_length is not None and request.content_length > limit:
            return error_response(413, f"The request body is larger than {limit} bytes.")
        return await handler(request)

    return check


# --------------------------------------------------------------------------- handlers


def _config(request: web.Request) -> _Config:
    return request.app[CONFIG]


async def _health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.Response:
    config = _config(request)
    if config.worker.closing:
        return json_response({"ready": False, "reason": "The worker is shutting down."}, 503)
    try:
        async with asyncio.timeout(config.ready_timeout):
            await config.worker.client.check()
    except TimeoutError:
        reason = (
            f"Airbyte did not answer within {config.ready_timeout:g} s; check that it is up "
            "and AIRBYTE_BASE_URL points at it."
        )
        return json_response({"ready": False, "reason": reason}, 503)
    except AirbyteError as exc:
        return json_response({"ready": False, "reason": exc.message}, 503)
    return json_response({"ready": True})


async def _metrics(request: web.Request) -> web.Response:
    metrics = _config(request).metrics
    if metrics is None:
        return error_response(503, "Metrics are not available in this worker.")
    body, content_type = metrics.render(request.headers.get("Accept"))
    response = web.Response(body=body)
    # Set verbatim: the exposition format's version parameter must reach the scraper as is.
    response.headers["Content-Type"] = content_type
    return response


async def _openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(reason="not JSON") from None


async def _submit(request: web.Request) -> web.Response:
    worker = _config(request).worker
    try:
        body = await _read_json(request)
    except web.HTTPBadRequest:
        return error_response(400, "The request body is not JSON; send a JSON object.")
    if not isinstance(body, dict):
        return validation_response(
            [{"loc": [], "msg": "the body must be a JSON object", "type": "model_type"}]
        )
    errors: list[dict[str, Any]] = []
    parsed: RunRequest | None = None
    try:
        parsed = RunRequest.model_validate(body)
    except ValidationError as exc:
        errors.extend(errors_of(exc))
    options = None
    raw_options = body.get("options", {})
    if isinstance(raw_options, dict):
        # Checked over the worker's own options, so each field error names the request's field.
        try:
            options = worker.options_from(raw_options)
        except ValidationError as exc:
            errors.extend(errors_of(exc, ("options",)))
    if errors or parsed is None or options is None:
        return validation_response(errors)
    try:
        handle = await worker.submit(parsed.selection, options)
    except PlanError as exc:
        return error_response(422, exc.message)
    except ShuttingDownError:
        return error_response(503, "The worker is shutting down; submit the run again later.")
    except AirbyteError as exc:
        # Nothing was triggered: the selection could not be resolved against Airbyte.
        return error_response(503, exc.message)
    except (OSError, sqlite3.Error) as exc:
        log.error("run_not_recorded", error=str(exc))
        return error_response(503, "The worker cannot record the run in its state directory.")
    return json_response(
        {"run_id": handle.run_id, "state": handle.state, "warnings": list(handle.warnings)},
        202,
        headers={"Location": f"/runs/{handle.run_id}"},
    )


async def _list(request: web.Request) -> web.Response:
    try:
        query = PageQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        return validation_response(errors_of(exc, ("query",)))
    views = _config(request).worker.list(limit=query.limit, offset=query.offset)
    return json_response(
        {"runs": [v.summary() for v in views], "limit": query.limit, "offset": query.offset}
    )


def _not_found(run_id: str) -> web.Response:
    return error_response(404, f"There is no run {run_id!r}; GET /runs lists the runs.")


async def _get(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    view = _config(request).worker.view(run_id)
    if view is None:
        return _not_found(run_id)
    return json_response(view.status())


async def _cancel(request: web.Request) -> web.Response:
    run_id = request.match_info["run_id"]
    worker = _config(request).worker
    try:
        worker.cancel(run_id)
    except RunNotFoundError:
        return _not_found(run_id)
    except RunConflictError as exc:
        return error_response(409, str(exc))
    view = worker.view(run_id)
    assert view is not None
    return json_response(view.status(), 202)


async def _events(request: web.Request) -> web.StreamResponse:
    run_id = request.match_info["run_id"]
    config = _config(request)
    raw = request.headers.get("Last-Event-ID", "").strip()
    if raw and not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        return validation_response(
            [
                {
                    "loc": ["header", "Last-Event-ID"],
                    "msg": "the last event id is the number of an event of this stream",
                    "type": "int_parsing",
                }
            ]
        )
    if not config.worker.knows(run_id):
        return _not_found(run_id)
    return await stream_events(
        request, config.worker, run_id, int(raw or 0), keepalive=config.keepalive
    )


# --------------------------------------------------------------------------- app


def build_app(
    worker: Worker,
    *,
    token: str | None,
    metrics: Metrics | None = None,
    max_body_bytes: int = 64 * 1024,
    ready_timeout: float = 5.0,
    keepalive: float = 15.0,
) -> web.Application:
    """The API over *worker*. *token*: the bearer token every route but /healthz and /metrics
    requires (None: no auth, for a loopback bind only; :func:`check_bind` enforces that)."""
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[_json_errors, auth_middleware(token), _body_limit(max_body_bytes)],
    )
    app[CONFIG] = _Config(worker, metrics, ready_timeout, keepalive, max_body_bytes)
    app.router.add_get("/healthz", _health, allow_head=True)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_post("/runs", _submit)
    app.router.add_get("/runs", _list)
    app.router.add_get("/runs/{run_id}", _get)
    app.router.add_get("/runs/{run_id}/events", _events)
    app.router.add_post("/runs/{run_id}/cancel", _cancel)
    return app


@dataclass(frozen=True)
class Running:
    """A worker serving HTTP (what :func:`launch` yields)."""

    url: str
    worker: Worker
    app: web.Application


@contextlib.asynccontextmanager
async def launch(
    options: ServeOptions,
    *,
    settings: AirbyteSettings | None = None,
    file: FileConfig | None = None,
    environ: Mapping[str, str] | None = None,
    metrics: Metrics | None = None,
) -> AsyncIterator[Running]:
    """Start the worker and its API; on leaving, stop the runs by ``options.on_shutdown``.

    If the block raises (or its task is cancelled), the runs are let go as a crash would let
    them go: no job is cancelled, nothing is marked finished, and the next start resumes them.

    Raises :class:`ConfigError` (bad configuration, or an open API on a reachable address) and,
    when Airbyte's URL needs probing, its transport errors, all before anything runs.
    """
    env = os.environ if environ is None else environ
    check_bind(options)
    file = file if file is not None else load_file_config(options.config)
    base_options = merge_run_options(file.run, run_overrides_from_env(env), file_path=file.path)
    settings = settings if settings is not None else load_settings(file.airbyte)
    settings.validate_offline()
    try:
        journal = Journal(options.state_dir)
        ledger = Ledger(options.state_dir)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"Cannot use the state directory '{options.state_dir}' ({exc}); pass --state-dir "
            "with a writable folder."
        ) from None
    with journal:
        client = await AirbyteClient.open(
            settings.url_plan(), settings.make_auth, **settings.client_options()
        )
        async with client:
            log.info("airbyte_url", base_url=client.api.base, understood=client.api.explanation)
            exporter = metrics if metrics is not None else Metrics()
            exporter.watch_client(client)
            worker = Worker(
                client,
                journal,
                ledger,
                base_options=base_options,
                groups=file.groups,
                default_selection=file.selection,
                max_runs=options.max_runs,
                grace=options.grace,
                sinks=[exporter.sink],
            )
            app = build_app(
                worker,
                token=options.token,
                metrics=exporter,
                max_body_bytes=options.max_body_bytes,
                ready_timeout=options.ready_timeout,
                keepalive=options.keepalive,
            )
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
            await runner.setup()
            try:
                site = web.TCPSite(runner, options.host, options.port)
                try:
                    await site.start()
                except OSError as exc:
                    raise ConfigError(
                        f"Cannot listen on {options.host}:{options.port} "
                        f"({exc.strerror or exc}); choose another --host or --port."
                    ) from None
                host, port = runner.addresses[0][:2]
                shown = f"[{host}]" if ":" in str(host) else str(host)
                running = Running(f"http://{shown}:{port}", worker, app)
                await worker.start()
                scheduler = _scheduler(file, worker, options.state_dir)
                schedule_task = (
                    asyncio.create_task(scheduler.run(), name="schedules")
                    if scheduler is not None
                    else None
                )
                log.info(
                    "serving",
                    url=running.url,
                    auth="bearer" if options.token else "none (loopback only)",
                    max_runs=options.max_runs,
                    on_shutdown=options.on_shutdown,
                )
                try:
                    yield running
                except BaseException:
                    await _stop_task(schedule_task)
                    await asyncio.shield(worker.detach())
                    raise
                await _stop_task(schedule_task)
                await worker.shutdown(options.on_shutdown, options.grace)
            finally:
                await runner.cleanup()


def _scheduler(file: FileConfig, worker: Worker, state_dir: Path) -> Scheduler | None:
    """The config file's schedules, submitting runs to *worker*; None when there are none."""
    schedules = parse_schedules(file.schedules, source=str(file.path), groups=file.groups)
    if not schedules:
        return None

    async def submit(schedule: Schedule) -> str:
        handle = await worker.submit(schedule.selection, worker.options_from(schedule.options))
        return handle.run_id

    log.info("schedules", names=[s.name for s in schedules])
    return Scheduler(
        schedules,
        submit=submit,
        is_running=worker.is_running,
        state_path=Path(state_dir) / ScheduleState.FILE_NAME,
    )


async def _stop_task(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(
    options: ServeOptions,
    *,
    settings: AirbyteSettings | None = None,
    file: FileConfig | None = None,
    environ: Mapping[str, str] | None = None,
    ready: Callable[[str], None] | None = None,
) -> int:
    """``airbyte-fleet serve``: run the worker until SIGTERM or SIGINT, then stop by
    ``options.on_shutdown`` and return 0. A second signal stops waiting for cancels.

    Prints ``listening on URL`` on stdout once requests are accepted (or calls *ready* with the
    URL instead). Raises :class:`ConfigError` (exit 2) and, for an Airbyte URL that must be
    probed, :class:`TransportError` (exit 3) before serving.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    workers: list[Worker] = []
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        name = signal.Signals(signum).name
        if signals == 1:
            log.warning("stopping", signal=name, on_shutdown=options.on_shutdown)
            stop.set()
        else:
            log.warning("stopping_now", signal=name, note="no more waiting for cancels")
            for worker in workers:
                worker.abort()

    # Installed before anything starts and kept until everything has stopped: a signal during
    # start-up stops the worker as soon as it is up, and a second one during shutdown aborts.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with launch(options, settings=settings, file=file, environ=environ) as running:
            workers.append(running.worker)
            if ready is not None:
                ready(running.url)
            else:
                print(f"listening on {running.url}", file=sys.stdout, flush=True)
            await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0
