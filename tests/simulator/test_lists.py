"""Listing workspaces, connections and jobs: filters, ordering and pagination links."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from airbyte_fleet.simulator import JobScript
from airbyte_fleet.simulator._timeline import Job

from .conftest import LEGACY, PUBLIC, Api, StartApi

pytestmark = pytest.mark.anyio


async def _all_pages(api: Api, path: str, params: dict[str, str] | None = None) -> list[dict]:
    items: list[dict] = []
    offset = 0
    while True:
        reply = await api.get(path, params={**(params or {}), "limit": "7", "offset": str(offset)})
        assert reply.status == 200
        if not reply.body["data"]:
            assert reply.body["next"] == ""
            return items
        items += reply.body["data"]
        offset += 7


async def test_workspaces_list_and_filter(start: StartApi) -> None:
    api = await start(workspaces=3, connections=0)
    reply = await api.get("/workspaces")
    assert [w["name"] for w in reply.body["data"]] == [
        "Acme Analytics",
        "Globex Data",
        "Initech BI",
    ]
    assert reply.body["previous"] == ""
    assert (
        reply.body["next"]
        == f"{api.root}{PUBLIC}/workspaces?includeDeleted=false&limit=20&offset=20"
    )
    first, _, third = (w["workspaceId"] for w in reply.body["data"])
    comma = await api.get("/workspaces", params={"workspaceIds": f"{first},{third.upper()}"})
    repeated = await api.get(
        "/workspaces", params=[("workspaceIds", first), ("workspaceIds", third)]
    )
    assert [w["workspaceId"] for w in comma.body["data"]] == [first, third]
    assert comma.body["data"] == repeated.body["data"]
    assert comma.body["next"] == (
        f"{api.root}{PUBLIC}/workspaces?workspaceIds={first},{third}"
        "&includeDeleted=false&limit=20&offset=20"
    )
    assert api.sim.workspaces == reply.body["data"]


async def test_connection_pagination_links(start: StartApi) -> None:
    api = await start(connections=25, workspaces=1)
    base = f"{api.root}{LEGACY}/connections?includeDeleted=false"
    first = await api.get("/connections", prefix=LEGACY, params={"limit": "10"})
    assert len(first.body["data"]) == 10
    assert first.body["previous"] == ""
    assert first.body["next"] == f"{base}&limit=10&offset=10"
    last = await api.get("/connections", prefix=LEGACY, params={"limit": "10", "offset": "20"})
    # A short last page still carries a next link, as Airbyte's PaginationMapper does.
    assert len(last.body["data"]) == 5
    assert last.body["next"] == f"{base}&limit=10&offset=30"
    assert last.body["previous"] == f"{base}&limit=10&offset=10"
    empty = await api.get("/connections", prefix=LEGACY, params={"limit": "10", "offset": "30"})
    assert empty.body["data"] == []
    assert empty.body["next"] == ""
    odd = await api.get("/connections", prefix=LEGACY, params={"limit": "10", "offset": "3"})
    assert odd.body["previous"] == f"{base}&limit=10&offset=0"
    assert [
        c["connectionId"] for c in await _all_pages(api, "/connections")
    ] == api.connection_ids()


async def test_connections_are_spread_and_filterable(start: StartApi) -> None:
    api = await start(connections=12, workspaces=3)
    connections = api.sim.connections
    workspace_ids = [w["workspaceId"] for w in api.sim.workspaces]
    assert [c["workspaceId"] for c in connections] == workspace_ids * 4
    only = await api.get("/connections", params={"workspaceIds": workspace_ids[1]})
    assert [c["connectionId"] for c in only.body["data"]] == [
        c["connectionId"] for c in connections[1::3]
    ]

    tagged = next(c for c in connections if c["tags"])
    tag = tagged["tags"][0]
    assert tag["workspaceId"] == tagged["workspaceId"]
    by_tag = await api.get("/connections", params={"tagIds": tag["tagId"]})
    assert by_tag.body["data"]
    assert all(tag in c["tags"] for c in by_tag.body["data"])
    assert by_tag.body["next"].startswith(
        f"{api.root}{PUBLIC}/connections?tagIds={tag['tagId']}&includeDeleted=false&"
    )


async def test_deleted_connections_need_include_deleted(start: StartApi) -> None:
    api = await start(connections=3)
    gone = api.connection_ids()[1]
    api.sim.set_connection_status(gone, "deprecated")
    default = await api.get("/connections")
    assert gone not in [c["connectionId"] for c in default.body["data"]]
    everything = await api.get("/connections", params={"includeDeleted": "true"})
    assert gone in [c["connectionId"] for c in everything.body["data"]]
    assert "includeDeleted=true" in everything.body["next"]
    assert (await api.get(f"/connections/{gone}")).body["status"] == "deprecated"


async def test_get_connection(start: StartApi) -> None:
    api = await start()
    wanted = api.sim.connections[5]
    reply = await api.get(f"/connections/{wanted['connectionId']}")
    assert reply.body == wanted
    assert reply.headers["Content-Type"] == "application/json"
    missing = "11111111-1111-4111-8111-111111111111"
    unknown = await api.get(f"/connections/{missing}")
    assert unknown.status == 404
    assert unknown.body["data"] == {"resourceType": "connection", "resourceId": missing}
    malformed = await api.get("/connections/nope")
    assert malformed.status == 400


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "x"},
        {"offset": "-1"},
        {"includeDeleted": "maybe"},
    ],
)
async def test_bad_paging_parameters(start: StartApi, params: dict[str, str]) -> None:
    api = await start()
    for path in ("/connections", "/workspaces", "/jobs"):
        if path == "/jobs" and "includeDeleted" in params:
            continue
        reply = await api.get(path, params=params)
        assert reply.status == 400, path
        assert reply.body["title"] == "bad-request"


async def _make_jobs(api: Api, count: int) -> list[dict]:
    """One finished job per second on rotating connections; the last ones still run."""
    ids = api.connection_ids()
    jobs = []
    for index in range(count):
        cid = ids[index % len(ids)]
        api.sim.script(
            cid,
            JobScript(
                seconds=3, pending_seconds=0, final="failed" if index % 4 == 0 else "succeeded"
            ),
        )
        jobs.append(
            (
                await api.post(
                    "/jobs", json={"connectionId": cid, "jobType": "sync" if index % 3 else "reset"}
                )
            ).body
        )
        api.clock.advance(1)
    return jobs


async def test_jobs_default_order_limit_and_links(start: StartApi) -> None:
    api = await start(connections=30)
    jobs = await _make_jobs(api, 25)
    first = await api.get("/jobs")
    assert [j["jobId"] for j in first.body["data"]] == [j["jobId"] for j in jobs[:20]]
    assert first.body["next"] == f"{api.root}{PUBLIC}/jobs?limit=20&offset=20"
    desc = await api.get("/jobs", params={"orderBy": "createdAt|DESC", "limit": "100"})
    assert [j["jobId"] for j in desc.body["data"]] == [j["jobId"] for j in reversed(jobs)]
    # Job i was created at start+i and runs 3 s; the clock is at start+25. Jobs 0-22 have
    # ended, last updated at start+i+3; 23 and 24 still run, last updated when they started
    # (start+i). Ties go to the lower job id: 20 and 23 both at +23, 21 and 24 both at +24.
    order = [*range(20), 20, 23, 21, 24, 22]
    by_update = await api.get("/jobs", params={"orderBy": "updatedAt|ASC", "limit": "100"})
    assert [j["jobId"] for j in by_update.body["data"]] == [jobs[i]["jobId"] for i in order]
    newest = await api.get("/jobs", params={"orderBy": "updatedAt|DESC", "limit": "100"})
    assert [j["jobId"] for j in newest.body["data"]] == [jobs[i]["jobId"] for i in order[::-1]]


async def test_jobs_filters(start: StartApi) -> None:
    api = await start(connections=4, workspaces=2)
    jobs = await _make_jobs(api, 12)
    cid = api.connection_ids()[1]
    mine = await api.get("/jobs", params={"connectionId": cid, "jobType": "sync"})
    expected = [j["jobId"] for j in jobs if j["connectionId"] == cid and j["jobType"] == "sync"]
    assert [j["jobId"] for j in mine.body["data"]] == expected
    # Only jobType and connectionId survive into the links, like Airbyte's JobsResponseMapper.
    assert (
        mine.body["next"]
        == f"{api.root}{PUBLIC}/jobs?jobType=sync&connectionId={cid}&limit=20&offset=20"
    )

    workspace = api.sim.workspaces[0]["workspaceId"]
    in_ws = await api.get("/jobs", params={"workspaceIds": workspace, "status": "failed"})
    ws_connections = {
        c["connectionId"] for c in api.sim.connections if c["workspaceId"] == workspace
    }
    assert in_ws.body["data"]
    assert all(
        j["connectionId"] in ws_connections and j["status"] == "failed" for j in in_ws.body["data"]
    )
    assert (
        in_ws.body["next"] == f"{api.root}{PUBLIC}/jobs?workspaceIds={workspace}&limit=20&offset=20"
    )

    running = await api.get("/jobs", params={"status": "running"})
    # Job i runs from start+i to start+i+3 and the clock is at start+12.
    assert [j["jobId"] for j in running.body["data"]] == [j["jobId"] for j in jobs[-2:]]

    start_s = api.clock.now() - 12  # job i was created at start_s + i
    iso = datetime.fromtimestamp(start_s + 4, tz=UTC).isoformat().replace("+00:00", "Z")
    millis = str(int((start_s + 6) * 1000))
    window = await api.get("/jobs", params={"createdAtStart": iso, "createdAtEnd": millis})
    assert [j["jobId"] for j in window.body["data"]] == [j["jobId"] for j in jobs[4:7]]
    # updatedAt >= start+9 keeps job 6 (finished at +9) and later ones; jobs 10 and 11 still
    # run and were last updated when they started, at +10 and +11.
    late = await api.get("/jobs", params={"updatedAtStart": str(int((start_s + 9) * 1000))})
    assert [j["jobId"] for j in late.body["data"]] == [j["jobId"] for j in jobs[6:]]


async def test_unknown_connection_filter_gives_an_empty_list(start: StartApi) -> None:
    api = await start()
    reply = await api.get("/jobs", params={"connectionId": "22222222-2222-4222-8222-222222222222"})
    assert reply.status == 200
    assert reply.body["data"] == []
    assert reply.body["next"] == ""


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"orderBy": "createdAt|SIDEWAYS"}, "Invalid order by clause provided: createdAt|SIDEWAYS"),
        ({"orderBy": "name|ASC"}, "Invalid order by clause provided: name|ASC"),
        ({"status": "exploded"}, None),
        ({"jobType": "upgrade"}, None),
        ({"createdAtStart": "yesterday"}, None),
        ({"connectionId": "nope"}, None),
    ],
)
async def test_bad_job_list_parameters(
    start: StartApi, params: dict[str, str], message: str | None
) -> None:
    api = await start()
    reply = await api.get("/jobs", params=params)
    assert reply.status == 400
    if message is not None:
        assert reply.body["data"]["message"] == message


async def test_many_connections_and_jobs_stay_fast(
    start: StartApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A list reads each job's timeline once and builds views for its page only: linear work,
    counted (a time bound would pass on a fast machine and fail on a busy one)."""
    api = await start(connections=5000, workspaces=5)
    for cid in api.connection_ids()[:3000]:
        api.sim.start_job(cid)
    api.clock.advance(3)
    expected = [j["jobId"] for j in api.sim.jobs if j["status"] == "running"][2900:3000]

    reads = {"state": 0, "view": 0}
    state, view = Job.state, Job.view

    def counted_state(job: Job, now: float) -> tuple[str, float]:
        reads["state"] += 1
        return state(job, now)

    def counted_view(job: Job, now: float) -> dict[str, Any]:
        reads["view"] += 1
        return view(job, now)

    monkeypatch.setattr(Job, "state", counted_state)
    monkeypatch.setattr(Job, "view", counted_view)
    reply = await api.get("/jobs", params={"status": "running", "limit": "100", "offset": "2900"})
    monkeypatch.undo()
    assert reply.status == 200
    assert [j["jobId"] for j in reply.body["data"]] == expected
    assert reads["view"] == len(expected)  # views for the page, not for every match
    assert reads["state"] <= 3000 + reads["view"]  # one read per job, plus the page's views

    connections = await api.get("/connections", params={"limit": "100", "offset": "4900"})
    assert [c["connectionId"] for c in connections.body["data"]] == api.connection_ids()[4900:]
