"""Runs for the report's tests: real ones against the simulator (journaled, with the timeline
heard live), and a large run's events made through the real event types and result builder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncFailed,
    SyncRetrying,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.journal import Journal
from airbyte_fleet.report import Timeline, TimelineBuilder, timeline_from_store
from airbyte_fleet.runner import RunSession
from conftest import client_for

# One main bar per sync (``class="b KIND"``); queued parts and retry marks have other classes.
BAR = re.compile(r'<rect class="b [a-z]"')


@dataclass
class RealRun:
    result: RunResult
    live: Timeline
    stored: Timeline
    state_dir: Path


async def real_run(root: str, state_dir: Path, *, within: float = 60.0, **options: Any) -> RealRun:
    """Every connection of the simulator at *root*, journaled in *state_dir*; the timeline both
    as heard live and as read back from the journal."""
    builder = TimelineBuilder()
    with Journal(state_dir) as journal:
        async with client_for(root) as client:
            session = await RunSession.planned(
                client,
                Selection(all=True),
                RunOptions(**({"poll_interval": 0.05, "retry_backoff": 0} | options)),
                store=journal,
                sinks=[builder],
            )
            with anyio.fail_after(within):
                result = await session.run()
        stored = timeline_from_store(journal, session.run_id)
    assert stored is not None
    return RealRun(result, builder.timeline(), stored, state_dir)


def made_run(count: int, *, name: str = "Postgres → Snowflake {i:05d}") -> list[Event]:
    """A finished run of *count* syncs as the engine would tell it (a run of this size against
    the simulator takes longer than the tests that draw it): 200 at a time, about a minute each,
    one in fifty failing once and retried, one in a hundred failing for good."""
    run_id = "20260101T000000Z-made0000"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def at(seconds: float) -> dict[str, Any]:
        return {"run_id": run_id, "at": t0 + timedelta(seconds=seconds), "elapsed_s": seconds}

    planned = tuple(
        PlannedSync(f"00000000-0000-4000-8000-{i:012d}", name.format(i=i), "ws")
        for i in range(count)
    )
    events: list[Event] = [
        RunStarted(**at(0), total=count, job_type="sync", max_concurrency=200, planned=planned)
    ]
    end = 0.0
    for i, p in enumerate(planned):
        start = (i // 200) * 70.0 + (i % 7)
        sync = {"connection_id": p.connection_id, "connection_name": p.connection_name}
        job = {**sync, "job_id": 1000 + i}
        events.append(SyncTriggering(**at(start), **sync))
        events.append(SyncTriggered(**at(start + 0.2), **job, status="pending"))
        events.append(SyncStatusChanged(**at(start + 1), **job, status="running"))
        finish = start + 30 + (i * 37) % 35
        if i % 50 == 1:
            events.append(SyncRetrying(**at(finish), **job, status="failed", error="boom"))
            events.append(SyncTriggering(**at(finish + 1), **sync, attempt=2))
            job = {**sync, "job_id": 100_000 + i}
            events.append(SyncTriggered(**at(finish + 1.2), **job, attempt=2, status="pending"))
            finish += 20
        counted = {"rows_synced": 1000 + i, "bytes_synced": 250_000 * (i % 40 + 1)}
        attempt = 2 if i % 50 == 1 else 1
        if i % 100 == 7:
            events.append(
                SyncFailed(
                    **at(finish), **job, attempt=attempt, status="failed", error="source said no"
                )
            )
        else:
            events.append(
                SyncSucceeded(**at(finish), **job, attempt=attempt, status="succeeded", **counted)
            )
        end = max(end, finish)
    events.append(RunFinished(**at(end + 1), outcome="failed"))
    # As they happened (stable: a sync's own events keep their order).
    return sorted(events, key=lambda e: e.at)


def result_and_timeline(events: list[Event]) -> tuple[RunResult, Timeline]:
    results, bars = ResultBuilder(), TimelineBuilder()
    for event in events:
        results(event)
        bars(event)
    return results.result, bars.timeline()
