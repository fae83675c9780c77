"""The worker's process: the aiohttp application over a :class:`Worker`, started and stopped.

``build_app`` puts the routes (``routes.py``, and the web page's: ``ui/``) behind four
middlewares: error answers (``errors.py``), requests from web pages (``origin.py``), the bearer
token or a browser's session cookie (``auth.py``) and the body limit; every answer carries the
page's security headers (``ui/pages.py``). ``launch`` starts the worker and its API as an async context manager, listening with
a cap on open connections (``listener.py``); ``serve`` is ``airbyte-fleet serve``: ``launch``
until a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import anyio
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from airbyte_fleet._logging import get_logger
from airbyte_fleet.config import AirbyteSettings, load_settings
from airbyte_fleet.coordination import CoordinationError, Coordinator, open_coordinator
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.journal import JournalDamagedError, RunStore, open_store, store_location
from airbyte_fleet.resolve import (
    file_groups,
    file_selection,
    merge_run_options,
    run_overrides_from_env,
)
from airbyte_fleet.runner import on_signals, open_client
from airbyte_fleet.service.access_log import ACCESS_LOGGER, AccessLog
from airbyte_fleet.service.auth import auth_middleware
from airbyte_fleet.service.errors import BodyTooLargeError, problems
from airbyte_fleet.service.ledger import LegacyLedger
from airbyte_fleet.service.listener import Listener, connection_cap, listen
from airbyte_fleet.service.metrics import Metrics
from airbyte_fleet.service.options import ServeOptions, check_bind
from airbyte_fleet.service.origin import origin_middleware
from airbyte_fleet.service.routes import CONTEXT, ROUTES, ApiContext
from airbyte_fleet.service.runs import Worker
from airbyte_fleet.service.schedules import (
    FileState,
    Schedule,
    Scheduler,
    ScheduleState,
    StoredState,
    parse_schedules,
)
from airbyte_fleet.service.ui import API_ROUTES, PAGE_ROUTES, UI, UiContext, security_headers
from airbyte_fleet.settings_file import FileConfig, load_file_config

__all__ = ["Running", "build_app", "launch", "serve"]

log = get_logger("airbyte_fleet.service")


def _body_limit(limit: int) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Refuse on the declared length before reading anything; a chunked body that grows past
        # the limit is stopped by aiohttp's client_max_size while it is read.
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLargeError(limit)
        return await handler(request)

    return check


def build_app(
    worker: Worker,
    *,
    token: str | None,
    metrics: Metrics | None = None,
    max_body_bytes: int = 64 * 1024,
    ready_timeout: float = 5.0,
    keepalive: float = 15.0,
    body_timeout: float = 30.0,
    scheduler: Scheduler | None = None,
) -> web.Application:
    """The API and the web page (``/ui``) over *worker*. *token*: the bearer token every route but
    the probes and /metrics requires, or the session cookie a browser gets for it (None: no auth,
    for a loopback bind only; :func:`check_bind` enforces that, and such a worker answers only
    requests addressed to a loopback name). *scheduler*: what ``GET /schedules`` shows."""
    ui = UiContext(token, scheduler)
    app = web.Application(
        client_max_size=max_body_bytes,
        # Outermost first: errors.problems answers whatever the others (and the routes) raise.
        middlewares=[
            problems,
            origin_middleware(loopback_only=token is None),
            auth_middleware(token, ui.cookies),
            _body_limit(max_body_bytes),
        ],
    )
    app[CONTEXT] = ApiContext(worker, metrics, ready_timeout, keepalive, body_timeout)
    app[UI] = ui
    app.on_cleanup.append(_stop_readiness_check)
    app.on_response_prepare.append(security_headers)
    app.add_routes(ROUTES)
    app.add_routes(API_ROUTES)
    app.add_routes(PAGE_ROUTES)
    return app


async def _stop_readiness_check(app: web.Application) -> None:
    await app[CONTEXT].readiness.close()


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
    store, coordinator = _open_store(options)
    with store, contextlib.closing(coordinator):
        client = await open_client(settings, check=False)
        async with client:
            exporter = metrics if metrics is not None else Metrics()
            exporter.watch_client(client)
            worker = Worker(
                client,
                store,
                coordinator,
                base_options=base_options,
                groups=file_groups(file),
                default_selection=file_selection(file),
                max_runs=options.max_runs,
                grace=options.grace,
                sinks=[exporter.sink],
                legacy=LegacyLedger(options.state_dir) if options.database_url is None else None,
            )
            # Made before the app, which shows it (GET /schedules); it runs once the worker does.
            scheduler = await _scheduler(file, worker, options, exporter)
            app = build_app(
                worker,
                token=options.token,
                metrics=exporter,
                max_body_bytes=options.max_body_bytes,
                ready_timeout=options.ready_timeout,
                keepalive=options.keepalive,
                body_timeout=options.body_timeout,
                scheduler=scheduler,
            )
            runner = web.AppRunner(
                app,
                access_log=ACCESS_LOGGER,
                access_log_class=AccessLog,
                handle_signals=False,
                shutdown_timeout=2.0,
                # aiohttp closes a connection that has not sent a whole request's headers this
                # long after it opened (or after its last answer): a silent client cannot hold
                # a connection, nor a slow one a slot.
                keepalive_timeout=options.header_timeout,
                # How long an unread body is drained after answering (a refused one, say).
                lingering_time=min(options.body_timeout, 5.0),
            )
            await runner.setup()
            assert runner.server is not None
            cap = connection_cap(options.max_clients, pool=settings.max_connections)
            listener: Listener | None = None
            try:
                try:
                    listener = await listen(runner.server, options.host, options.port, cap=cap)
                except OSError as exc:
                    raise ConfigError(
                        f"Cannot listen on {options.host}:{options.port} "
                        f"({exc.strerror or exc}); choose another --host or --port."
                    ) from None
                host, port = listener.addresses[0][:2]
                shown = f"[{host}]" if ":" in str(host) else str(host)
                running = Running(f"http://{shown}:{port}", worker, app)
                await worker.start()
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
                    max_clients=cap,
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
                if listener is not None:
                    await listener.close()
                await runner.cleanup()


def _open_store(options: ServeOptions) -> tuple[RunStore, Coordinator]:
    """The worker's database: the journal file in the state dir, or PostgreSQL; one sentence
    naming the fix when it cannot be used."""
    where = store_location(options.database_url, options.state_dir)
    try:
        store = open_store(database_url=options.database_url, state_dir=options.state_dir)
    except JournalDamagedError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        fix = (
            "pass --state-dir with a writable folder"
            if options.database_url is None
            else "check --database-url and that the database is up"
        )
        raise ConfigError(f"Cannot use the store at {where} ({exc}); {fix}.") from None
    try:
        coordinator = open_coordinator(
            database_url=options.database_url,
            state_dir=options.state_dir,
            lease_seconds=options.lease,
        )
    except CoordinationError as exc:
        store.close()
        raise ConfigError(f"Cannot use the store at {where} ({exc}).") from None
    return store, coordinator


async def _scheduler(
    file: FileConfig, worker: Worker, options: ServeOptions, metrics: Metrics
) -> Scheduler | None:
    """The config file's schedules, submitting runs to *worker*; None when there are none."""
    schedules = parse_schedules(file.schedules, source=str(file.path), groups=file.groups)
    if not schedules:
        return None

    async def submit(schedule: Schedule, tick: datetime) -> str:
        accepted = await worker.submit(
            schedule.selection,
            worker.options_from(schedule.options),
            schedule=schedule.name,
            tick=tick,
        )
        return accepted.run_id

    keeper = StoredState(worker.coordinator)
    if options.database_url is None:
        # What versions before the shared store kept in a file: brought in once.
        legacy = Path(options.state_dir) / ScheduleState.FILE_NAME
        if legacy.is_file():
            await anyio.to_thread.run_sync(keeper.write, FileState(legacy).read())
            legacy.unlink()
            log.info("schedule_state_imported", path=str(legacy))
    log.info("schedules", names=[s.name for s in schedules])
    return Scheduler(
        schedules, submit=submit, is_live=worker.is_live, track=metrics.scheduled, keeper=keeper
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
    workers: list[Worker] = []

    def first(name: str) -> None:
        log.warning("stopping", signal=name, on_shutdown=options.on_shutdown)
        stop.set()

    def again(name: str) -> None:
        log.warning("stopping_now", signal=name, note="no more waiting for cancels")
        for worker in workers:
            worker.abort()

    # A signal during start-up stops the worker as soon as it is up; a second one during the
    # shutdown stops waiting for cancels.
    with on_signals(first, again):
        async with launch(options, settings=settings, file=file, environ=environ) as running:
            workers.append(running.worker)
            if ready is not None:
                ready(running.url)
            else:
                print(f"listening on {running.url}", file=sys.stdout, flush=True)
            await stop.wait()
    return 0
