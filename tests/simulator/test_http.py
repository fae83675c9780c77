"""Routing, layouts, recording of exchanges, fault injection and determinism."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from airbyte_fleet.simulator import (
    Exchange,
    FakeClock,
    Faults,
    JobScript,
    Simulator,
    SimulatorOptions,
)

from .conftest import LEGACY, PUBLIC, StartApi

pytestmark = pytest.mark.anyio


async def test_both_prefixes_serve_the_same_world(start: StartApi) -> None:
    api = await start()
    public = await api.get("/connections", prefix=PUBLIC)
    legacy = await api.get("/connections", prefix=LEGACY)
    assert public.body["data"] == legacy.body["data"]
    assert public.body["next"].startswith(f"{api.root}{PUBLIC}/connections?")
    assert legacy.body["next"].startswith(f"{api.root}{LEGACY}/connections?")
    assert api.sim.count("GET", "/connections") == 2


@pytest.mark.parametrize(
    ("layouts", "served", "missing"),
    [(("public",), [PUBLIC], [LEGACY, ""]), (("legacy",), [LEGACY, ""], [PUBLIC])],
)
async def test_layouts_restrict_the_prefixes(
    start: StartApi, layouts: tuple[str, ...], served: list[str], missing: list[str]
) -> None:
    api = await start(layouts=layouts)
    for prefix in served:
        assert (await api.get("/health", prefix=prefix)).status == 200
    for prefix in missing:
        assert (await api.get("/health", prefix=prefix)).status == 404
        if prefix:
            assert (await api.get("/workspaces", prefix=prefix)).status == 404


async def test_unknown_paths_and_methods(start: StartApi) -> None:
    api = await start()
    assert (await api.get("/nowhere")).status == 404
    assert (await api.get("/jobs/1/attempts")).status == 404
    assert (await api.get("/api/v1/jobs/list", prefix="")).status == 404
    wrong = await api.call("PUT", "/jobs")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "GET, POST"
    routes = [(e.route, e.prefix) for e in api.sim.exchanges]
    assert routes[:3] == [(None, PUBLIC), (None, PUBLIC), (None, "")]
    assert routes[3] == ("/jobs", PUBLIC)


async def test_exchanges_record_everything(start: StartApi) -> None:
    api = await start(clock=FakeClock(1_800_000_000.0))
    cid = api.connection_ids()[0]
    await api.get("/jobs", params={"limit": "5"})
    api.clock.advance(2)
    await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    get_jobs, post_jobs = api.sim.exchanges
    assert isinstance(get_jobs, Exchange)
    assert (get_jobs.method, get_jobs.path, get_jobs.query) == ("GET", f"{PUBLIC}/jobs", "limit=5")
    assert (get_jobs.route, get_jobs.prefix, get_jobs.status) == ("/jobs", PUBLIC, 200)
    assert get_jobs.at == 1_800_000_000.0
    assert post_jobs.at == 1_800_000_002.0
    assert get_jobs.request_headers["authorization"] == f"Bearer {api.token}"
    assert post_jobs.request_headers["content-type"] == "application/json"
    assert json.loads(post_jobs.request_body) == {"connectionId": cid, "jobType": "sync"}
    assert post_jobs.response_headers["content-type"] == "application/json"
    assert json.loads(post_jobs.response_body)["connectionId"] == cid
    assert api.sim.count("post", "/jobs") == 1


async def test_control_routes_are_not_recorded(start: StartApi) -> None:
    api = await start()
    async with api.session.get(f"{api.root}/_simulator/stats") as reply:
        assert reply.status == 200
    assert api.sim.exchanges == []


async def test_rate_limit_fault_has_no_retry_after_by_default(start: StartApi) -> None:
    api = await start(rate_429=1.0)
    for path, method in (("/jobs", "GET"), ("/applications/token", "POST")):
        reply = await api.call(method, path, json={})
        assert reply.status == 429
        assert reply.body == {"message": "You are being rate limited."}
        assert "Retry-After" not in reply.headers
    api.sim.faults.retry_after = 2
    assert (await api.get("/jobs")).headers["Retry-After"] == "2"
    api.sim.faults.update({"retry_after": 0.5, "rate_429": 0.0})
    assert (await api.get("/jobs")).status == 200
    # Health is never faulted.
    api.sim.faults.rate_429 = 1.0
    assert (await api.get("/health")).status == 200


async def test_error_fault_happens_before_the_handler(start: StartApi) -> None:
    api = await start(rate_5xx=1.0, error_status=502)
    cid = api.connection_ids()[0]
    reply = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert reply.status == 502
    assert list(reply.body) == ["errorId"]
    assert api.sim.jobs == []
    assert api.sim.count("POST", "/jobs") == 1


async def test_reset_fault_drops_the_connection(start: StartApi) -> None:
    api = await start(reset_rate=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.get("/workspaces")
    # aiohttp itself retries an idempotent request once after a disconnect.
    assert 1 <= len(api.sim.exchanges) <= 2
    for exchange in api.sim.exchanges:
        assert (exchange.status, exchange.response_body, exchange.route) == (0, b"", "/workspaces")
    cid = api.connection_ids()[0]
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert api.sim.jobs == []
    api.sim.faults.reset_rate = 0.0
    assert (await api.get("/workspaces")).status == 200


async def test_down_window_follows_the_simulator_clock(start: StartApi) -> None:
    api = await start(down_window=(5.0, 10.0))
    assert (await api.get("/workspaces")).status == 200
    api.clock.advance(5)
    for path in ("/workspaces", "/jobs"):
        with pytest.raises(aiohttp.ClientConnectionError):
            await api.get(path)
    assert (await api.get("/health")).status == 200
    api.clock.advance(5)
    assert (await api.get("/workspaces")).status == 200
    statuses = [e.status for e in api.sim.exchanges]
    assert statuses[0] == 200
    assert statuses[-2:] == [200, 200]
    assert set(statuses[1:-2]) == {0}


async def test_token_failures_count_down(start: StartApi) -> None:
    api = await start(token_failures=2)
    body = {"client_id": "sim-client", "client_secret": "sim-secret"}
    statuses = [
        (await api.post("/applications/token", auth=False, json=body)).status for _ in range(3)
    ]
    assert statuses == [502, 502, 200]
    assert api.sim.token_requests == 1
    assert api.sim.faults.token_failures == 0
    api.sim.faults.token_failures = 1
    assert (await api.post("/applications/token", auth=False, json=body)).status == 502


async def test_fault_rates_are_fractional_and_seeded(start: StartApi) -> None:
    async def statuses(seed: int) -> list[int]:
        api = await start(seed=seed, rate_429=0.3, rate_5xx=0.3)
        return [(await api.get("/workspaces")).status for _ in range(60)]

    first, again, other = await statuses(7), await statuses(7), await statuses(8)
    assert first == again
    assert first != other
    assert 5 <= first.count(429) <= 35
    assert 5 <= first.count(503) <= 35
    assert first.count(200) >= 5


async def test_slow_post_creates_the_job_before_answering(start: StartApi) -> None:
    api = await start(slow_post_seconds=0.15)
    cid = api.connection_ids()[0]
    api.sim.script(cid, JobScript(seconds=100, pending_seconds=0))
    began = time.monotonic()
    task = asyncio.create_task(api.post("/jobs", json={"connectionId": cid, "jobType": "sync"}))
    for _ in range(100):
        await asyncio.sleep(0.01)
        if api.sim.jobs:
            break
    assert api.sim.jobs
    assert not task.done()
    reply = await task
    assert time.monotonic() - began >= 0.15
    assert reply.status == 200
    assert reply.body["status"] == "running"


def test_fault_validation() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match="unknown"):
        faults.update({"rate_9xx": 1})
    with pytest.raises(ValueError, match="rate_429"):
        faults.update({"rate_429": 1.5})
    with pytest.raises(ValueError, match="down_window"):
        faults.update({"down_window": (3, 1)})
    assert faults.as_dict()["rate_429"] == 0.0
    with pytest.raises(ValueError, match="inactive_connections"):
        SimulatorOptions(inactive_connections=99, connections=3)
    with pytest.raises(ValueError, match="layouts"):
        SimulatorOptions(layouts=("cloud",))  # type: ignore[arg-type]
    assert "sim-secret" not in repr(SimulatorOptions())


def test_the_world_is_deterministic_for_a_seed() -> None:
    one, two, other = (Simulator(SimulatorOptions(seed=s)) for s in (3, 3, 4))
    assert one.connections == two.connections
    assert one.workspaces == two.workspaces
    assert one.connections != other.connections
    names = [c["name"] for c in one.connections]
    assert len(set(names)) == 50
    assert names[6].endswith(" 007")


async def test_job_plans_are_deterministic_for_a_seed(start: StartApi) -> None:
    async def run(seed: int) -> list[dict]:
        api = await start(seed=seed, connections=10, failure_rate=0.5, incomplete_rate=0.5)
        for cid in api.connection_ids():
            await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
        api.clock.advance(3.0)
        return api.sim.jobs

    first, again, other = await run(11), await run(11), await run(12)
    assert first == again
    assert first != other
