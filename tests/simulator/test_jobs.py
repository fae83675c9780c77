"""Job creation, lifecycle, cancellation and the errors around them."""

from __future__ import annotations

import pytest

from airbyte_fleet.simulator import (
    ConnectionNotActiveError,
    FakeClock,
    JobAlreadyRunningError,
    JobScript,
)

from .conftest import LEGACY, StartApi

pytestmark = pytest.mark.anyio

# A whole minute, so startTime shows Java's dropped ":00" seconds.
MINUTE = 1_760_000_040


async def test_scripted_lifecycle_through_incomplete(start: StartApi) -> None:
    api = await start(clock=FakeClock(MINUTE))
    cid = api.connection_ids()[0]
    api.sim.script(cid, JobScript(seconds=8, pending_seconds=1, incomplete_attempts=1))
    created = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert created.status == 200
    job = created.body
    assert job == {
        "jobId": job["jobId"],
        "status": "pending",
        "jobType": "sync",
        "startTime": "2025-10-09T08:54Z",
        "connectionId": cid,
    }
    seen = []
    # Timeline: pending [0,1) running [1,4) incomplete [4,5) running [5,8) succeeded at 8.
    for step in (0.5, 1.0, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 5.0):
        api.clock.advance(step)
        reply = await api.get(f"/jobs/{job['jobId']}")
        seen.append(reply.body)
    statuses = [body["status"] for body in seen]
    assert statuses == [
        "pending",
        "running",
        "running",
        "incomplete",
        "running",
        "running",
        "running",
        "succeeded",
        "succeeded",
    ]
    for body in seen:
        terminal = body["status"] == "succeeded"
        assert ("lastUpdatedAt" in body) is terminal
        assert ("duration" in body) is (body["status"] != "pending")
    # Duration measures to the latest transition, not to now.
    assert [b.get("duration") for b in seen[1:5]] == ["PT1S", "PT1S", "PT4S", "PT5S"]
    assert seen[-1]["duration"] == "PT8S"
    assert seen[-1]["lastUpdatedAt"] == "2025-10-09T08:54:08Z"
    rows = [b.get("rowsSynced", 0) for b in seen]
    assert rows == sorted(rows)
    assert seen[-1]["rowsSynced"] == seen[-2]["rowsSynced"] > 0
    assert seen[-1]["bytesSynced"] > seen[-1]["rowsSynced"]


@pytest.mark.parametrize("final", ["failed", "cancelled"])
async def test_scripted_failure_and_cancellation(start: StartApi, final: str) -> None:
    api = await start()
    cid = api.connection_ids()[1]
    api.sim.script(cid, JobScript(seconds=65, final=final))  # type: ignore[arg-type]
    job = (await api.post("/jobs", json={"connectionId": cid, "jobType": "reset"})).body
    assert job["jobType"] == "reset"
    api.clock.advance(65)
    body = (await api.get(f"/jobs/{job['jobId']}")).body
    assert body["status"] == final
    assert body["duration"] == "PT1M5S"
    assert "lastUpdatedAt" in body


async def test_random_plans_follow_the_rates(start: StartApi) -> None:
    api = await start(
        connections=6, failure_rate=1.0, incomplete_rate=1.0, sync_seconds=(10.0, 20.0)
    )
    ids = []
    for cid in api.connection_ids():
        ids.append(
            (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).body["jobId"]
        )
    assert ids == sorted(ids)
    assert len(set(ids)) == 6
    assert all(job_id > 10_000_000 for job_id in ids)
    seen: dict[int, list[str]] = {job_id: [] for job_id in ids}
    for _ in range(50):
        api.clock.advance(0.5)
        for job in api.sim.jobs:
            seen[job["jobId"]].append(job["status"])
    for statuses in seen.values():
        assert "incomplete" in statuses
        assert statuses[-1] == "failed"
        durations_end = statuses.index("failed")
        assert 10 / 0.5 - 1 <= durations_end <= 20 / 0.5


