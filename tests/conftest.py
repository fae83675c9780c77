"""Shared fixtures: a real simulator over loopback, stamina in testing mode, spec checks at teardown."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import stamina
import structlog
from aiohttp import web
from pydantic import SecretStr

from airbyte_fleet._logging import reset_logging
from airbyte_fleet._redact import forget_secrets
from airbyte_fleet.api import AirbyteClient, ClientCredentials, plan_url
from airbyte_fleet.simulator import Simulator, SimulatorOptions
from postgres import Databases, server_url
from spec_files import SpecDirError, spec_source
from spec_validation import get_validator

SimFactory = Callable[..., Awaitable[tuple[Simulator, str]]]


def pytest_configure(config: pytest.Config) -> None:
    # Find (or fetch) the spec files once, before any test: a wrong AIRBYTE_FLEET_SPEC_DIR or a
    # tampered download stops the session, and CI must never run with the spec checks off.
    try:
        source = spec_source()
    except SpecDirError as exc:
        raise pytest.UsageError(str(exc)) from None
    if not source.found and os.environ.get("CI", "").strip().lower() == "true":
        raise pytest.UsageError(f"CI=true: {source.how}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    source = spec_source()
    if not source.found:
        terminalreporter.write_line(source.how, yellow=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _stamina_testing() -> Iterator[None]:
    # No real backoff sleeps in tests; enough attempts to ride out injected faults.
    stamina.set_testing(True, attempts=6)
    yield
    stamina.set_testing(False)


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    yield
    forget_secrets()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    # Tests read log lines with structlog's capture_logs, which sees only lines handed to
    # structlog: each starts so, as under the CLI. The library's own mode (records on the
    # standard logging module) is tested in test_library_logging.py, which overrides this.
    reset_logging(via_structlog=True)
    yield
    # A test that runs the CLI in-process leaves structlog writing to its captured (then closed)
    # stderr; the next test must start from the defaults.
    structlog.reset_defaults()


@pytest.fixture
async def make_sim(anyio_backend: str) -> AsyncIterator[SimFactory]:
    """Start simulators on free loopback ports; every exchange they saw must satisfy the spec."""
    started: list[Simulator] = []

    async def make(clock: Any = None, **options: Any) -> tuple[Simulator, str]:
        # Tests get quick, reliable syncs unless they ask for something else.
        options = {
            "sync_seconds": (0.05, 0.2),
            "failure_rate": 0.0,
            "incomplete_rate": 0.0,
        } | options
        sim = Simulator(SimulatorOptions(**options), clock=clock)
        root = await sim.start("127.0.0.1", 0)
        started.append(sim)
        return sim, root

    yield make
    for sim in started:
        await sim.stop()
    if not spec_source().found:
        return  # the session says so once, at the end (pytest_terminal_summary)
    validator = get_validator()
    problems = [
        p
        for sim in started
        for p in validator.validate_all(sim.exchanges, require_auth=sim.options.auth != "none")
    ]
    assert not problems, "spec violations:\n" + "\n".join(problems[:20])


def client_for(
    root: str,
    *,
    client_id: str = "sim-client",
    client_secret: str = "sim-secret",
    path: str = "/api/public/v1",
    **kwargs: Any,
) -> AirbyteClient:
    """A client with client-credentials auth against a simulator root URL."""
    api = plan_url(root + path).candidates[0]
    auth = ClientCredentials(client_id, SecretStr(client_secret), api.token_url)
    return AirbyteClient(api, auth, **kwargs)


@asynccontextmanager
async def misbehaving_proxy(
    upstream: str,
    rewrite: Callable[[web.Request, str], str | web.Response | None] | None = None,
    *,
    before: Callable[[web.Request], Awaitable[None]] | None = None,
) -> AsyncIterator[str]:
    """A real HTTP hop in front of the simulator that misbehaves the way some servers do.

    *before* is awaited first for each request: a test holds some requests (a cancel that Airbyte
    never answers, an Airbyte that stalls) for as long as it likes, and counts what arrives.
    *rewrite* then sees the request and its query string and returns None (pass it on), a new
    query string, a JSON text (answered 200 as is) or a whole response.
    """
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.StreamResponse:
        if before is not None:
            await before(request)
        query = request.query_string
        replaced = rewrite(request, query) if rewrite is not None else None
        if isinstance(replaced, web.StreamResponse):
            return replaced
        if replaced is not None and replaced.startswith("{"):
            return web.Response(text=replaced, content_type="application/json")
        url = (
            upstream
            + request.path
            + (f"?{replaced if replaced is not None else query}" if query else "")
        )
        async with session.request(
            request.method,
            url,
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            data=await request.read(),
        ) as reply:
            body = await reply.read()
            response = web.Response(status=reply.status, body=body, content_type=reply.content_type)
            if "Date" in reply.headers:
                response.headers["Date"] = reply.headers["Date"]
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await session.close()


@pytest.fixture(scope="session")
def databases() -> Iterator[Databases]:
    """Fresh PostgreSQL databases for this session (see tests/postgres.py), dropped at its end."""
    made = Databases(server_url())
    yield made
    made.close()


@pytest.fixture
def pg_url(databases: Databases) -> str:
    """The URL of a new, empty PostgreSQL database (skipped, or failed under CI=true, without
    a server)."""
    return databases.new()
