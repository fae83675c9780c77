"""max_running: capacity-limited syncs and the ``queued`` status."""

from __future__ import annotations

from typing import Any

import pytest

from airbyte_fleet.simulator import JobScript, Simulator, SimulatorOptions

from .conftest import Api, StartApi

pytestmark = pytest.mark.anyio

ACTIVE = {"running", "incomplete"}
TERMINAL = {"succeeded", "failed", "cancelled"}


async def _post(api: Api, cid: str) -> int:
    reply = await api.post("/jobs", json={"connectionId": cid, "jobType": "sync"})
    assert reply.status == 200, reply.body
    job_id: int = reply.body["jobId"]
    return job_id


async def _status(api: Api, job_id: int) -> dict[str, Any]:
    reply = await api.get(f"/jobs/{job_id}")
    assert reply.status == 200
    body: dict[str, Any] = reply.body
    return body


async def test_jobs_beyond_the_cap_are_queued_until_a_slot_frees(start: StartApi) -> None:
    api = await start(max_running=2)
    ids = api.connection_ids()[:4]
    for cid in ids:
        api.sim.script(cid, JobScript(seconds=10, pending_seconds=1))
    jobs = [await _post(api, cid) for cid in ids]
    assert [j["status"] for j in api.sim.jobs] == ["pending"] * 4

    api.clock.advance(1)  # all four are ready; two get a slot
    views = [await _status(api, job) for job in jobs]
    assert [v["status"] for v in views] == ["running", "running", "queued", "queued"]
    queued = views[2]
    assert queued["duration"] == "PT1S"  # to the last transition, like any non-pending job
    assert "lastUpdatedAt" not in queued
    assert (queued["rowsSynced"], queued["bytesSynced"]) == (0, 0)
    assert (await api.get("/jobs", params={"status": "queued"})).body["data"] == views[2:]

    api.clock.advance(9)  # t=10: the first two end and hand their slots over at once
    views = [await _status(api, job) for job in jobs]
    assert [v["status"] for v in views] == ["succeeded", "succeeded", "running", "running"]
    assert views[2]["duration"] == "PT10S"

    api.clock.advance(9)  # t=19: queued 1..10, then the 9 s of work
    views = [await _status(api, job) for job in jobs]
    assert [v["status"] for v in views] == ["succeeded"] * 4
    assert [v["duration"] for v in views] == ["PT10S", "PT10S", "PT19S", "PT19S"]


async def test_history_is_replayed_when_nobody_looked(start: StartApi) -> None:
    api = await start(max_running=1)
    ids = api.connection_ids()[:3]
    for cid in ids:
        api.sim.script(cid, JobScript(seconds=5, pending_seconds=0))
    jobs = [await _post(api, cid) for cid in ids]
    api.clock.advance(100)  # one read, long after all three ran back to back
    views = [await _status(api, job) for job in jobs]
    assert [v["status"] for v in views] == ["succeeded"] * 3
    assert [v["duration"] for v in views] == ["PT5S", "PT10S", "PT15S"]


async def test_post_answers_queued_when_no_slot_is_free(start: StartApi) -> None:
    api = await start(max_running=1)
    first, second = api.connection_ids()[:2]
    api.sim.script(first, JobScript(seconds=10, pending_seconds=0))
    api.sim.script(second, JobScript(seconds=10, pending_seconds=0))
    one = await api.post("/jobs", json={"connectionId": first, "jobType": "sync"})
    two = await api.post("/jobs", json={"connectionId": second, "jobType": "sync"})
    assert (one.body["status"], two.body["status"]) == ("running", "queued")
    # A queued job is live: the connection refuses another one.
    again = await api.post("/jobs", json={"connectionId": second, "jobType": "sync"})
    assert again.status == 409
    assert again.body["title"] == "try-again-later"


async def test_cancelling_a_running_job_frees_its_slot_at_once(start: StartApi) -> None:
    api = await start(max_running=1)
    first, second = api.connection_ids()[:2]
    api.sim.script(first, JobScript(seconds=10, pending_seconds=0))
    api.sim.script(second, JobScript(seconds=10, pending_seconds=0))
    running, waiting = await _post(api, first), await _post(api, second)
    api.clock.advance(3)
    assert (await api.delete(f"/jobs/{running}")).body["status"] == "cancelled"
    view = await _status(api, waiting)
    assert (view["status"], view["duration"]) == ("running", "PT3S")
    api.clock.advance(9.5)  # started at 3 with 10 s of work
    assert (await _status(api, waiting))["status"] == "running"
    api.clock.advance(0.5)
    view = await _status(api, waiting)
    assert (view["status"], view["duration"]) == ("succeeded", "PT13S")


