"""Lists read a page at a time, and lists that move while they are read.

Newest first by update time (how the batched watcher reads), a job updated while the pages are
read moves to the front and pushes the others to later pages. When as many move during one page
request as a page moves on, the next page is the last one again: it must be read past, not taken
for the end of the list, and a list that never advances must end in an error, not a loop.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs

import anyio
import pytest
from aiohttp import web

from airbyte_fleet.api import Job, NoAuth, PagingError, ServerError, plan_url
from airbyte_fleet.api.client import (
    CONNECTION_PAGES_AHEAD,
    JOB_PAGE_OVERLAP,
    MAX_STALLED_PAGES,
    PAGE_LIMIT,
    AirbyteClient,
)
from airbyte_fleet.simulator import FakeClock, JobScript, Simulator
from conftest import SimFactory, client_for, misbehaving_proxy

pytestmark = pytest.mark.anyio

NEWEST_FIRST = "updatedAt|DESC"


async def _running_jobs(sim: Simulator, clock: FakeClock, finish_at: dict[int, float]) -> list[int]:
    """One running job per connection, created a second apart (so the list order is fixed);
    the i-th ends (and moves to the front of a newest-first list) at ``finish_at[i]``, if given."""
    ids: list[int] = []
    for i, connection in enumerate(sim.connections):
        end = finish_at.get(i, clock.now() + 100_000.0)
        sim.script(connection["connectionId"], JobScript(seconds=end - clock.now()))
        ids.append(sim.start_job(connection["connectionId"])["jobId"])
        clock.advance(1.0)
    return ids


def _offsets(sim: Simulator) -> list[int]:
    return [
        int(parse_qs(e.query)["offset"][0])
        for e in sim.exchanges
        if e.route == "/jobs" and e.method == "GET"
    ]


async def test_a_page_repeated_by_updates_is_read_past(make_sim: SimFactory) -> None:
    clock = FakeClock()
    sim, root = await make_sim(clock=clock, connections=3 * PAGE_LIMIT, workspaces=1)
    began = clock.now()
    moved_at = began + 3 * PAGE_LIMIT + 1  # just after the last job is created
    # The oldest page's worth of jobs end together, just after the first page is read.
    ids = await _running_jobs(sim, clock, dict.fromkeys(range(PAGE_LIMIT), moved_at))
    moved, unmoved = set(ids[:PAGE_LIMIT]), set(ids[PAGE_LIMIT:])
    since = datetime.fromtimestamp(began - 1, UTC)
    pages: list[tuple[Job, ...]] = []
    async with client_for(root) as client:
        async for jobs in client.iter_job_pages(updated_at_start=since, order_by=NEWEST_FIRST):
            pages.append(jobs)
            clock.set(moved_at)
        # The next tick's window starts when the jobs moved: it shows them as they are now.
        later = await client.list_jobs(
            updated_at_start=datetime.fromtimestamp(moved_at, UTC), order_by=NEWEST_FIRST
        )

    # The second page was the first one again, shifted by the jobs that moved to the front...
    assert [j.job_id for j in pages[1]] == [j.job_id for j in pages[0]]
    # ...and the read went on: every job that did not move was read, none skipped.
    read = {job.job_id: job for page in pages for job in page}
    assert unmoved <= read.keys()
    assert {read[i].status for i in unmoved} == {"running"}
    assert _offsets(sim)[:4] == [0, PAGE_LIMIT, 2 * PAGE_LIMIT, 3 * PAGE_LIMIT]
    assert {job.job_id for job in later} == moved
    assert {job.status for job in later} == {"succeeded"}


async def test_a_list_that_never_advances_ends_in_an_error(make_sim: SimFactory) -> None:
    """A page's worth of jobs moves to the front during every page request: the reader never
    gets past the first page, so it stops after MAX_STALLED_PAGES pages with nothing new."""
    clock = FakeClock()
    batches = MAX_STALLED_PAGES + 1
    sim, root = await make_sim(clock=clock, connections=(batches + 1) * PAGE_LIMIT, workspaces=1)
    began = clock.now()
    first_move = began + (batches + 1) * PAGE_LIMIT + 1  # just after the last job is created
    # Batch b (the b-th oldest page's worth) ends at first_move + b: one batch moves per page.
    ids = await _running_jobs(
        sim, clock, {i: first_move + i // PAGE_LIMIT for i in range(batches * PAGE_LIMIT)}
    )
    since = datetime.fromtimestamp(began - 1, UTC)
    pages: list[tuple[Job, ...]] = []

    async def read(client: AirbyteClient) -> None:
        async for jobs in client.iter_job_pages(updated_at_start=since, order_by=NEWEST_FIRST):
            pages.append(jobs)
            clock.set(first_move + len(pages) - 1)

    async with client_for(root) as client:
        stalled = f"job list did not advance: {MAX_STALLED_PAGES} pages in a row"
        with pytest.raises(PagingError, match=stalled):
            await read(client)
    assert len(pages) == 1 + MAX_STALLED_PAGES
    # Every page was the newest page's worth of jobs that had not moved, again and again.
    assert {j.job_id for j in pages[0]} == set(ids[-PAGE_LIMIT:])
    assert all([j.job_id for j in page] == [j.job_id for j in pages[0]] for page in pages)
    assert sim.count("GET", "/jobs") == 1 + MAX_STALLED_PAGES


async def test_newest_first_pages_need_no_overlap_and_others_do(make_sim: SimFactory) -> None:
    clock = FakeClock()
    sim, root = await make_sim(clock=clock, connections=2 * PAGE_LIMIT + 5, workspaces=1)
    await _running_jobs(sim, clock, {})
    async with client_for(root) as client:
        newest_first = await client.list_jobs(order_by=NEWEST_FIRST)
        newest_offsets = _offsets(sim)
        oldest_first = await client.list_jobs(order_by="updatedAt|ASC")
        oldest_offsets = _offsets(sim)[len(newest_offsets) :]
        # A status filter drops a job that changes from the list: the rest move up a place.
        await client.list_jobs(order_by=NEWEST_FIRST, status="running")
        filtered_offsets = _offsets(sim)[len(newest_offsets) + len(oldest_offsets) :]
    step = PAGE_LIMIT - JOB_PAGE_OVERLAP
    assert newest_offsets == [0, PAGE_LIMIT, 2 * PAGE_LIMIT]
    assert oldest_offsets == [0, step, 2 * step]
    assert filtered_offsets == oldest_offsets
    assert len(newest_first) == len(oldest_first) == 2 * PAGE_LIMIT + 5
    assert [j.job_id for j in newest_first] == [j.job_id for j in reversed(oldest_first)]


async def test_pages_come_one_at_a_time(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2 * PAGE_LIMIT + 50, workspaces=2)
    async with client_for(root) as client:
        pages = client.iter_connection_pages()
        first = await anext(pages)
        # One page asked for, one page given: a list of one page costs one request.
        assert sim.count("GET", "/connections") == 1
        sizes = [len(first)] + [len(page) async for page in pages]
    assert sizes == [PAGE_LIMIT, PAGE_LIMIT, 50]
    # Then one more page ahead after each full one: one request past the end here.
    assert sim.count("GET", "/connections") == 4


async def test_a_long_connection_list_is_read_several_pages_at_once(make_sim: SimFactory) -> None:
    """10,000 connections were 100 requests in a row before a run could start; pages are asked
    for ahead now, up to CONNECTION_PAGES_AHEAD at once, and a few at most past the end."""
    pages_in_list = 30
    sim, root = await make_sim(connections=pages_in_list * PAGE_LIMIT - 1, workspaces=4)
    in_flight = 0
    most = 0

    async def before(request: web.Request) -> None:
        nonlocal in_flight, most
        if request.path.endswith("/connections"):
            in_flight += 1
            most = max(most, in_flight)
            try:
                await anyio.sleep(0.01)
            finally:
                in_flight -= 1

    async with misbehaving_proxy(root, before=before) as proxied, client_for(proxied) as client:
        listed = await client.list_connections()
    assert len(listed) == pages_in_list * PAGE_LIMIT - 1
    assert 3 <= most <= CONNECTION_PAGES_AHEAD
    assert (
        pages_in_list <= sim.count("GET", "/connections") < pages_in_list + CONNECTION_PAGES_AHEAD
    )


async def _serve(handler: object) -> tuple[web.AppRunner, AirbyteClient]:
    app = web.Application()
    for path in ("/jobs", "/connections", "/workspaces", "/jobs/{id}"):
        app.router.add_get(f"/api/public/v1{path}", handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    api = plan_url(f"http://127.0.0.1:{runner.addresses[0][1]}/api/public/v1").candidates[0]
    return runner, AirbyteClient(api, NoAuth())


async def test_a_server_that_ignores_offset_is_not_read_forever(anyio_backend: str) -> None:
    asked: list[str] = []

    async def first_page(request: web.Request) -> web.Response:
        asked.append(request.query["offset"])
        if request.path.endswith("/connections"):
            data = [{"connectionId": f"c{i}", "name": f"n{i}"} for i in range(PAGE_LIMIT)]
        else:
            data = [{"jobId": i, "status": "running"} for i in range(PAGE_LIMIT)]
        return web.json_response({"data": data})

    runner, client = await _serve(first_page)
    try:
        async with client:
            with pytest.raises(PagingError, match="job list did not advance"):
                await client.list_jobs()
            jobs_asked, asked[:] = list(asked), []
            with pytest.raises(PagingError, match="connection list did not advance"):
                await client.list_connections()
    finally:
        await runner.cleanup()
    assert len(jobs_asked) == 1 + MAX_STALLED_PAGES
    # Connections are asked for some pages ahead: the ones read are the first 1 + MAX_STALLED.
    read = 1 + MAX_STALLED_PAGES
    assert sorted(asked, key=int)[:read] == [str(PAGE_LIMIT * n) for n in range(read)]
    assert read <= len(asked) < read + CONNECTION_PAGES_AHEAD


async def test_a_body_that_is_not_a_page_is_a_server_fault(anyio_backend: str) -> None:
    bodies: dict[str, object] = {
        "/api/public/v1/jobs": {"data": [{"jobId": 1, "status": "running"}, {"status": "x"}]},
        "/api/public/v1/connections": {"data": {"connectionId": "c"}},
        "/api/public/v1/jobs/7": ["not", "a", "job"],
        "/api/public/v1/workspaces": {"data": [{"name": "no id"}]},
    }

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(bodies[request.path])

    runner, client = await _serve(answer)
    try:
        async with client:
            with pytest.raises(ServerError, match=r"GET /jobs .* not a page of jobs \(a job needs"):
                await client.list_jobs()
            with pytest.raises(
                ServerError, match=r"not a page of connections \(data is not a list"
            ):
                await client.list_connections()
            with pytest.raises(ServerError, match=r"GET /jobs/\{jobId\} .* not a job \(not a job"):
                await client.get_job(7)
            with pytest.raises(ServerError, match=r"not a page of workspaces \(1 problems\)"):
                await client.list_workspaces()
    finally:
        await runner.cleanup()
