"""Hand-built runs for the journal's tests: each event as the engine would emit it, with steadily
advancing times, and ways to read or write the file behind the journal's back."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncEvent,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.result import ResultBuilder
from airbyte_fleet.journal import FILE_NAME, RunStore

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
OPTIONS = {"job_type": "sync", "max_concurrency": 3, "retries": 1, "wait": True}
SELECTION = {"connections": [], "names": ["orders-*"], "all": False}


class Story:
    """Builds one run's events with steadily advancing times."""

    def __init__(self, run_id: str, connections: list[str], *, start: datetime = T0) -> None:
        self.run_id = run_id
        self.connections = connections
        self.start = start
        self.clock = 0.0

    def _at(self) -> dict[str, Any]:
        self.clock += 0.5
        return {
            "run_id": self.run_id,
            "at": self.start + timedelta(seconds=self.clock),
            "elapsed_s": self.clock,
        }

    def started(self, **extra: Any) -> RunStarted:
        values: dict[str, Any] = {
            "total": len(self.connections),
            "job_type": "sync",
            "max_concurrency": 3,
            "planned": tuple(PlannedSync(c, f"name {c}", "ws-1") for c in self.connections),
            "options": OPTIONS,
            "selection": SELECTION,
        }
        return RunStarted(**self._at(), **(values | extra))

    def sync(self, kind: type[SyncEvent], cid: str, **extra: Any) -> SyncEvent:
        return kind(
            **self._at(),
            connection_id=cid,
            connection_name=f"name {cid}",
            workspace_id="ws-1",
            **extra,
        )

    def finished(self, outcome: str = "failed", **extra: Any) -> RunFinished:
        return RunFinished(**self._at(), outcome=outcome, **extra)

    def lifecycle(
        self, cid: str, job_id: int, final: type[SyncEvent] = SyncSucceeded, **final_extra: Any
    ) -> list[Event]:
        return [
            self.sync(SyncTriggering, cid),
            self.sync(SyncTriggered, cid, job_id=job_id, status="pending"),
            self.sync(
                SyncStatusChanged, cid, job_id=job_id, status="running", old_status="pending"
            ),
            self.sync(final, cid, job_id=job_id, **final_extra),
        ]


def finished_run(run_id: str = "run-a") -> list[Event]:
    """Four syncs: one succeeds, one fails, one fails then succeeds on retry, one is skipped."""
    s = Story(run_id, ["c1", "c2", "c3", "c4"])
    return [
        s.started(),
        *s.lifecycle("c1", 101, status="succeeded", rows_synced=10, bytes_synced=100),
        *s.lifecycle("c2", 102, SyncFailed, status="failed", error="Airbyte job 102 failed"),
        s.sync(SyncTriggering, "c3"),
        s.sync(SyncTriggered, "c3", job_id=103, status="running"),
        s.sync(SyncRetrying, "c3", job_id=103, status="failed", error="boom", wait_s=0.25),
        s.sync(SyncTriggering, "c3", attempt=2),
        s.sync(SyncTriggered, "c3", job_id=104, attempt=2, status="running"),
        s.sync(SyncSucceeded, "c3", job_id=104, attempt=2, status="succeeded", rows_synced=7),
        s.sync(SyncSkipped, "c4", reason="inactive"),
        s.finished("failed", counts={"succeeded": 2, "failed": 1, "skipped": 1}),
    ]


def crashed_run(run_id: str = "run-crash", start: datetime = T0) -> list[Event]:
    """Killed mid-run: one final, one in flight, one intent, one untouched, one retry in intent."""
    s = Story(run_id, ["c1", "c2", "c3", "c4", "c5"], start=start)
    return [
        s.started(),
        *s.lifecycle("c1", 201, status="succeeded"),
        s.sync(SyncTriggering, "c2"),
        s.sync(SyncTriggered, "c2", job_id=202, status="pending"),
        s.sync(SyncStatusChanged, "c2", job_id=202, status="running", old_status="pending"),
        s.sync(SyncTriggering, "c3"),
        s.sync(SyncTriggering, "c5"),
        s.sync(SyncTriggered, "c5", job_id=205, status="running"),
        s.sync(SyncRetrying, "c5", job_id=205, status="failed", error="boom"),
        s.sync(SyncTriggering, "c5", attempt=2),
    ]


def journal_all(journal: RunStore, events: Sequence[Event]) -> None:
    for event in events:
        journal(event)


def stored_rows(state_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """The run's event rows as the file holds them, read behind the journal's back."""
    db = sqlite3.connect(state_dir / FILE_NAME)
    try:
        rows = db.execute(
            "SELECT data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
    finally:
        db.close()
    return [json.loads(data) for (data,) in rows]


def insert_rows(state_dir: Path, run_id: str, *rows: tuple[int, str, str]) -> None:
    """Write (seq, kind, data) event rows behind the journal's back, as another version would."""
    db = sqlite3.connect(state_dir / FILE_NAME)
    with db:
        db.executemany(
            "INSERT INTO events (run_id, seq, kind, data) VALUES (?, ?, ?, ?)",
            [(run_id, *row) for row in rows],
        )
    db.close()


def live(events: list[Event]) -> ResultBuilder:
    builder = ResultBuilder()
    for event in events:
        builder(event)
    return builder


@contextlib.contextmanager
def write_lock_held(state_dir: Path) -> Iterator[None]:
    """Another process holds the journal's write lock while the block runs."""
    other = sqlite3.connect(state_dir / FILE_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()
