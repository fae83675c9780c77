"""Three ``serve`` replicas on one PostgreSQL, one of them killed with SIGKILL at a random moment
five times (and started again), while four runs and a minutely schedule go on: counted at the
simulator, every connection of every run ends once, no job is left running or triggered twice,
and every tick of the schedule fires once.

The kill plan comes from a seed, printed with the counts (run with ``-s`` to see them);
``AIRBYTE_FLEET_CHAOS_SEED=N`` replays the same plan. Which replica dies is drawn among those
holding a run at that moment, so that each kill leaves work for the others to adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .harness import (
    TERMINAL,
    Fleet,
    Replica,
    journal_runs,
    leases,
    live_owners,
    overlapping_jobs,
    owner_pid,
    schedule_fires,
    unaccounted_jobs,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CONNECTIONS = 300
SYNC_SECONDS = (5.0, 20.0)
REPLICAS = 3
# Short, so that a killed replica's runs are adopted within seconds.
LEASE = "3s"
# Runs at once per replica: low enough that the runs spread over the replicas.
MAX_RUNS = 2
CONCURRENCY = 30
KILLS = 5
# Kills fall in this span (seconds after the runs were submitted), while the runs go on.
KILL_SPAN = (4.0, 70.0)
SCHEDULE = "minutely"
TICKS_WANTED = 2
TICK_MARGIN = timedelta(seconds=5)
# The whole test stays within the brief's budget of about four minutes.
WITHIN = 200.0


@dataclass
class Ownership:
    """Who held each run, from ``run_leases`` read every quarter second."""

    owners: dict[str, str] = field(default_factory=dict)
    adoptions: list[tuple[str, str, str]] = field(default_factory=list)

    async def watch(self, url: str) -> None:
        while True:
            for run_id, (owner, _) in (await asyncio.to_thread(leases, url)).items():
                before = self.owners.get(run_id)
                if before is not None and before != owner:
                    self.adoptions.append((run_id, before, owner))
                self.owners[run_id] = owner
            await asyncio.sleep(0.25)


def _config(path: Path, scheduled: list[str]) -> Path:
    listed = ", ".join(json.dumps(cid) for cid in scheduled)
    path.write_text(
        "[run]\n"
        "poll_interval = 0.5\n"
        "retry_backoff = 0\n"
        f"\n[schedules.{SCHEDULE}]\n"
        'cron = "* * * * *"\n'
        "catch_up = 0\n"
        f"connections = [{listed}]\n"
        f"\n[schedules.{SCHEDULE}.options]\n"
        f"max_concurrency = {CONCURRENCY}\n"
    )
    return path


def _ticks(after: datetime, through: datetime) -> list[datetime]:
    """Every whole minute in (*after*, *through*]."""
    tick = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    out = []
    while tick <= through:
        out.append(tick)
        tick += timedelta(minutes=1)
    return out


async def _status(slots: list[Replica], run_id: str) -> dict[str, Any]:
    """The run as any live replica shows it."""
    for replica in slots:
        if replica.proc.alive:
            with contextlib.suppress(aiohttp.ClientError):
                return await replica.status(run_id)
    raise AssertionError(f"no replica answered for run {run_id}")


async def test_replicas_killed_at_random_lose_nothing_and_trigger_nothing_twice(
    pg_url: str, tmp_path: Path
) -> None:
    seed = int(os.environ.get("AIRBYTE_FLEET_CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    print(f"\nchaos seed {seed} (AIRBYTE_FLEET_CHAOS_SEED={seed} replays this kill plan)")
    began = time.monotonic()
    async with Fleet(tmp_path) as fleet:
        sim = await fleet.simulator(
            connections=CONNECTIONS, sync_seconds=SYNC_SECONDS, seed=seed % 1000 + 1
        )
        ids = await sim.connection_ids()
        assert len(ids) == CONNECTIONS
        plans = {
            "a": ids[0:90],
            "b": ids[90:180],
            "c": ids[180:270],
            # Over the end of a's connections and the start of b's.
            "d": ids[70:110],
        }
        scheduled = ids[270:300]
        config = _config(tmp_path / "fleet.toml", scheduled)

        async def start() -> Replica:
            return await fleet.replica(
                sim, database_url=pg_url, lease=LEASE, config=config, max_runs=MAX_RUNS
            )

        slots = list(await asyncio.gather(*(start() for _ in range(REPLICAS))))
        window_start = datetime.now(UTC)
        ownership = Ownership()
        watcher = asyncio.create_task(ownership.watch(pg_url))
        try:
            submitted: dict[str, list[str]] = {}
            for i, conns in enumerate(plans.values()):
                run_id = await slots[i % REPLICAS].submit(
                    {"connections": conns}, max_concurrency=CONCURRENCY, poll_interval=0.5
                )
                submitted[run_id] = conns
            kills = await _kill_at_random(rng, slots, start, pg_url)
            fired, window_end = await _settle(slots, submitted, pg_url, window_start, began)
            statuses = {
                run_id: await _status(slots, run_id) for run_id in [*submitted, *fired.values()]
            }
            jobs = await sim.jobs()
            posts = await sim.posts()
            stored = journal_runs(pg_url)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        codes = [await replica.proc.term() for replica in slots if replica.proc.alive]
        replicas = [p for p in fleet.procs if p.name.startswith("replica")]

    plans_by_run = submitted | {run_id: scheduled for run_id in fired.values()}
    results = [s["result"] for s in statuses.values() if s["result"] is not None]
    extra = unaccounted_jobs(jobs, results)
    expected_ticks = _ticks(window_start + TICK_MARGIN, window_end)
    print(
        f"chaos seed {seed}: kills={len(kills)} {kills}; adoptions seen={len(ownership.adoptions)}; "
        f"runs={len(submitted)} submitted + {len(fired)} scheduled; jobs={len(jobs)}; "
        f"POST /jobs={posts} (refused {posts - len(jobs)}); duplicates={len(extra)}; "
        f"ticks in window={len(expected_ticks)}; took {time.monotonic() - began:.0f}s"
    )

    assert len(kills) == KILLS
    assert ownership.adoptions, "no kill left a run for another replica to adopt"
    assert all(code == 0 for code in codes), codes
    for proc in replicas:
        proc.assert_no_traceback()
    # Every connection of every run has exactly one outcome in the run's final result.
    for run_id, planned in plans_by_run.items():
        status = statuses[run_id]
        assert status["state"] == "finished", status
        syncs = status["result"]["syncs"]
        assert Counter(s["connection_id"] for s in syncs) == Counter(planned), run_id
        outcomes = Counter(s["outcome"] for s in syncs)
        assert outcomes == {"succeeded": len(planned)}, (run_id, outcomes)
    # No job left running, none overlapping another of its connection, none that no run follows.
    assert [j for j in jobs if j["status"] not in TERMINAL] == []
    assert overlapping_jobs(jobs) == []
    assert extra == []
    # A connection of one run only (no overlap, no schedule) had exactly one job.
    shared = set(plans["d"]) | set(scheduled)
    per_connection = Counter(j["connectionId"] for j in jobs)
    alone = [cid for cid in ids if cid not in shared]
    assert {cid: per_connection[cid] for cid in alone} == dict.fromkeys(alone, 1)
    # Every tick in the window fired once, and the journal holds no run nobody asked for.
    assert [t for t in expected_ticks if t not in fired] == []
    assert len(expected_ticks) >= TICKS_WANTED
    assert set(stored) == set(plans_by_run)


async def _kill_at_random(
    rng: random.Random,
    slots: list[Replica],
    start: Callable[[], Awaitable[Replica]],
    url: str,
) -> list[str]:
    """SIGKILL a replica holding a run (any when none does) at KILLS random moments; each is
    started again at once (on a new port) in its slot. Returns what was killed when."""
    began = time.monotonic()
    moments = sorted(rng.uniform(*KILL_SPAN) for _ in range(KILLS))
    kills = []
    for at in moments:
        await asyncio.sleep(max(0.0, began + at - time.monotonic()))
        busy_pids = {owner_pid(owner) for owner in await asyncio.to_thread(live_owners, url)}
        busy = [i for i, r in enumerate(slots) if r.pid in busy_pids]
        victim = rng.choice(busy or list(range(len(slots))))
        await slots[victim].proc.kill()
        kills.append(f"{slots[victim].proc.name}@{time.monotonic() - began:.0f}s")
        slots[victim] = await start()
    return kills


async def _settle(
    slots: list[Replica],
    submitted: dict[str, list[str]],
    url: str,
    window_start: datetime,
    began: float,
) -> tuple[dict[datetime, str], datetime]:
    """Wait until every submitted run has finished, TICKS_WANTED ticks have fired and their runs
    finished, with the next tick far enough off that no scheduled run is going while the counts
    are read. Returns the fires (tick -> run id) and the end of the window."""
    while True:
        now = datetime.now(UTC)
        fired = await asyncio.to_thread(schedule_fires, url, SCHEDULE)
        stored = await asyncio.to_thread(journal_runs, url)
        scheduled_done = all(
            stored.get(run_id, (None, None))[0] is not None for run_id in fired.values()
        )
        # The window the counts below use (a tick in the first seconds may find the replicas'
        # schedules not armed yet): settling on another one could leave one tick in it.
        in_window = [tick for tick in fired if tick > window_start + TICK_MARGIN]
        next_tick = 60 - now.second - now.microsecond / 1e6
        if len(in_window) >= TICKS_WANTED and scheduled_done and next_tick >= 15:
            states = [(await _status(slots, run_id))["state"] for run_id in submitted]
            if all(state == "finished" for state in states):
                return fired, now
        if time.monotonic() - began > WITHIN:
            raise AssertionError(
                f"not settled within {WITHIN:g}s: fires {sorted(fired)}, "
                f"runs {[(await _status(slots, r))['state'] for r in submitted]}"
            )
        await asyncio.sleep(1.0)
