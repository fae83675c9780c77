"""Batched polling: one list call per workspace per tick, and never a hang when the list lies."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import parse_qs

import anyio
import pytest
from aiohttp import web
from pydantic import SecretStr
from structlog.testing import capture_logs

from airbyte_fleet.api import AirbyteClient, ClientCredentials, plan_url
from airbyte_fleet.engine.events import EventBus
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import build_plan
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.run import Engine
from airbyte_fleet.engine.watch import LIST_FAILURES_BEFORE_FALLBACK, BatchedWatcher, JobWatcher
from airbyte_fleet.simulator import FakeClock, JobScript
from conftest import SimFactory, client_for, misbehaving_proxy

pytestmark = pytest.mark.anyio

Rewrite = Callable[[web.Request, str], web.Response | None]


async def _run(
    client: AirbyteClient,
    options: RunOptions,
    watcher: Callable[[anyio.Event], JobWatcher] | None = None,
) -> RunResult:
    plan = await build_plan(client, Selection(all=True))
    builder = ResultBuilder()
    await Engine(client, options, EventBus([builder]), watcher=watcher).run(plan)
    return builder.result


async def test_one_list_call_per_workspace_per_tick(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=60, workspaces=2, sync_seconds=(0.3, 1.0))
    async with client_for(root) as client:
        before = len(sim.exchanges)
        result = await _run(client, RunOptions(poll_interval=0.1, max_concurrency=60))
    assert result.counts["succeeded"] == 60
    run = sim.exchanges[before:]
    assert sum(1 for e in run if e.route == "/jobs/{jobId}") == 0  # no per-job polling
    lists = [e for e in run if e.route == "/jobs" and e.method == "GET"]
    assert lists
    for e in lists:
        query = parse_qs(e.query)
        assert query["orderBy"] == ["updatedAt|DESC"]
        assert query["workspaceIds"]
        assert query["updatedAtStart"]
    # Far fewer requests than syncs × ticks; at most 3 per sync including the trigger.
    assert len(run) <= 3 * 60


async def test_auto_mode_stays_per_job_for_a_handful(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3)
    async with client_for(root) as client:
        result = await _run(client, RunOptions(poll_interval=0.02))
    assert result.ok
    assert sim.count("GET", "/jobs/{jobId}") > 0
    assert sim.count("GET", "/jobs") == 0


def _client(root: str) -> AirbyteClient:
    api = plan_url(root + "/api/public/v1").candidates[0]
    return AirbyteClient(
        api, ClientCredentials("sim-client", SecretStr("sim-secret"), api.token_url)
    )


async def _fast_forward(clock: FakeClock, stop: anyio.Event) -> None:
    """Simulated time at 5x: old jobs can be minutes old without the test waiting for them."""
    while not stop.is_set():
        with anyio.move_on_after(0.01):
            await stop.wait()
        clock.advance(0.05)


async def test_a_server_ignoring_updated_at_start_falls_back_to_per_job(
    make_sim: SimFactory,
) -> None:
    clock = FakeClock(start=time.time())
    sim, root = await make_sim(clock=clock, connections=8, workspaces=1, sync_seconds=(0.3, 0.6))
    first = sim.connections[0]["connectionId"]
    sim.script(first, JobScript(seconds=0.05))
    sim.start_job(first)
    clock.advance(60)  # an old, finished job that the filter should have hidden

    def drop_filter(request: web.Request, query: str) -> str | None:
        if request.path.endswith("/jobs") and request.method == "GET":
            return "&".join(p for p in query.split("&") if not p.startswith("updatedAtStart="))
        return None

    stop = anyio.Event()
    async with misbehaving_proxy(root, drop_filter) as proxied, _client(proxied) as client:
        with anyio.fail_after(20), capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_fast_forward, clock, stop)
                result = await _run(client, RunOptions(poll_interval=0.05, poll_mode="batched"))
                stop.set()
    assert result.counts["succeeded"] == 8
    fallbacks = [e for e in logs if e["event"] == "batched_polling_fallback"]
    assert len(fallbacks) == 1
    assert "updatedAtStart" in fallbacks[0]["reason"]
    assert sim.count("GET", "/jobs/{jobId}") > 0


async def test_a_list_that_never_shows_jobs_cannot_hang_a_sync(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=6, workspaces=1, sync_seconds=(0.2, 0.4))

    def empty_lists(request: web.Request, query: str) -> str | None:
        if request.path.endswith("/jobs") and request.method == "GET" and "updatedAtStart" in query:
            return '{"data": []}'
        return None

    def watcher(stop: anyio.Event) -> JobWatcher:
        return BatchedWatcher(client, 0.05, stop=stop, confirm_after=0.3)

    async with misbehaving_proxy(root, empty_lists) as proxied, _client(proxied) as client:
        with anyio.fail_after(20), capture_logs() as logs:
            result = await _run(client, RunOptions(poll_interval=0.05), watcher=watcher)
    assert result.counts["succeeded"] == 6
    assert any(e["event"] == "batched_polling_fallback" for e in logs)


async def test_rate_limiting_slows_the_ticks(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, workspaces=1)
    cid = sim.connections[0]["connectionId"]
    sim.script(cid, JobScript(seconds=60))
    stop = anyio.Event()
    async with client_for(root) as client:
        job = await client.create_job(cid)
        watcher = BatchedWatcher(client, 1.0, stop=stop)
        watcher.watch(job, lambda _: None, workspace_id=sim.connections[0]["workspaceId"])
        assert watcher.slowdown == 1.0
        sim.faults.update({"rate_429": 1.0})
        await watcher.tick()
        await watcher.tick()
        assert watcher.slowdown == 4.0
        sim.faults.update({"rate_429": 0.0})
        await watcher.tick()
        assert watcher.slowdown == 2.0


def _refuse_lists(status: int, counts: Counter[str], *, first: int | None = None) -> Rewrite:
    """Answer *status* to every workspace job list (the first *first* only, if given), counting
    the lists asked for per workspace: Prism's dynamic mock answers them all 422."""

    def rewrite(request: web.Request, query: str) -> web.Response | None:
        if request.method != "GET" or not request.path.endswith("/jobs"):
            return None
        workspaces = parse_qs(query).get("workspaceIds")
        if not workspaces:
            return None  # a connection's own list (reconciling a trigger): passed on
        counts[workspaces[0]] += 1
        if first is not None and counts.total() > first:
            return None
        return web.json_response({"message": "unsupported filter"}, status=status)

    return rewrite


