"""The /_simulator control routes used when the simulator runs as a separate process."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Api, StartApi

pytestmark = pytest.mark.anyio


async def _control(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with api.session.request(method, f"{api.root}/_simulator{path}", json=body) as reply:
        return reply.status, await reply.json()


async def test_stats_count_requests_tokens_and_jobs(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    await api.post(
        "/applications/token",
        auth=False,
        json={"client_id": "sim-client", "client_secret": "sim-secret"},
    )
    job = (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).body
    await api.get(f"/jobs/{job['jobId']}")
    await api.get(f"/jobs/{job['jobId']}", prefix="/v1")
    status, stats = await _control(api, "GET", "/stats")
    assert status == 200
    assert stats["requests"] == {
        "GET /jobs/{jobId}": 2,
        "POST /applications/token": 1,
        "POST /jobs": 1,
    }
    assert stats["token_requests"] == 1
    assert [j["jobId"] for j in stats["jobs"]] == [job["jobId"]]
    assert api.sim.stats() == stats


async def test_faults_route_updates_and_validates(start: StartApi) -> None:
    api = await start()
    status, faults = await _control(
        api, "POST", "/faults", {"rate_429": 1.0, "down_window": [100, 200]}
    )
    assert status == 200
    assert faults["rate_429"] == 1.0
    assert faults["down_window"] == [100, 200]
    assert api.sim.faults.down_window == (100, 200)
    assert (await api.get("/jobs")).status == 429
    assert (await _control(api, "POST", "/faults", {"rate_429": 2}))[0] == 400
    assert (await _control(api, "POST", "/faults", {"bogus": 1}))[0] == 400
    assert api.sim.faults.rate_429 == 1.0


async def test_connection_script_start_job_and_expire_routes(start: StartApi) -> None:
    api = await start()
    first, second = api.connection_ids()[:2]
    status, view = await _control(api, "POST", f"/connections/{first}", {"status": "inactive"})
    assert (status, view["status"]) == (200, "inactive")
    assert (await api.post("/jobs", json={"connectionId": first, "jobType": "sync"})).status == 409
    assert (await _control(api, "POST", f"/connections/{first}", {"status": "gone"}))[0] == 400
    assert (await _control(api, "POST", "/connections/nope", {"status": "active"}))[0] == 404

    script = {"connectionId": second, "seconds": 4, "incomplete_attempts": 0, "final": "failed"}
    assert await _control(api, "POST", "/script", script) == (200, {"queued": 1})
    assert (await _control(api, "POST", "/script", {**script, "final": "boom"}))[0] == 400
    status, job = await _control(
        api, "POST", "/start-job", {"connectionId": second, "jobType": "sync"}
    )
    assert (status, job["status"]) == (200, "running")
    assert (await _control(api, "POST", "/start-job", {"connectionId": second}))[0] == 409
    api.clock.advance(4)
    assert (await api.get(f"/jobs/{job['jobId']}")).body["status"] == "failed"

    assert (await api.get("/workspaces")).status == 200
    assert await _control(api, "POST", "/expire-tokens") == (200, {"expired": 1})
    assert (await api.get("/workspaces")).status == 401
    assert not any(e.path.startswith("/_simulator") for e in api.sim.exchanges)
