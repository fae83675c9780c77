"""What lets one simulator serve 100,000 syncs: indexed job lists, cached connection listings,
exchanges not kept when nothing can read them, and the counts a benchmark reads instead."""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import aiohttp
import pytest

from airbyte_fleet.simulator import FakeClock, JobScript, Simulator, SimulatorOptions
from airbyte_fleet.simulator._seed import generate
from airbyte_fleet.simulator._timeline import Job
from airbyte_fleet.simulator._world import World

from .conftest import StartApi

pytestmark = pytest.mark.anyio

TERMINAL = ("succeeded", "failed", "cancelled")


def _scan(world: World, now: float, **query: Any) -> list[Job]:
    """The list as the simulator used to make it: every job's state read and filtered."""
    workspaces = set(query.get("workspace_ids", ()))
    connection_id = query.get("connection_id")
    rows = []
    for job in world.jobs():
        if connection_id is not None:
            if job.connection_id != connection_id:
                continue
        elif workspaces and job.workspace_id not in workspaces:
            continue
        if query.get("job_type") is not None and job.job_type != query["job_type"]:
            continue
        status, updated_at = job.state(now)
        if query.get("status") is not None and status != query["status"]:
            continue
        created, updated = job.created_s, math.floor(updated_at)
        bounds = [
            ("created_start", created, 1),
            ("created_end", created, -1),
            ("updated_start", updated, 1),
            ("updated_end", updated, -1),
        ]
        if any(
            query.get(name) is not None and (value - query[name]) * sign < 0
            for name, value, sign in bounds
        ):
            continue
        by_created = query.get("order_by", "createdAt") == "createdAt"
        rows.append((created if by_created else updated, job.job_id, job))
    rows.sort(key=lambda row: (row[0], row[1]), reverse=query.get("descending", False))
    return [row[2] for row in rows]


def _busy_world(rng: random.Random, *, max_running: int | None) -> tuple[World, FakeClock, float]:
    """Jobs created, cancelled and ending over a minute of fake time, some at the same instant."""
    clock = FakeClock()
    world = World(
        SimulatorOptions(
            connections=40,
            workspaces=3,
            sync_seconds=(0.0, 9.0),
            failure_rate=0.3,
            incomplete_rate=0.3,
            seed=rng.randrange(1000),
            max_running=max_running,
        )
    )
    ids = [c["connectionId"] for c in world.connection_views()]
    start = clock.now()
    for _ in range(240):
        clock.advance(rng.choice([0.0, 0.0, 0.3, 0.5, 1.0]))
        cid = rng.choice(ids)
        if rng.random() < 0.1:
            world.queue_script(cid, JobScript(seconds=rng.choice([0.0, 2.0]), pending_seconds=0.0))
        try:
            job = world.create_job(cid, rng.choice(["sync", "sync", "reset"]), clock.now())
        except Exception:  # already running or not active: Airbyte refuses it as well
            continue
        if rng.random() < 0.2:
            clock.advance(rng.choice([0.0, 0.7]))
            world.cancel_job(job.job_id, clock.now())
    return world, clock, start


@pytest.mark.parametrize("max_running", [None, 3])
def test_indexed_job_lists_match_a_full_scan(max_running: int | None) -> None:
    rng = random.Random(7 if max_running is None else 8)
    world, clock, start = _busy_world(rng, max_running=max_running)
    workspaces = [w["workspaceId"] for w in world.workspace_views()]
    connections = [c["connectionId"] for c in world.connection_views()]
    compared = 0
    for _ in range(300):
        clock.advance(rng.choice([0.0, 0.4, 1.0, 3.0]))
        now = clock.now()
        query: dict[str, Any] = {
            "order_by": rng.choice(["createdAt", "updatedAt", "updatedAt"]),
            "descending": rng.random() < 0.7,
        }
        if rng.random() < 0.8:
            # Whole seconds, as clients send them, and odd fractions, as epoch milliseconds can.
            query["updated_start"] = (
                start + rng.randrange(0, int(now - start) + 2) + rng.choice([0.0, 0.0, 0.25])
            )
        if rng.random() < 0.8:
            query["workspace_ids"] = rng.sample(workspaces, rng.choice([1, 1, 1, 2]))
        elif rng.random() < 0.3:
            query["connection_id"] = rng.choice(connections)
        if rng.random() < 0.2:
            query["status"] = rng.choice(["pending", "queued", "running", "incomplete", *TERMINAL])
        if rng.random() < 0.2:
            query["job_type"] = "sync"
        if rng.random() < 0.15:
            query["updated_end"] = now - rng.randrange(0, 10)
        if rng.random() < 0.15:
            query["created_start"] = start + rng.randrange(0, 40)
        first = rng.choice([1, 5, 20, 100, 1000])
        expected = [job.job_id for job in _scan(world, now, **query)]
        found = [job.job_id for job in world.find_jobs(now, **query, first=first)]
        assert found == expected[:first], query
        compared += len(found)
    assert compared > 3000  # the lists were not all empty


