"""A known secret must never appear in any log line, error message, repr or result."""

from __future__ import annotations

import io

import pytest

from airbyte_fleet._logging import configure_logging
from airbyte_fleet.api import AirbyteError
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio

SECRET = "Sup3r-S3cret-Value-xyz"


async def test_secret_never_leaks_through_logs_or_errors(make_sim: SimFactory) -> None:
    sink = io.StringIO()
    configure_logging("json", "debug", stream=sink)
    sim, root = await make_sim(
        connections=5, client_secret=SECRET, rate_429=0.3, rate_5xx=0.2, reset_rate=0.1, seed=7
    )
    shown: list[str] = []
    tokens: set[str] = set()
    async with client_for(root, client_secret=SECRET) as client:
        shown.append(repr(client.auth))
        for _ in range(5):
            try:
                await client.list_connections()
            except AirbyteError as exc:
                shown += [str(exc), repr(exc), exc.message]
        sim.expire_tokens()
        try:
            await client.get_job(123)
        except AirbyteError as exc:
            shown += [str(exc), repr(exc)]
    async with client_for(root, client_secret=SECRET + "-wrong") as bad:
        try:
            await bad.list_workspaces()
        except AirbyteError as exc:
            shown += [str(exc), repr(exc)]
    for exchange in sim.exchanges:
        auth = exchange.request_headers.get("authorization", "")
        if auth.startswith("Bearer "):
            tokens.add(auth.removeprefix("Bearer "))
    configure_logging("json", "info")
    output = sink.getvalue() + "\n".join(shown)
    assert "token_refreshed" in output  # the log really was captured
    assert tokens  # and tokens really were used
    assert SECRET not in output
    for token in tokens:
        assert token not in output