async def test_cancelling_waiting_jobs_skips_them(start: StartApi) -> None:
    api = await start(max_running=1)
    a, b, c, d = api.connection_ids()[:4]
    for cid in (a, b, c):
        api.sim.script(cid, JobScript(seconds=10, pending_seconds=0))
    api.sim.script(d, JobScript(seconds=10, pending_seconds=5))
    running, queued, behind, pending = [await _post(api, cid) for cid in (a, b, c, d)]
    assert (await _status(api, running))["status"] == "running"
    assert (await _status(api, queued))["status"] == "queued"
    assert (await _status(api, pending))["status"] == "pending"
    cancelled = [(await api.delete(f"/jobs/{job}")).body for job in (queued, pending)]
    assert [v["status"] for v in cancelled] == ["cancelled", "cancelled"]
    assert cancelled[0]["duration"] == "PT0S"
    api.clock.advance(10)  # the running job ends; the next one still waiting takes over
    assert (await _status(api, behind))["status"] == "running"
    assert (await _status(api, queued))["status"] == "cancelled"
    assert (await _status(api, pending))["status"] == "cancelled"


async def test_waiting_jobs_are_served_in_order_of_readiness(start: StartApi) -> None:
    api = await start(max_running=1)
    a, b, c = api.connection_ids()[:3]
    api.sim.script(a, JobScript(seconds=10, pending_seconds=0))
    api.sim.script(b, JobScript(seconds=10, pending_seconds=5))  # ready at t=5
    api.sim.script(c, JobScript(seconds=10, pending_seconds=1))  # posted at t=1, ready at t=2
    job_a, job_b = await _post(api, a), await _post(api, b)
    api.clock.advance(1)
    job_c = await _post(api, c)
    api.clock.advance(9)  # t=10: a ends
    statuses = [(await _status(api, job))["status"] for job in (job_a, job_b, job_c)]
    assert statuses == ["succeeded", "queued", "running"]


async def test_a_slot_freed_when_another_job_gets_ready_goes_straight_to_it(
    start: StartApi,
) -> None:
    api = await start(max_running=1)
    a, b = api.connection_ids()[:2]
    api.sim.script(a, JobScript(seconds=4, pending_seconds=0))
    api.sim.script(b, JobScript(seconds=8, pending_seconds=4))  # ready exactly when a ends
    job_a, job_b = await _post(api, a), await _post(api, b)
    api.clock.advance(4)
    assert (await _status(api, job_a))["status"] == "succeeded"
    view = await _status(api, job_b)
    assert (view["status"], view["duration"]) == ("running", "PT4S")  # never queued


async def test_random_plans_never_exceed_the_cap_and_never_idle(start: StartApi) -> None:
    cap = 3
    api = await start(
        connections=12,
        max_running=cap,
        sync_seconds=(4.0, 12.0),
        failure_rate=0.3,
        incomplete_rate=0.5,
    )
    for cid in api.connection_ids():
        await _post(api, cid)
    saw_queued = False
    for step in range(120):
        api.clock.advance(0.5)
        statuses = [j["status"] for j in api.sim.jobs]
        active = sum(s in ACTIVE for s in statuses)
        assert active <= cap, (step, statuses)
        if "queued" in statuses:
            saw_queued = True
            assert active == cap, (step, statuses)  # a queued job only waits for capacity
        if step % 10 == 0:  # re-post what finished, to keep the pressure on
            for connection in api.sim.connections:
                cid = connection["connectionId"]
                if all(j["status"] in TERMINAL for j in api.sim.jobs_for(cid)):
                    await _post(api, cid)
    assert saw_queued
    api.clock.advance(1000)
    assert all(j["status"] in TERMINAL for j in api.sim.jobs)


async def test_start_job_takes_a_slot_even_when_all_are_busy(start: StartApi) -> None:
    api = await start(max_running=1)
    a, b, c = api.connection_ids()[:3]
    api.sim.script(a, JobScript(seconds=10, pending_seconds=0))
    api.sim.script(b, JobScript(seconds=10))
    api.sim.script(c, JobScript(seconds=10, pending_seconds=0))
    job_a = await _post(api, a)
    started = api.sim.start_job(b)  # "triggered elsewhere": running at once, over the cap
    assert started["status"] == "running"
    job_c = await _post(api, c)
    assert (await _status(api, job_c))["status"] == "queued"
    api.clock.advance(10)  # a and b end at 10; c gets a slot
    assert (await _status(api, job_a))["status"] == "succeeded"
    assert (await _status(api, job_c))["status"] == "running"


async def test_queueing_is_deterministic(start: StartApi) -> None:
    async def run() -> list[dict[str, Any]]:
        api = await start(connections=8, max_running=2, seed=9, sync_seconds=(2.0, 9.0))
        for cid in api.connection_ids():
            await _post(api, cid)
            api.clock.advance(0.7)
        api.clock.advance(6.0)
        return api.sim.jobs

    assert await run() == await run()


async def test_without_a_cap_nothing_is_ever_queued(start: StartApi) -> None:
    api = await start(connections=10, sync_seconds=(1.0, 2.0))
    for cid in api.connection_ids():
        await _post(api, cid)
    api.clock.advance(0.5)
    assert sum(j["status"] == "running" for j in api.sim.jobs) == 10


def test_max_running_validation() -> None:
    assert SimulatorOptions(max_running=1).max_running == 1
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_running"):
            SimulatorOptions(max_running=bad)
    with pytest.raises(ValueError, match="max_running"):
        SimulatorOptions(max_running=1.5)  # type: ignore[arg-type]
    assert Simulator(SimulatorOptions(max_running=2)).options.max_running == 2