async def test_a_refused_list_switches_its_workspace_to_per_job_polling_at_once(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=8, workspaces=2, sync_seconds=(0.2, 0.4))
    workspaces = {c["workspaceId"] for c in sim.connections}
    lists: Counter[str] = Counter()
    async with (
        misbehaving_proxy(root, _refuse_lists(422, lists)) as proxied,
        _client(proxied) as client,
    ):
        with anyio.fail_after(20), capture_logs() as logs:
            result = await _run(client, RunOptions(poll_interval=0.05, poll_mode="batched"))
    assert result.counts["succeeded"] == 8
    # One refused list per workspace, then per-job reads only (counted where they arrive).
    assert lists == dict.fromkeys(workspaces, 1)
    assert sim.count("GET", "/jobs/{jobId}") >= 8
    fallbacks = [e for e in logs if e["event"] == "batched_polling_fallback"]
    assert sorted(e["workspace_id"] for e in fallbacks) == sorted(workspaces)
    assert all("HTTP 422" in e["reason"] for e in fallbacks)


async def test_a_list_failing_with_5xx_tick_after_tick_falls_back_after_a_few(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=6, workspaces=1, sync_seconds=(0.2, 0.4))
    lists: Counter[str] = Counter()
    async with (
        misbehaving_proxy(root, _refuse_lists(503, lists)) as proxied,
        _client(proxied) as client,
    ):
        with anyio.fail_after(20), capture_logs() as logs:
            result = await _run(client, RunOptions(poll_interval=0.05, poll_mode="batched"))
    assert result.counts["succeeded"] == 6
    # Each failing tick is the client's 6 tries (stamina's testing mode); then no list again.
    assert lists.total() == LIST_FAILURES_BEFORE_FALLBACK * 6
    assert sim.count("GET", "/jobs/{jobId}") >= 6
    fallbacks = [e for e in logs if e["event"] == "batched_polling_fallback"]
    assert len(fallbacks) == 1
    assert "HTTP 503" in fallbacks[0]["reason"]


async def test_a_list_failing_for_fewer_ticks_keeps_batching(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=6, workspaces=1, sync_seconds=(0.3, 0.6))
    lists: Counter[str] = Counter()
    failing = (LIST_FAILURES_BEFORE_FALLBACK - 1) * 6  # whole ticks, after the client's retries
    async with (
        misbehaving_proxy(root, _refuse_lists(503, lists, first=failing)) as proxied,
        _client(proxied) as client,
    ):
        with anyio.fail_after(20), capture_logs() as logs:
            result = await _run(client, RunOptions(poll_interval=0.05, poll_mode="batched"))
    assert result.counts["succeeded"] == 6
    assert not [e for e in logs if e["event"] == "batched_polling_fallback"]
    assert lists.total() > failing  # lists went on after the failures
    assert sim.count("GET", "/jobs") > 0
