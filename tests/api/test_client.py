"""The client against the simulator over loopback: operations, errors, pagination, retries."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from structlog.testing import capture_logs

from airbyte_fleet.api import (
    AirbyteClient,
    AlreadyRunningError,
    BadRequestError,
    InactiveConnectionError,
    Job,
    NoAuth,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    TriggerOutcomeUnknownError,
    plan_url,
)
from airbyte_fleet.api._transport import retry_decision
from airbyte_fleet.simulator import FakeClock, JobScript
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio


async def test_lists_every_connection_across_pages(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=250, workspaces=3)
    async with client_for(root) as client:
        connections = await client.list_connections()
        workspaces = await client.list_workspaces()
    assert len(connections) == 250
    assert len({c.connection_id for c in connections}) == 250
    assert {c.connection_id for c in connections} == {c["connectionId"] for c in sim.connections}
    assert len(workspaces) == 3
    # 100 + 100 + 50: the short page ends it, whatever `next` says.
    assert sim.count("GET", "/connections") <= 4  # 3 pages, and at most one asked ahead


async def test_exact_multiple_of_page_size_needs_one_empty_page(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=200, workspaces=1)
    async with client_for(root) as client:
        assert len(await client.list_connections()) == 200
    assert sim.count("GET", "/connections") <= 4  # 3 pages, and at most one asked ahead


async def test_connection_filters_and_get(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=30, workspaces=3)
    ws = sim.workspaces[1]["workspaceId"]
    async with client_for(root) as client:
        in_ws = await client.list_connections(workspace_ids=[ws])
        assert in_ws
        assert {c.workspace_id for c in in_ws} == {ws}
        one = await client.get_connection(in_ws[0].connection_id)
        assert one == in_ws[0]
        assert one.name
        with pytest.raises(NotFoundError) as info:
            await client.get_connection("00000000-0000-4000-8000-000000000000")
    assert info.value.status == 404
    listed = [e for e in sim.exchanges if e.route == "/connections"]
    assert f"workspaceIds={ws}" in listed[0].query


async def test_job_lifecycle_through_incomplete(make_sim: SimFactory) -> None:
    clock = FakeClock()
    sim, root = await make_sim(clock=clock, connections=2)
    cid = sim.connections[0]["connectionId"]
    sim.script(cid, JobScript(seconds=100.0, incomplete_attempts=1, final="succeeded"))
    seen: list[str] = []
    async with client_for(root) as client:
        job = await client.create_job(cid)
        assert job.connection_id == cid
        assert not job.is_terminal
        for _ in range(60):
            clock.advance(2.5)
            job = await client.get_job(job.job_id)
            if not seen or seen[-1] != job.status:
                seen.append(job.status)
            if job.is_terminal:
                break
    assert "incomplete" in seen
    assert seen[-1] == "succeeded"
    assert seen.index("incomplete") < len(seen) - 1  # incomplete was not the end
    assert job.rows_synced
    assert job.rows_synced > 0
    assert job.last_updated_at is not None


async def test_trigger_conflicts_are_told_apart(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3)
    running, inactive = sim.connections[0]["connectionId"], sim.connections[1]["connectionId"]
    sim.start_job(running)
    sim.set_connection_status(inactive, "inactive")
    async with client_for(root) as client:
        with pytest.raises(AlreadyRunningError) as already:
            await client.create_job(running)
        with pytest.raises(InactiveConnectionError):
            await client.create_job(inactive)
        with pytest.raises(NotFoundError):
            await client.create_job("00000000-0000-4000-8000-000000000000")
        with pytest.raises(BadRequestError, match="Refreshes are not supported"):
            await client.create_job(sim.connections[2]["connectionId"], "refresh")
    assert already.value.connection_id == running
    # None of these is retried: each POST reached Airbyte exactly once.
    assert sim.count("POST", "/jobs") == 4


async def test_cancel_and_list_jobs_with_filters(make_sim: SimFactory) -> None:
    clock = FakeClock()
    sim, root = await make_sim(clock=clock, connections=5, workspaces=1)
    ids = [c["connectionId"] for c in sim.connections]
    async with client_for(root) as client:
        started = datetime.fromtimestamp(clock.now(), UTC)
        jobs = [await client.create_job(cid) for cid in ids]
        cancelled = await client.cancel_job(jobs[0].job_id)
        assert cancelled.status == "cancelled"
        again = await client.cancel_job(jobs[0].job_id)  # harmless the second time
        assert again.status == "cancelled"
        by_conn = await client.list_jobs(connection_id=ids[1])
        assert [j.job_id for j in by_conn] == [jobs[1].job_id]
        by_status = await client.list_jobs(
            status="cancelled", workspace_ids=[sim.workspaces[0]["workspaceId"]]
        )
        assert [j.job_id for j in by_status] == [jobs[0].job_id]
        recent = await client.list_jobs(
            updated_at_start=started - timedelta(seconds=1),
            order_by="updatedAt|DESC",
            job_type="sync",
        )
        assert {j.job_id for j in recent} == {j.job_id for j in jobs}
        page = await client.list_jobs_page(limit=2, offset=1)
        assert [j.job_id for j in page.data] == [jobs[1].job_id, jobs[2].job_id]
        with pytest.raises(NotFoundError):
            await client.get_job(987654321)
    query = parse_qs(
        next(e for e in sim.exchanges if e.route == "/jobs" and "updatedAtStart" in e.query).query
    )
    assert query["orderBy"] == ["updatedAt|DESC"]
    assert query["updatedAtStart"][0].endswith("Z")


async def test_many_jobs_listed_across_pages(make_sim: SimFactory) -> None:
    sim, root = await make_sim(clock=FakeClock(), connections=230, workspaces=2)
    for c in sim.connections:
        sim.start_job(c["connectionId"])
    async with client_for(root) as client:
        jobs = await client.list_jobs(workspace_ids=[w["workspaceId"] for w in sim.workspaces])
    assert len(jobs) == 230
    assert sim.count("GET", "/jobs") == 3
    # Array filters go out one key per value (form/explode), as the spec says.
    first = next(e for e in sim.exchanges if e.route == "/jobs")
    assert parse_qs(first.query)["workspaceIds"] == [w["workspaceId"] for w in sim.workspaces]


async def test_429_without_retry_after_is_retried(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=20, rate_429=0.3, seed=3)
    async with client_for(root) as client:
        for _ in range(10):
            assert len(await client.list_connections()) == 20
        assert client.stats.retries > 0
    statuses = {e.status for e in sim.exchanges}
    assert 429 in statuses
    assert all("retry-after" not in e.response_headers for e in sim.exchanges if e.status == 429)


async def test_retry_after_is_honoured(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, rate_429=1.0, retry_after=7)
    async with client_for(root) as client:
        sim.faults.update({"rate_429": 0.0})
        await client.list_workspaces()  # fetch the token first
        sim.faults.update({"rate_429": 1.0})
        with capture_logs() as logs, pytest.raises(RateLimitedError) as info:
            await client.list_workspaces()
    assert info.value.retry_after == 7.0
    waits = [entry["wait_s"] for entry in logs if entry["event"] == "airbyte_retry"]
    assert waits
    assert all(w == 7.0 for w in waits)


def test_retry_decision_table() -> None:
    def server(status: int, after: float | None = None) -> ServerError:
        return ServerError("x", status=status, retry_after=after)

    assert retry_decision(RateLimitedError("x", status=429), idempotent=False) is True
    assert retry_decision(RateLimitedError("x", status=429, retry_after=3), idempotent=True) == 3
    for status in (502, 503, 504):
        assert retry_decision(server(status), idempotent=True) is True
        # POST /jobs: the job may exist; the caller must look before triggering again.
        assert retry_decision(server(status), idempotent=False) is False
    assert retry_decision(server(503, 12.0), idempotent=True) == 12.0
    assert retry_decision(server(500), idempotent=True) is True
    assert retry_decision(server(500), idempotent=False) is False
    assert retry_decision(server(501), idempotent=True) is False
    assert retry_decision(TransportError("x"), idempotent=True) is True
    assert retry_decision(TransportError("x"), idempotent=False) is False
    assert retry_decision(TransportError("x", status=408), idempotent=False) is True
    assert retry_decision(TriggerOutcomeUnknownError("x"), idempotent=False) is False
    for exc in (NotFoundError("x", status=404), BadRequestError("x", status=400)):
        assert retry_decision(exc, idempotent=True) is False


async def test_5xx_on_reads_is_retried(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=20, rate_5xx=0.4, error_status=503, seed=5)
    async with client_for(root) as client:
        for _ in range(5):
            assert len(await client.list_connections()) == 20
    assert any(e.status == 503 for e in sim.exchanges)


async def test_500_on_get_is_retried_but_not_on_trigger(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, error_status=500)
    cid = sim.connections[0]["connectionId"]
    async with client_for(root) as client:
        await client.list_workspaces()
        sim.faults.update({"rate_5xx": 1.0})
        with pytest.raises(ServerError):
            await client.list_workspaces()
        get_attempts = sim.count("GET", "/workspaces") - 1
        with pytest.raises(TriggerOutcomeUnknownError, match="may or may not"):
            await client.create_job(cid)
    assert get_attempts == 6  # stamina testing mode allows 6
    assert sim.count("POST", "/jobs") == 1


async def test_503_on_trigger_is_not_retried_blindly(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2)
    async with client_for(root) as client:
        await client.list_workspaces()
        sim.faults.update({"rate_5xx": 1.0, "error_status": 503})
        with pytest.raises(TriggerOutcomeUnknownError) as caught:
            await client.create_job(sim.connections[0]["connectionId"])
    assert sim.count("POST", "/jobs") == 1
    # The 5xx is kept: once the caller finds no job from it, it is a clear refusal to retry.
    assert caught.value.answer is not None
    assert caught.value.answer.status == 503
    assert caught.value.happened == "Airbyte answered POST /jobs with HTTP 503"


async def test_garbled_answer_is_retried_on_reads_and_unknown_on_trigger(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=2)
    async with client_for(root) as client:
        await client.list_workspaces()
        sim.faults.update({"malformed_rate": 1.0})
        with pytest.raises(ServerError, match="not JSON"):
            await client.list_workspaces()
        with pytest.raises(
            TriggerOutcomeUnknownError, match="not JSON; the job may or may not have been created"
        ) as caught:
            await client.create_job(sim.connections[0]["connectionId"])
    # A garbled 200 is no clear answer: the job may exist, so no retry under the HTTP policy.
    assert caught.value.answer is None
    assert sim.count("GET", "/workspaces") == 1 + 6  # stamina testing mode allows 6
    assert sim.count("POST", "/jobs") == 1


async def test_requests_name_the_version_pyproject_declares(make_sim: SimFactory) -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    sim, root = await make_sim(connections=1)
    async with client_for(root) as client:
        await client.list_workspaces()
    agents = {e.request_headers.get("user-agent") for e in sim.exchanges}
    assert agents == {f"airbyte-fleet/{pyproject['project']['version']}"}


async def test_dropped_connections_on_reads_are_retried(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=10, reset_rate=0.3, seed=11)
    async with client_for(root) as client:
        for _ in range(5):
            assert len(await client.list_connections()) == 10
        assert client.stats.retries > 0
    assert any(e.status == 0 for e in sim.exchanges)


async def test_dropped_trigger_is_reported_as_unknown(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2)
    async with client_for(root) as client:
        await client.list_workspaces()
        sim.faults.update({"reset_rate": 1.0})
        with pytest.raises(TriggerOutcomeUnknownError):
            await client.create_job(sim.connections[0]["connectionId"])
    assert sim.count("POST", "/jobs") == 1


async def test_4xx_is_never_retried(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2)
    async with client_for(root) as client:
        with pytest.raises(NotFoundError):
            await client.get_job(424242)
    assert sim.count("GET", "/jobs/{jobId}") == 1


async def test_slow_trigger_times_out_as_unknown(make_sim: SimFactory) -> None:
    from airbyte_fleet.api import Timeouts

    sim, root = await make_sim(connections=2, slow_post_seconds=0.5)
    cid = sim.connections[0]["connectionId"]
    async with client_for(root, timeouts=Timeouts(connect=2, read=0.1)) as client:
        await client.list_workspaces()
        with pytest.raises(TriggerOutcomeUnknownError):
            await client.create_job(cid)
    # The job exists although the client never heard back.
    assert [j["connectionId"] for j in sim.jobs] == [cid]
    assert sim.count("POST", "/jobs") == 1


async def test_both_prefixes_work(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=4)
    async with client_for(root, path="/v1") as legacy, client_for(root) as public:
        assert {c.connection_id for c in await legacy.list_connections()} == {
            c.connection_id for c in await public.list_connections()
        }
    assert {e.prefix for e in sim.exchanges} >= {"/v1", "/api/public/v1"}


async def test_health_and_check(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=1, auth="none")
    api = plan_url(root + "/api/public/v1").candidates[0]
    async with AirbyteClient(api, NoAuth()) as client:
        await client.health()
        await client.check()
    assert [e.route for e in sim.exchanges] == ["/health", "/health", "/workspaces"]
    assert all("authorization" not in e.request_headers for e in sim.exchanges)


async def test_lenient_models_over_real_http(anyio_backend: str) -> None:
    """Shapes the real server sends that a strict model would choke on."""
    body = {
        "data": [
            {
                "jobId": 9007199254740993,
                "status": "paused_by_admin",
                "jobType": "sync",
                "startTime": "2023-03-25T01:30Z",
                "connectionId": "c1",
                "duration": None,
                "lastUpdatedAt": None,
                "rowsSynced": None,
                "unknownField": 1,
            },
            {
                "jobId": 2,
                "status": "queued",
                "jobType": "sync",
                "startTime": "2023-03-25T01:30:50Z",
                "connectionId": "c1",
                "duration": "PT8H6M12S",
                "bytesSynced": 10,
            },
        ],
        "next": "http://internal-host:8001/api/public/v1/jobs?limit=100&offset=100",
    }

    async def jobs(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/public/v1/jobs", jobs)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    api = plan_url(f"http://127.0.0.1:{port}/api/public/v1").candidates[0]
    try:
        async with AirbyteClient(api, NoAuth()) as client:
            listed = await client.list_jobs()
    finally:
        await runner.cleanup()
    first, second = listed
    assert isinstance(first, Job)
    assert first.job_id == 9007199254740993
    assert first.status == "paused_by_admin"
    assert not first.is_known_status
    assert not first.is_terminal
    assert first.start_time == datetime(2023, 3, 25, 1, 30, tzinfo=UTC)
    assert first.last_updated_at is None
    assert first.rows_synced is None
    assert first.bytes_synced is None
    assert second.bytes_synced == 10
    assert second.status == "queued"
    assert not second.is_terminal


async def test_a_list_that_shifts_while_read_loses_nothing(anyio_backend: str) -> None:
    """Ordered by update time, a job updated between two page reads moves to the end: the
    items after it shift left by one, and plain offset paging would skip one of them."""
    order = list(range(1, 151))
    status = dict.fromkeys(order, "running")
    served = {"pages": 0}

    def view(job_id: int) -> dict[str, object]:
        return {
            "jobId": job_id,
            "status": status[job_id],
            "jobType": "sync",
            "startTime": "2026-01-01T00:00:00Z",
            "connectionId": "c",
        }

    async def jobs(request: web.Request) -> web.Response:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        page = [view(j) for j in order[offset : offset + limit]]
        served["pages"] += 1
        if served["pages"] == 1:
            order.remove(5)
            order.append(5)
            status[5] = "succeeded"
        return web.json_response({"data": page})

    app = web.Application()
    app.router.add_get("/api/public/v1/jobs", jobs)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    api = plan_url(f"http://127.0.0.1:{runner.addresses[0][1]}/api/public/v1").candidates[0]
    try:
        async with AirbyteClient(api, NoAuth()) as client:
            listed = await client.list_jobs(order_by="updatedAt|ASC")
    finally:
        await runner.cleanup()
    by_id = {j.job_id: j for j in listed}
    assert sorted(by_id) == list(range(1, 151))
    assert by_id[5].status == "succeeded"  # the newer copy wins


async def test_a_newest_first_list_skips_nothing_that_did_not_move(anyio_backend: str) -> None:
    """Newest first, a job updated between page reads moves to the front: the jobs after it
    shift to later pages and are read twice (never skipped). The moved job itself is updated
    after the list began, so the next window shows it."""
    order = list(range(150, 0, -1))
    status = dict.fromkeys(order, "running")
    served = {"pages": 0}

    def view(job_id: int) -> dict[str, object]:
        return {
            "jobId": job_id,
            "status": status[job_id],
            "jobType": "sync",
            "startTime": "2026-01-01T00:00:00Z",
            "connectionId": "c",
        }

    async def jobs(request: web.Request) -> web.Response:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        page = [view(j) for j in order[offset : offset + limit]]
        served["pages"] += 1
        if served["pages"] == 1:
            status[40] = "succeeded"  # read as running on page 2, after moving to the front
            order.remove(40)
            order.insert(0, 40)
        return web.json_response({"data": page})

    app = web.Application()
    app.router.add_get("/api/public/v1/jobs", jobs)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    api = plan_url(f"http://127.0.0.1:{runner.addresses[0][1]}/api/public/v1").candidates[0]
    try:
        async with AirbyteClient(api, NoAuth()) as client:
            listed = await client.list_jobs(order_by="updatedAt|DESC")
    finally:
        await runner.cleanup()
    ids = [j.job_id for j in listed]
    assert len(ids) == len(set(ids))  # read twice, listed once
    assert set(ids) == set(range(1, 151)) - {40}
