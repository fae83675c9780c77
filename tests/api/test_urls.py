"""What users paste as AIRBYTE_BASE_URL, and what we make of it."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from airbyte_fleet.api import UnreachableError, plan_url, resolve_url
from airbyte_fleet.errors import ConfigError
from conftest import SimFactory

CLOUD = "https://api.airbyte.com/v1"


@pytest.mark.parametrize(
    ("raw", "base", "layout", "health"),
    [
        (None, CLOUD, "cloud", f"{CLOUD}/health"),
        ("", CLOUD, "cloud", f"{CLOUD}/health"),
        ("https://api.airbyte.com/v1", CLOUD, "cloud", f"{CLOUD}/health"),
        ("https://api.airbyte.com/v1/", CLOUD, "cloud", f"{CLOUD}/health"),
        ("https://api.airbyte.com", CLOUD, "cloud", f"{CLOUD}/health"),
        (
            "http://airbyte:8000",
            "http://airbyte:8000/api/public/v1",
            "public",
            "http://airbyte:8000/api/public/v1/health",
        ),
        ("http://airbyte:8000/", "http://airbyte:8000/api/public/v1", "public", None),
        ("http://airbyte:8001", "http://airbyte:8001/api/public/v1", "public", None),
        (
            "https://h.example.com:8000//",
            "https://h.example.com:8000/api/public/v1",
            "public",
            None,
        ),
        ("http://airbyte:8000/api/public/v1", "http://airbyte:8000/api/public/v1", "public", None),
        ("http://airbyte:8000/api/public/v1/", "http://airbyte:8000/api/public/v1", "public", None),
        ("http://airbyte:8000/api/public", "http://airbyte:8000/api/public/v1", "public", None),
        (
            "http://airbyte:8006",
            "http://airbyte:8006/v1",
            "legacy",
            "http://airbyte:8006/health",
        ),
        (
            "http://airbyte:8006/v1",
            "http://airbyte:8006/v1",
            "legacy",
            "http://airbyte:8006/health",
        ),
        ("http://airbyte:8006/v1//", "http://airbyte:8006/v1", "legacy", None),
        (
            "https://proxy.example.com/airbyte/api/public/v1",
            "https://proxy.example.com/airbyte/api/public/v1",
            "public",
            None,
        ),
        ("  http://airbyte:8000  ", "http://airbyte:8000/api/public/v1", "public", None),
    ],
)
def test_url_forms(raw: str | None, base: str, layout: str, health: str | None) -> None:
    plan = plan_url(raw)
    assert not plan.ambiguous
    api = plan.candidates[0]
    assert api.base == base
    assert api.layout == layout
    assert "//" not in api.base.split("://", 1)[1]
    assert api.token_url == f"{base}/applications/token"
    if health:
        assert api.health_url == health
    assert api.explanation


@pytest.mark.parametrize(
    "raw", ["http://airbyte.internal", "https://airbyte.example.com:9443", "http://h:8080/airbyte"]
)
def test_host_only_on_other_ports_is_ambiguous(raw: str) -> None:
    plan = plan_url(raw)
    assert plan.ambiguous
    assert [c.layout for c in plan.candidates] == ["public", "legacy"]
    assert plan.candidates[0].base.endswith("/api/public/v1")
    assert plan.candidates[1].base.endswith("/v1")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("airbyte:8000", "has no scheme; write it as http://airbyte:8000"),
        ("localhost", "has no scheme"),
        ("ftp://airbyte:8000", "uses the scheme 'ftp'"),
        ("http://airbyte:80x0", "'80x0', which is not a number from 1 to 65535"),
        ("http://airbyte:99999", "not a number from 1 to 65535"),
        ("http://airbyte:0", "port 0"),
        ("http://:8000", "has no host name"),
        ("http://airbyte:8000/api/v1", "set AIRBYTE_BASE_URL=http://airbyte:8000/api/public/v1"),
        ("http://airbyte:8000/api/public/v1?x=1", "has a query or fragment"),
        ("http://user:pw@airbyte:8000", "must not carry credentials"),
    ],
)
def test_bad_urls_are_one_clear_sentence(raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan_url(raw)
    message = info.value.message
    assert fragment in message
    assert message.endswith(".")
    assert "\n" not in message
    assert "pw@" not in message


def test_error_names_the_variable_the_user_set() -> None:
    with pytest.raises(ConfigError, match=r"^AIRBYTE_HOST 'nohost'"):
        plan_url("nohost", source="AIRBYTE_HOST")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("layouts", "expected"), [(("public",), "public"), (("legacy",), "legacy")]
)
async def test_ambiguous_host_is_probed(
    make_sim: SimFactory, layouts: tuple[str, ...], expected: str
) -> None:
    sim, root = await make_sim(layouts=layouts)
    plan = plan_url(root)  # a random port: either layout could be there
    assert plan.ambiguous
    async with aiohttp.ClientSession() as session:
        api = await resolve_url(plan, session)
    assert api.layout == expected
    health = [e for e in sim.exchanges if e.route == "/health"]
    assert health[-1].status == 200


@pytest.mark.anyio
async def test_nothing_listening_is_unreachable_naming_both_urls() -> None:
    port = _free_port()
    plan = plan_url(f"http://127.0.0.1:{port}")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(UnreachableError) as info:
            await resolve_url(plan, session, probe_timeout=2)
    message = info.value.message
    assert f"http://127.0.0.1:{port}/api/public/v1/health" in message
    assert f"http://127.0.0.1:{port}/health" in message
    assert "connection refused" in message
    assert "\n" not in message


@pytest.mark.anyio
async def test_a_server_that_is_not_airbyte_is_a_config_error(anyio_backend: str) -> None:
    app = web.Application()  # answers 404 to everything, like a wrong service on that port
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ConfigError) as info:
                await resolve_url(plan_url(f"http://127.0.0.1:{port}"), session)
    finally:
        await runner.cleanup()
    assert "(HTTP 404)" in info.value.message
    assert "set AIRBYTE_BASE_URL to the API's full URL" in info.value.message
