"""Fault labels on recorded exchanges, the malformed-body fault and the accounting helpers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

import airbyte_fleet.simulator._cli as sim_cli
from airbyte_fleet.simulator import FAULT_KINDS, JobScript, Simulator, main

from .conftest import Api, StartApi

pytestmark = pytest.mark.anyio

TOKEN_BODY = {"client_id": "sim-client", "client_secret": "sim-secret"}


def _faults(api: Api) -> list[str | None]:
    return [e.fault for e in api.sim.exchanges]


async def test_honest_exchanges_have_no_fault(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    await api.get("/health")
    await api.post("/applications/token", auth=False, json=TOKEN_BODY)
    await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})  # an honest 409
    await api.get("/nowhere")  # an honest 404
    assert [e.status for e in api.sim.exchanges] == [200, 200, 200, 409, 404]
    assert _faults(api) == [None] * 5


@pytest.mark.parametrize(
    ("options", "status", "fault"),
    [
        ({"rate_429": 1.0}, 429, "429"),
        ({"rate_5xx": 1.0, "error_status": 500}, 500, "5xx"),
        ({"malformed_rate": 1.0}, 200, "malformed"),
    ],
)
async def test_injected_answers_are_labelled(
    start: StartApi, options: dict[str, Any], status: int, fault: str
) -> None:
    api = await start(**options)
    cid = api.connection_ids()[0]
    assert (await api.get("/workspaces")).status == status
    assert (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).status == status
    assert (await api.get("/health")).status == 200
    assert _faults(api) == [fault, fault, None]
    assert api.sim.jobs == []  # injected before the handler: nothing was created


async def test_token_failures_are_labelled(start: StartApi) -> None:
    api = await start(token_failures=1)
    for _ in range(2):
        await api.post("/applications/token", auth=False, json=TOKEN_BODY)
    assert [(e.status, e.fault) for e in api.sim.exchanges] == [(502, "token_failure"), (200, None)]


async def test_dropped_connections_are_labelled_reset_or_down(start: StartApi) -> None:
    api = await start(reset_rate=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.get("/workspaces")
    assert {(e.status, e.fault) for e in api.sim.exchanges} == {(0, "reset")}

    api = await start(down_window=(0.0, 5.0))
    with pytest.raises(aiohttp.ClientConnectionError):
        await api.get("/workspaces")
    assert {(e.status, e.fault) for e in api.sim.exchanges} == {(0, "down")}
    api.clock.advance(5)
    assert (await api.get("/workspaces")).status == 200
    assert api.sim.exchanges[-1].fault is None


async def test_slow_post_is_labelled_and_answers_a_real_job(start: StartApi) -> None:
    api = await start(slow_post_seconds=0.01)
    cid = api.connection_ids()[0]
    reply = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert reply.status == 200
    assert reply.body["connectionId"] == cid
    # Refusals are answered at once, so they are not slow.
    conflict = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert conflict.status == 409
    await api.get("/jobs")
    assert _faults(api) == ["slow_post", None, None]


def test_fault_kinds_are_the_documented_ones() -> None:
    assert set(FAULT_KINDS) == {
        "429",
        "5xx",
        "reset",
        "down",
        "token_failure",
        "malformed",
        "slow_post",
        "odd_status",
    }


# -- malformed bodies ----------------------------------------------------------------------


async def test_malformed_bodies_are_truncated_json_on_every_api_route(start: StartApi) -> None:
    api = await start(malformed_rate=1.0)
    cid = api.connection_ids()[0]
    replies = [
        await api.get("/workspaces"),
        await api.get("/connections"),
        await api.get(f"/connections/{cid}"),
        await api.get("/jobs"),
        await api.get("/jobs/12345", prefix="/v1"),
        await api.delete("/jobs/12345"),
        await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"}),
    ]
    for _ in range(30):
        replies.append(await api.get("/jobs"))
    for reply in replies:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.body is None  # the conftest client could not parse it
        assert reply.raw.startswith(b"{")
        # JSONDecodeError, or UnicodeDecodeError for the b"\xff" variant; both are ValueErrors.
        with pytest.raises((json.JSONDecodeError, UnicodeDecodeError)):
            json.loads(reply.raw)
    assert len({reply.raw for reply in replies}) > 10  # the cut point varies
    assert any(reply.raw.endswith(b"\xff\xfe") for reply in replies)
    # Nothing ran: no job, and the connection is still free once the fault stops.
    assert api.sim.jobs == []
    assert {e.fault for e in api.sim.exchanges} == {"malformed"}
    api.sim.faults.malformed_rate = 0.0
    assert (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).status == 200


async def test_health_and_token_are_never_malformed(start: StartApi) -> None:
    api = await start(malformed_rate=1.0)
    assert (await api.get("/health")).raw == b"Successful operation"
    token = await api.post("/applications/token", auth=False, json=TOKEN_BODY)
    assert token.status == 200
    assert token.body["token_type"] == "Bearer"
    assert _faults(api) == [None, None]


async def test_retrying_a_garbled_read_is_harmless(start: StartApi) -> None:
    api = await start(malformed_rate=0.5, seed=3)
    cid = api.connection_ids()[0]
    api.sim.script(cid, JobScript(seconds=100))
    api.sim.faults.malformed_rate = 0.0
    job = (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).body
    api.sim.faults.malformed_rate = 0.5
    bodies = []
    for _ in range(20):
        reply = await api.get(f"/jobs/{job['jobId']}")
        if reply.body is not None:
            bodies.append(reply.body)
    assert 3 <= len(bodies) <= 17
    assert all(body == bodies[0] for body in bodies)
    assert len(api.sim.jobs) == 1


async def test_malformed_rate_is_seeded_and_leaves_other_faults_alone(start: StartApi) -> None:
    async def run(**options: Any) -> list[tuple[int, str | None]]:
        api = await start(seed=5, **options)
        for _ in range(60):
            await api.get("/workspaces")
        return [(e.status, e.fault) for e in api.sim.exchanges]

    plain = await run(rate_429=0.3)
    mixed = await run(rate_429=0.3, malformed_rate=0.4)
    again = await run(rate_429=0.3, malformed_rate=0.4)
    assert mixed == again
    # The malformed draw is a separate stream: the 429s land on the same requests.
    assert [s == 429 for s, _ in plain] == [s == 429 for s, _ in mixed]
    malformed = sum(fault == "malformed" for _, fault in mixed)
    assert 5 <= malformed <= 30


async def test_malformed_rate_via_control_route(start: StartApi) -> None:
    api = await start()
    url = f"{api.root}/_simulator/faults"
    async with api.session.post(url, json={"malformed_rate": 1}) as reply:
        assert reply.status == 200
        assert (await reply.json())["malformed_rate"] == 1.0
    assert (await api.get("/workspaces")).body is None
    async with api.session.post(url, json={"malformed_rate": 1.5}) as reply:
        assert reply.status == 400
    async with api.session.post(url, json={"malformed_rate": "often"}) as reply:
        assert reply.status == 400
    assert api.sim.faults.malformed_rate == 1.0


def test_cli_passes_the_new_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Simulator] = []

    async def fake_serve(simulator: Simulator, host: str, port: int) -> int:
        seen.append(simulator)
        return 0

    monkeypatch.setattr(sim_cli, "_serve", fake_serve)
    assert main(["--malformed-rate", "0.25", "--max-running", "3"]) == 0
    assert seen[0].options.malformed_rate == 0.25
    assert seen[0].options.max_running == 3
    assert seen[0].faults.malformed_rate == 0.25
    assert main([]) == 0
    assert seen[1].options.max_running is None
    assert main(["--malformed-rate", "2"]) == 2
    assert main(["--max-running", "0"]) == 2
    assert len(seen) == 2


# -- accounting helpers --------------------------------------------------------------------


async def test_jobs_for_and_posts_for(start: StartApi) -> None:
    api = await start()
    first, second = api.connection_ids()[:2]
    api.sim.script(first, JobScript(seconds=2))
    body = {"connectionId": first, "jobType": "sync"}
    assert (await api.post("/jobs", json=body)).status == 200
    assert (await api.post("/jobs", json=body)).status == 409
    api.sim.faults.rate_429 = 1.0
    assert (await api.post("/jobs", json=body)).status == 429
    api.sim.faults.rate_429 = 0.0
    api.clock.advance(2)
    # Any spelling of the id names the connection, as in the API.
    upper = {"connectionId": first.upper(), "jobType": "reset"}
    assert (await api.post("/jobs", json=upper)).status == 200
    await api.post("/jobs", json={"connectionId": second, "jobType": "sync"})
    await api.post("/jobs", data=b"not json", headers={"Content-Type": "application/json"})
    await api.get("/jobs", params={"connectionId": first})

    posts = api.sim.posts_for(first)
    assert [(p.status, p.fault) for p in posts] == [
        (200, None),
        (409, None),
        (429, "429"),
        (200, None),
    ]
    assert all(p.method == "POST" and p.route == "/jobs" for p in posts)
    assert api.sim.posts_for(first.upper()) == posts
    assert len(api.sim.posts_for(second)) == 1

    jobs = api.sim.jobs_for(first)
    assert [j["jobType"] for j in jobs] == ["sync", "reset"]
    assert jobs[0]["status"] == "succeeded"
    assert [j["jobId"] for j in jobs] == [
        j["jobId"] for j in api.sim.jobs if j["connectionId"] == first
    ]
    assert api.sim.jobs_for(first.upper()) == jobs
    assert api.sim.jobs_for("00000000-0000-4000-8000-000000000000") == []
    assert api.sim.posts_for("not-an-id") == []


async def test_posts_for_records_a_slow_post_once_answered(start: StartApi) -> None:
    api = await start(slow_post_seconds=0.05)
    cid = api.connection_ids()[0]
    task = asyncio.create_task(api.post("/jobs", json={"connectionId": cid, "jobType": "sync"}))
    for _ in range(100):
        await asyncio.sleep(0.005)
        if api.sim.jobs_for(cid):
            break
    # The job exists while the POST is still held back, and only then is it recorded.
    assert len(api.sim.jobs_for(cid)) == 1
    assert api.sim.posts_for(cid) == []
    assert api.sim.count("POST", "/jobs") == 1
    await task
    assert [p.fault for p in api.sim.posts_for(cid)] == ["slow_post"]
