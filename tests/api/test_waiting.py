"""Waiting on Airbyte out loud: a hung server gets a line naming the wait and its timeouts, and an
https:// URL for a plain-HTTP server gets a sentence about TLS, not an errno."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from structlog.testing import capture_logs

from airbyte_fleet._logging import configure_logging
from airbyte_fleet.api import AirbyteClient, NoAuth, Timeouts, UnreachableError, plan_url
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio

SHORT = Timeouts(connect=0.5, read=0.4, notice=0.05)


@asynccontextmanager
async def hung_server() -> AsyncIterator[str]:
    """Accepts connections and reads requests, and never answers (a wedged Airbyte or proxy)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def _waiting(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "airbyte_waiting"]


async def test_a_hung_airbyte_is_named_with_the_timeouts_in_force() -> None:
    async with hung_server() as root:
        api = plan_url(root + "/api/public/v1").candidates[0]
        with capture_logs() as logs:
            async with AirbyteClient(api, NoAuth(), timeouts=SHORT) as client:
                with pytest.raises(UnreachableError, match="timed out"):
                    await client.check()
    (line,) = _waiting(logs)
    assert line["log_level"] == "info"
    assert line["request"] == "GET /health"
    assert line["url"] == api.health_url
    assert line["connect_timeout_s"] == 0.5
    assert line["read_timeout_s"] == 0.4
    assert "AIRBYTE_READ_TIMEOUT" in str(line["hint"])


async def test_the_line_reaches_stderr_as_one_json_line() -> None:
    stderr = io.StringIO()
    configure_logging("json", "info", stream=stderr)
    async with hung_server() as root:
        api = plan_url(root + "/api/public/v1").candidates[0]
        async with AirbyteClient(api, NoAuth(), timeouts=SHORT) as client:
            with pytest.raises(UnreachableError):
                await client.check()
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    (line,) = [e for e in lines if e["event"] == "airbyte_waiting"]
    assert (line["level"], line["request"], line["read_timeout_s"]) == ("info", "GET /health", 0.4)


async def test_a_stall_is_said_once_not_per_waiting_request() -> None:
    async with hung_server() as root:
        api = plan_url(root + "/api/public/v1").candidates[0]
        with capture_logs() as logs:
            async with AirbyteClient(api, NoAuth(), timeouts=SHORT) as client:
                results = await asyncio.gather(
                    *(client.health() for _ in range(5)), return_exceptions=True
                )
    assert len(results) == 5
    assert len(_waiting(logs)) == 1


async def test_answers_that_keep_coming_are_no_stall(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=3)
    with capture_logs() as logs:
        async with client_for(root, timeouts=Timeouts(notice=0.05)) as client:
            await client.check()
            for _ in range(3):
                await client.list_connections()
    assert _waiting(logs) == []


async def test_a_hung_server_behind_a_host_only_url_is_named_while_probing() -> None:
    async with hung_server() as root:
        with capture_logs() as logs, pytest.raises(UnreachableError, match="timed out"):
            await AirbyteClient.open(plan_url(root), NoAuth(), timeouts=SHORT)
    lines = _waiting(logs)
    assert [line["url"] for line in lines] == [
        f"{root}/api/public/v1/health",
        f"{root}/health",
    ]
    assert all(line["timeout_s"] == 0.5 for line in lines)
    assert all("looking for Airbyte's API" in str(line["request"]) for line in lines)
    assert all("AIRBYTE_CONNECT_TIMEOUT" in str(line["hint"]) for line in lines)


async def test_https_against_a_plain_http_server_says_tls_and_http(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=1)
    https = root.replace("http://", "https://", 1)
    api = plan_url(https + "/api/public/v1").candidates[0]
    async with AirbyteClient(api, NoAuth(), timeouts=SHORT) as client:
        with pytest.raises(UnreachableError) as caught:
            await client.check()
    message = caught.value.message
    assert "TLS handshake failed" in message
    assert "http://" in message
    assert "operation not permitted" not in message


async def test_https_probe_of_a_plain_http_server_says_tls(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=1)
    https = root.replace("http://", "https://", 1)
    with pytest.raises(UnreachableError) as caught:
        await AirbyteClient.open(plan_url(https), NoAuth(), timeouts=SHORT)
    assert caught.value.message.count("TLS handshake failed") == 2
    assert "operation not permitted" not in caught.value.message