async def test_already_running_conflict_has_the_exact_body(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    api.sim.script(cid, JobScript(seconds=5))
    first = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    for job_type in ("sync", "reset"):
        reply = await api.post("/jobs", json={"connectionId": cid, "jobType": job_type})
        assert reply.status == 409
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.body == {
            "status": 409,
            "type": "https://reference.airbyte.com/reference/errors#try-again-later",
            "title": "try-again-later",
            "detail": "Please try again later.",
            "data": {"message": f"A sync is already running for: {cid}"},
        }
    api.clock.advance(5)
    again = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert again.status == 200
    assert again.body["jobId"] > first.body["jobId"]
    assert len(api.sim.jobs) == 2


async def test_inactive_connection_is_a_state_conflict(start: StartApi) -> None:
    api = await start(connections=4, inactive_connections=1)
    ids = api.connection_ids()
    assert [c["status"] for c in api.sim.connections] == ["active"] * 3 + ["inactive"]
    api.sim.set_connection_status(ids[0], "locked")
    for cid in (ids[0], ids[3]):
        reply = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
        assert reply.status == 409
        assert reply.body["title"] == "state-conflict"
        assert (
            reply.body["type"]
            == "https://reference.airbyte.com/reference/errors#409-state-conflict"
        )
        assert reply.body["data"] == {"message": "Could not fulfill request"}
    assert api.sim.jobs == []


async def test_refresh_is_unprocessable(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    reply = await api.post("/jobs", json={"connectionId": cid, "jobType": "refresh"})
    assert reply.status == 422
    assert reply.body["title"] == "unprocessable-entity"
    assert reply.body["data"]["message"] == "Refreshes are not supported in the public API"


async def test_unknown_connection_is_not_found(start: StartApi) -> None:
    api = await start()
    missing = "00000000-0000-4000-8000-000000000000"
    reply = await api.post("/jobs", json={"connectionId": missing, "jobType": "sync"})
    assert reply.status == 404
    assert reply.body["title"] == "resource-not-found"
    assert reply.body["data"] == {"resourceType": "connection", "resourceId": missing}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"jobType": "sync"}',
        b'{"connectionId": "not-a-uuid", "jobType": "sync"}',
        b'{"connectionId": "00000000-0000-4000-8000-000000000000", "jobType": "upgrade"}',
    ],
)
async def test_malformed_job_requests_are_bad_requests(start: StartApi, body: bytes) -> None:
    api = await start()
    reply = await api.post("/jobs", data=body, headers={"Content-Type": "application/json"})
    assert reply.status == 400
    assert reply.body["title"] == "bad-request"


async def test_get_unknown_or_malformed_job(start: StartApi) -> None:
    api = await start()
    reply = await api.get("/jobs/123", prefix=LEGACY)
    assert reply.status == 404
    assert reply.body["data"] == {"resourceType": "job", "resourceId": "123"}
    assert (await api.get("/jobs/abc")).status == 400
    assert (await api.get("/jobs/1_0")).status == 400
    assert (await api.get("/jobs/99999999999999999999")).status == 400
    assert (await api.delete("/jobs/99")).status == 404


async def test_cancel_running_then_terminal(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    api.sim.script(cid, JobScript(seconds=10))
    job = (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).body
    api.clock.advance(3)
    cancelled = await api.delete(f"/jobs/{job['jobId']}")
    assert cancelled.status == 200
    assert cancelled.body["status"] == "cancelled"
    assert cancelled.body["duration"] == "PT3S"
    assert "lastUpdatedAt" in cancelled.body
    api.clock.advance(30)  # past the planned end: stays cancelled
    later = (await api.get(f"/jobs/{job['jobId']}")).body
    assert later == cancelled.body
    # Cancelling a terminal job answers 200 with the job unchanged.
    assert (await api.delete(f"/jobs/{job['jobId']}")).body == cancelled.body
    # The connection is free again.
    assert (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).status == 200


async def test_cancel_of_a_finished_job_keeps_its_status(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    api.sim.script(cid, JobScript(seconds=1))
    job = (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).body
    api.clock.advance(2)
    reply = await api.delete(f"/jobs/{job['jobId']}")
    assert reply.body["status"] == "succeeded"


async def test_start_job_is_running_at_once_and_blocks_posts(start: StartApi) -> None:
    api = await start(connections=3, inactive_connections=1)
    cid, _, inactive = api.connection_ids()
    job = api.sim.start_job(cid)
    assert job["status"] == "running"
    assert "duration" in job
    reply = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert reply.status == 409
    with pytest.raises(JobAlreadyRunningError):
        api.sim.start_job(cid)
    with pytest.raises(ConnectionNotActiveError):
        api.sim.start_job(inactive)
    with pytest.raises(LookupError):
        api.sim.start_job("00000000-0000-4000-8000-000000000000")
    assert api.sim.job(job["jobId"])["status"] == "running"


async def test_scripts_queue_per_connection(start: StartApi) -> None:
    api = await start()
    cid = api.connection_ids()[0]
    assert api.sim.script(cid, JobScript(seconds=1, final="failed")) == 1
    assert api.sim.script(cid, JobScript(seconds=2, final="succeeded")) == 2
    finals = []
    for _ in range(3):
        job = (await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})).body
        api.clock.advance(100)
        finals.append((await api.get(f"/jobs/{job['jobId']}")).body)
    assert [f["status"] for f in finals[:2]] == ["failed", "succeeded"]
    assert [f["duration"] for f in finals[:2]] == ["PT1S", "PT2S"]


def test_job_script_validation() -> None:
    with pytest.raises(ValueError, match="final"):
        JobScript(final="exploded")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds"):
        JobScript(seconds=-1)
    with pytest.raises(ValueError, match="pending_seconds"):
        JobScript(seconds=1, pending_seconds=2)