def test_a_newest_first_page_reads_no_timeline_and_stops_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    world = World(SimulatorOptions(connections=3000, workspaces=2, sync_seconds=(5, 30)))
    start = clock.now()
    for connection in world.connection_views():
        world.create_job(connection["connectionId"], "sync", clock.now())
        clock.advance(0.01)
    clock.advance(10)
    workspace = world.workspace_views()[0]["workspaceId"]
    query: dict[str, Any] = {
        "workspace_ids": [workspace],
        "updated_start": start,
        "order_by": "updatedAt",
        "descending": True,
    }
    expected = [job.job_id for job in _scan(world, clock.now(), **query)]
    reads = 0
    state = Job.state

    def counted(job: Job, now: float) -> tuple[str, float]:
        nonlocal reads
        reads += 1
        return state(job, now)

    monkeypatch.setattr(Job, "state", counted)
    page = world.find_jobs(clock.now(), **query, first=100)
    assert [job.job_id for job in page] == expected[:100]
    assert reads == 0
    # Ascending order has no early stop: every candidate's timeline is read.
    world.find_jobs(clock.now(), **{**query, "descending": False}, first=100)
    assert reads >= len(expected) > 1000


def test_the_seeded_world_is_byte_for_byte_what_it_was() -> None:
    """Faster ids and shared stream objects must not change a single byte of a seed's world."""
    seed = generate(
        SimulatorOptions(connections=300, workspaces=7, inactive_connections=5, seed=42)
    )
    text = json.dumps([seed.workspaces, seed.connections], sort_keys=True, ensure_ascii=False)
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert digest == "e380031a2a8c83a26f084865709ee9770d165ac17bbf1afd91375b6edd965e8d"


async def test_a_status_change_shows_in_the_next_connection_listing(start: StartApi) -> None:
    api = await start(connections=12, workspaces=2)
    before = await api.get("/connections", params={"limit": "100"})
    gone = before.body["data"][3]["connectionId"]
    api.sim.set_connection_status(gone, "deprecated")
    after = await api.get("/connections", params={"limit": "100"})
    assert [c["connectionId"] for c in after.body["data"]] == [
        c["connectionId"] for c in before.body["data"] if c["connectionId"] != gone
    ]
    api.sim.set_connection_status(gone, "inactive")
    again = await api.get("/connections", params={"limit": "100", "offset": "3"})
    assert (again.body["data"][0]["connectionId"], again.body["data"][0]["status"]) == (
        gone,
        "inactive",
    )


async def _post(session: aiohttp.ClientSession, root: str, token: str, cid: str) -> int:
    async with session.post(
        f"{root}/api/public/v1/jobs",
        json={"connectionId": cid, "jobType": "sync"},
        headers={"Authorization": f"Bearer {token}"},
    ) as reply:
        return reply.status


async def test_without_recording_the_counts_remain() -> None:
    clock = FakeClock()
    sim = Simulator(SimulatorOptions(connections=3), clock=clock, record_exchanges=False)
    async with sim.serve() as root, aiohttp.ClientSession() as session:
        token = sim.issue_token()
        cid = sim.connections[0]["connectionId"]
        assert await _post(session, root, token, cid) == 200
        assert await _post(session, root, token, cid) == 409
        async with session.get(f"{root}/_simulator/stats?jobs=false") as reply:
            stats = await reply.json()
    assert sim.exchanges == []
    assert sim.posts_for(cid) == []
    assert sim.count("POST", "/jobs") == 2
    assert stats["requests"] == {"POST /jobs": 2}
    assert stats["jobs_created"] == 1
    assert "jobs" not in stats


async def test_stats_say_when_the_first_trigger_was_answered(start: StartApi) -> None:
    api = await start(connections=3)
    first, second = api.connection_ids()[:2]
    api.sim.set_connection_status(first, "inactive")
    assert (await api.post("/jobs", json={"connectionId": first, "jobType": "sync"})).status == 409
    assert api.sim.stats()["first_job_answered_at"] is None  # a refusal is no trigger
    api.clock.advance(5)
    answered_at = api.clock.now()
    assert (await api.post("/jobs", json={"connectionId": second, "jobType": "sync"})).status == 200
    api.clock.advance(5)
    await api.get("/jobs")
    stats = api.sim.stats()
    assert stats["first_job_answered_at"] == answered_at
    assert stats["jobs_created"] == 1
    assert set(stats["handler_cpu_s"]) == {"POST /jobs", "GET /jobs"}
    assert all(cpu >= 0 for cpu in stats["handler_cpu_s"].values())


async def test_the_stats_route_leaves_out_job_views_on_request(start: StartApi) -> None:
    api = await start(connections=2)
    await api.post("/jobs", json={"connectionId": api.connection_ids()[0], "jobType": "sync"})
    url = f"{api.root}/_simulator/stats"
    async with api.session.get(url, params={"jobs": "false"}) as reply:
        lean = await reply.json()
    async with api.session.get(url) as reply:
        full = await reply.json()
    assert "jobs" not in lean
    assert [j["jobId"] for j in full["jobs"]] == [j["jobId"] for j in api.sim.jobs]
    assert {k: v for k, v in full.items() if k != "jobs"} == lean
