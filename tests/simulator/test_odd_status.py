"""JobScript.odd_status: a status outside the spec's enum while the job runs."""

from __future__ import annotations

from typing import Any

import pytest

from airbyte_fleet.simulator import JobScript

from .conftest import Api, StartApi

pytestmark = pytest.mark.anyio

ODD = "paused_by_admin"


async def _post(api: Api, cid: str) -> dict[str, Any]:
    reply = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert reply.status == 200
    body: dict[str, Any] = reply.body
    return body


async def test_odd_status_replaces_running_then_the_script_goes_on(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    api.sim.script(
        cid, JobScript(seconds=8, pending_seconds=1, incomplete_attempts=1, odd_status=ODD)
    )
    job = await _post(api, cid)
    assert job["status"] == "pending"
    # Timeline: pending [0,1) odd [1,4) incomplete [4,5) odd [5,8) succeeded at 8.
    seen = []
    for step in (1.5, 3.0, 1.0, 1.0, 2.0):
        api.clock.advance(step)
        seen.append((await api.get(f"/jobs/{job['jobId']}")).body)
    assert [b["status"] for b in seen] == [ODD, "incomplete", ODD, ODD, "succeeded"]
    assert [b["duration"] for b in seen] == ["PT1S", "PT4S", "PT5S", "PT5S", "PT8S"]
    rows = [b["rowsSynced"] for b in seen]
    assert rows == sorted(rows)
    assert rows[0] > 0
    assert "lastUpdatedAt" not in seen[0]
    assert "lastUpdatedAt" in seen[-1]
    # Only the answers that carry the odd status are labelled.
    odd = "odd_status"
    assert [e.fault for e in api.sim.exchanges] == [None, odd, None, odd, odd, None]


async def test_every_route_that_shows_the_job_is_labelled(start: StartApi) -> None:
    api = await start()
    cid, other = api.connection_ids()[:2]
    api.sim.script(cid, JobScript(seconds=10, pending_seconds=0, odd_status=ODD))
    job = await _post(api, cid)
    assert job["status"] == ODD  # no pending time: the POST itself shows it
    await _post(api, other)
    listed = (await api.get("/jobs")).body["data"]
    assert [j["status"] for j in listed] == [ODD, "pending"]
    # The spec's status filter cannot name it, and "running" does not match it.
    assert (await api.get("/jobs", params={"status": "running"})).body["data"] == []
    assert (await api.get("/jobs", params={"connectionId": other})).status == 200
    cancelled = await api.delete(f"/jobs/{job['jobId']}")
    assert cancelled.body["status"] == "cancelled"
    assert [e.fault for e in api.sim.exchanges] == [
        "odd_status",  # POST
        None,  # POST other
        "odd_status",  # GET /jobs with the odd one on the page
        None,  # status=running
        None,  # only the other connection
        None,  # DELETE answers cancelled
    ]
    assert api.sim.job(job["jobId"])["status"] == "cancelled"


async def test_odd_status_still_counts_as_a_live_job(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    api.sim.script(cid, JobScript(seconds=4, pending_seconds=0, odd_status="on_hold"))
    await _post(api, cid)
    again = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert again.status == 409
    api.clock.advance(4)
    assert (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).status == 200


async def test_script_control_route_accepts_odd_status(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    url = f"{api.root}/_simulator/script"
    script = {"connectionId": cid, "seconds": 5, "pending_seconds": 0, "odd_status": ODD}
    async with api.session.post(url, json=script) as reply:
        assert (reply.status, await reply.json()) == (200, {"queued": 1})
    for bad in ("running", "", 7):
        async with api.session.post(url, json={**script, "odd_status": bad}) as reply:
            assert reply.status == 400, bad
    job = await _post(api, cid)
    assert job["status"] == ODD


def test_odd_status_validation() -> None:
    assert JobScript(odd_status="paused_by_admin").odd_status == "paused_by_admin"
    for known in ("running", "queued", "succeeded"):
        with pytest.raises(ValueError, match="odd_status"):
            JobScript(odd_status=known)
    with pytest.raises(ValueError, match="odd_status"):
        JobScript(odd_status="  ")
