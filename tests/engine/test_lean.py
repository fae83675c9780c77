"""A lean engine: syncs wait without tasks of their own, intents are journaled in batches, batched
ticks keep the beat, per-job polling reads a bounded number of jobs at once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from typing import Any

import anyio
import pytest
from aiohttp import web

from airbyte_fleet.api import AirbyteClient, Job
from airbyte_fleet.engine.events import Event, EventBus, SyncTriggering
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import build_plan
from airbyte_fleet.engine.result import ResultBuilder
from airbyte_fleet.engine.run import Engine
from airbyte_fleet.engine.watch import PER_JOB_READS, BatchedWatcher
from conftest import SimFactory, client_for, misbehaving_proxy

pytestmark = pytest.mark.anyio


class _Store:
    """A critical sink like the journal: takes intents one by one or in batches (``append``)."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.intents: set[str] = set()

    def __call__(self, event: Event) -> None:
        if isinstance(event, SyncTriggering):
            self.batches.append(1)
            self.intents.add(event.connection_id)

    def append(self, events: Iterable[Event]) -> None:
        events = list(events)
        self.batches.append(len(events))
        self.intents.update(e.connection_id for e in events if isinstance(e, SyncTriggering))


def _engine_tasks() -> int:
    """Tasks running the engine's own code (the simulator's server tasks share the loop)."""
    count = 0
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        name = getattr(coro, "__qualname__", "")
        frame = getattr(coro, "cr_frame", None)
        module = frame.f_globals.get("__name__", "") if frame is not None else ""
        if name.startswith(("Engine.", "EngineCore.", "BatchedWatcher.", "PerJobWatcher.")) or (
            module.startswith("airbyte_fleet.engine")
        ):
            count += 1
    return count


async def test_syncs_followed_by_the_watcher_have_no_task_of_their_own(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=300, workspaces=3, sync_seconds=(600, 600))
    store = _Store()
    triggered = anyio.Event()
    count = 0

    def on_event(event: Event) -> None:
        nonlocal count
        if event.kind == "sync_triggered":
            count += 1
            if count == 300:
                triggered.set()

    async with client_for(root) as client:
        plan = await build_plan(client, Selection(all=True))
        builder = ResultBuilder()
        engine = Engine(
            client,
            RunOptions(poll_interval=0.05, max_concurrency=300, poll_mode="batched", grace=10),
            EventBus([builder, on_event], critical=[store]),
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, plan)
            with anyio.fail_after(30):
                await triggered.wait()
            # Let a few ticks pass: every job is followed now, and nothing waits in a task.
            for _ in range(20):
                await anyio.sleep(0.01)
            tasks = _engine_tasks()
            engine.stop()
    # The feeder, the watcher, the deadline timer, the stop bound: a handful, not 300.
    assert tasks <= 8, f"{tasks} engine tasks with 300 syncs in flight"
    assert builder.result.counts["cancelled"] == 300
    assert [j["status"] for j in sim.jobs] == ["cancelled"] * 300
    # 300 intents in a few transactions, not 300.
    assert sum(store.batches) == 300
    assert len(store.batches) <= 10, store.batches


async def test_no_trigger_goes_out_before_its_intent_is_recorded(make_sim: SimFactory) -> None:
    _sim, root = await make_sim(connections=120, sync_seconds=(0.05, 0.1))
    store = _Store()
    early: list[str] = []

    async def before(request: web.Request) -> None:
        if request.method == "POST" and request.path.endswith("/jobs"):
            body = await request.json()
            if body["connectionId"] not in store.intents:
                early.append(body["connectionId"])

    async with misbehaving_proxy(root, before=before) as proxied, client_for(proxied) as client:
        plan = await build_plan(client, Selection(all=True))
        builder = ResultBuilder()
        await Engine(
            client,
            RunOptions(poll_interval=0.05, max_concurrency=120),
            EventBus([builder], critical=[store]),
        ).run(plan)
    assert builder.result.counts["succeeded"] == 120
    assert early == []
    assert len(store.batches) < 120


class _NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        raise AssertionError("a batched tick was jittered")


async def test_batched_ticks_keep_the_beat(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, sync_seconds=(0.2, 0.3))
    stop = anyio.Event()
    async with client_for(root) as client:
        watcher = BatchedWatcher(client, 0.05, stop=stop, rng=_NoJitter())
        seen: list[str] = []
        all_ended = anyio.Event()

        def on_news(fresh: Job | None) -> None:
            if fresh is not None:
                seen.append(fresh.status)
                if seen.count("succeeded") == 3:
                    all_ended.set()

        for connection in sim.connections:
            job = await client.create_job(connection["connectionId"])
            watcher.watch(job, on_news, workspace_id=connection["workspaceId"])
        async with anyio.create_task_group() as tg:
            tg.start_soon(watcher.run)
            with anyio.fail_after(10):
                await all_ended.wait()
            stop.set()
    assert watcher.ticks >= 2


async def test_per_job_polling_reads_a_bounded_number_at_once(make_sim: SimFactory) -> None:
    total = PER_JOB_READS + 30
    _sim, root = await make_sim(connections=total, sync_seconds=(0.3, 0.5))
    in_flight = 0
    most = 0

    async def before(request: web.Request) -> None:
        nonlocal in_flight, most
        if request.method == "GET" and "/jobs/" in request.path:
            in_flight += 1
            most = max(most, in_flight)
            try:
                await anyio.sleep(0.02)  # hold each read a moment, so that reads overlap
            finally:
                in_flight -= 1

    async with misbehaving_proxy(root, before=before) as proxied, client_for(proxied) as client:
        client_: AirbyteClient = client
        plan = await build_plan(client_, Selection(all=True))
        builder = ResultBuilder()
        await Engine(
            client_,
            RunOptions(poll_interval=0.01, max_concurrency=total, poll_mode="per-job"),
            EventBus([builder]),
        ).run(plan)
    assert builder.result.counts["succeeded"] == total
    assert 1 < most <= PER_JOB_READS


async def test_few_jobs_are_read_when_per_job_polling_would_read_them(
    make_sim: SimFactory,
) -> None:
    """With few jobs, a batched tick comes when per-job polling would read each (registration +
    k intervals, and once soon after the trigger), those due within a short lag sharing it; with
    many, the ticks keep a fixed beat."""
    sim, root = await make_sim(connections=3, sync_seconds=(60, 60))
    now = [100.0]
    async with client_for(root) as client:
        watcher = BatchedWatcher(client, 5.0, stop=anyio.Event(), clock=lambda: now[0])
        jobs = [await client.create_job(c["connectionId"]) for c in sim.connections]
        for offset, job in zip((0.0, 0.1, 0.2), jobs, strict=True):
            now[0] = 100.0 + offset
            watcher.watch(job, lambda _: None, workspace_id=sim.connections[0]["workspaceId"])
        lag = 0.5
        # First the quick read after the first trigger (5 s / 4), then each job's own interval.
        assert watcher._next_tick() == pytest.approx(100.0 + 1.25 + lag)
        watcher._served(101.75)
        watcher._last_tick = 101.75
        assert watcher._next_tick() == pytest.approx(105.0 + lag)
        watcher._served(105.5)  # every job was due by then: one tick for the three
        watcher._last_tick = 105.5
        assert watcher._next_tick() == pytest.approx(110.0 + lag)
        # Many jobs: the beat, whatever their times.
        for n in range(300):
            watcher._watches[10_000 + n] = watcher._watches[jobs[0].job_id]
        assert watcher._next_tick() == pytest.approx(105.5 + 5.0)
