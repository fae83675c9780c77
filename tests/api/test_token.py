"""The token refresher: single flight, ahead of expiry, refresh-and-replay on 401, no loops."""

from __future__ import annotations

import anyio
import pytest
from aiohttp import web
from pydantic import SecretStr

from airbyte_fleet.api import AirbyteClient, AuthError, ClientCredentials, plan_url
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_hundred_concurrent_callers_cause_one_token_request(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3)
    async with client_for(root) as client:
        results: list[int] = []

        async def one() -> None:
            results.append(len(await client.list_workspaces()))

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(one)
    assert len(results) == 100
    assert sim.token_requests == 1
    assert sim.count("POST", "/applications/token") == 1


async def test_expired_token_under_load_refreshes_once(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3)
    async with client_for(root) as client:
        await client.list_workspaces()
        sim.expire_tokens()
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(client.list_workspaces)
        # Every one of the 100 got a 401 or not, but only one new token was fetched.
        assert sim.token_requests == 2
        assert client.stats.replays_after_401 >= 1
        assert client.stats.count("GET", "/workspaces") >= 101


async def test_refreshes_ahead_of_expiry(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, token_ttl=900)
    clock = ManualClock()
    api = plan_url(root + "/api/public/v1").candidates[0]
    auth = ClientCredentials("sim-client", SecretStr("sim-secret"), api.token_url, clock=clock)
    async with AirbyteClient(api, auth) as client:
        await client.list_workspaces()
        clock.now += 900 - 61  # still valid, outside the 60 s margin
        await client.list_workspaces()
        assert sim.token_requests == 1
        clock.now += 2  # inside the margin: refresh before Airbyte would refuse the token
        await client.list_workspaces()
        assert sim.token_requests == 2
        # No 401 was ever needed.
        assert all(e.status != 401 for e in sim.exchanges)
        assert auth.refreshes == 2


async def test_short_lived_tokens_use_a_proportional_margin(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=1, token_ttl=8)
    clock = ManualClock()
    api = plan_url(root + "/api/public/v1").candidates[0]
    auth = ClientCredentials("sim-client", SecretStr("sim-secret"), api.token_url, clock=clock)
    async with AirbyteClient(api, auth) as client:
        await client.list_workspaces()
        clock.now += 5.9  # margin is 8/4 = 2 s
        await client.list_workspaces()
        assert sim.token_requests == 1
        clock.now += 0.2
        await client.list_workspaces()
        assert sim.token_requests == 2


async def test_401_refreshes_once_and_replays(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3)
    async with client_for(root) as client:
        first = await client.list_workspaces()
        sim.expire_tokens()
        before = len(sim.exchanges)
        again = await client.list_workspaces()
    assert again == first
    tail = [(e.method, e.route, e.status) for e in sim.exchanges[before:]]
    assert tail == [
        ("GET", "/workspaces", 401),
        ("POST", "/applications/token", 200),
        ("GET", "/workspaces", 200),
    ]


async def test_second_401_is_an_auth_error_not_a_loop(anyio_backend: str) -> None:
    """A server that refuses even a fresh token: one refresh, one replay, then an AuthError."""
    hits = {"token": 0, "api": 0}

    async def token(request: web.Request) -> web.Response:
        hits["token"] += 1
        return web.json_response(
            {
                "access_token": f"tok-{hits['token']}-abcdef",
                "token_type": "Bearer",
                "expires_in": 900,
            }
        )

    async def workspaces(request: web.Request) -> web.Response:
        hits["api"] += 1
        return web.json_response({"status": 401, "title": "invalid-api-key"}, status=401)

    app = web.Application()
    app.router.add_post("/api/public/v1/applications/token", token)
    app.router.add_get("/api/public/v1/workspaces", workspaces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with client_for(f"http://127.0.0.1:{port}") as client:
            with pytest.raises(AuthError) as info:
                await client.list_workspaces()
    finally:
        await runner.cleanup()
    assert info.value.status == 401
    assert hits == {"token": 2, "api": 2}
    assert "tok-" not in info.value.message


async def test_token_endpoint_502_twice_then_works(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=1, token_failures=2)
    async with client_for(root) as client:
        await client.list_workspaces()
        assert client.stats.retries == 2
    statuses = [e.status for e in sim.exchanges if e.route == "/applications/token"]
    assert statuses == [502, 502, 200]


@pytest.mark.parametrize(("token_errors", "status"), [("cloud", 401), ("oss", 400)])
async def test_bad_credentials_name_the_variables(
    make_sim: SimFactory, token_errors: str, status: int
) -> None:
    sim, root = await make_sim(connections=1, token_errors=token_errors)
    async with client_for(root, client_secret="wrong-secret-value") as client:
        with pytest.raises(AuthError) as info:
            await client.list_workspaces()
    assert info.value.status == status
    assert "AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET" in info.value.message
    assert "wrong-secret-value" not in info.value.message
    assert sim.count("POST", "/applications/token") == 1  # 4xx is never retried
    assert sim.count("GET", "/workspaces") == 0


async def test_token_without_type_or_lifetime_is_accepted(anyio_backend: str) -> None:
    """Older OSS answers only {"access_token"}: use it, and assume 180 s."""
    seen: list[str] = []

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "old-oss-token-1"})

    async def workspaces(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.json_response({"data": []})

    app = web.Application()
    app.router.add_post("/api/public/v1/applications/token", token)
    app.router.add_get("/api/public/v1/workspaces", workspaces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    clock = ManualClock()
    api = plan_url(f"http://127.0.0.1:{port}/api/public/v1").candidates[0]
    auth = ClientCredentials("id", SecretStr("secret-x"), api.token_url, clock=clock)
    try:
        async with AirbyteClient(api, auth) as client:
            await client.list_workspaces()
            clock.now += 180 - 46  # 180 s assumed, 45 s margin (a quarter)
            await client.list_workspaces()
            assert auth.refreshes == 1
            clock.now += 2
            await client.list_workspaces()
            assert auth.refreshes == 2
    finally:
        await runner.cleanup()
    assert seen[0] == "Bearer old-oss-token-1"
