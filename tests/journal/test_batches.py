"""A transaction of many events, in PostgreSQL sent as arrays (one statement a kind of change):
a sync that comes several times in one transaction, a sync with no row yet, a plan naming a
connection twice, each ending as SQLite's does, which applies its rows one by one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    SyncFailed,
    SyncRetrying,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTriggered,
    SyncTriggering,
)
from journal.backends import Backend
from journal.stories import Story

_SYNC_ROWS = """
SELECT run_id, connection_id, position, connection_name, workspace_id, attempt, job_id, status,
       outcome, error, cause, rows_synced, bytes_synced
FROM syncs ORDER BY run_id, connection_id
"""
_EVENT_ROWS = "SELECT run_id, seq, kind, connection_id, data FROM events ORDER BY run_id, seq"


def _repeats() -> tuple[list[Event], list[Event], list[Event]]:
    """A start; then intents, one sync's twice (an unclear answer tried again), in one append;
    then one append of every kind of change with syncs coming back within each kind, and a sync
    the plan does not know (its row is made by the same transaction)."""
    s = Story("run-a", ["c1", "c2", "c3"])
    intents: list[Event] = [
        s.sync(SyncTriggering, "c1"),
        s.sync(SyncTriggering, "c2"),
        s.sync(SyncTriggering, "c1"),
        s.sync(SyncTriggering, "c3"),
    ]
    changes: list[Event] = [
        s.sync(SyncTriggered, "c1", job_id=11, status="pending"),
        s.sync(SyncTriggered, "c2", job_id=12, status="pending"),
        # Adopted again after an unclear answer: the first time it started stays.
        s.sync(SyncTriggered, "c1", job_id=11, status="running"),
        s.sync(SyncStatusChanged, "c1", job_id=11, status="running", old_status="pending"),
        s.sync(SyncStatusChanged, "c9", job_id=19, status="pending", old_status="pending"),
        s.sync(SyncRetrying, "c1", job_id=11, status="failed", error="boom", wait_s=0.1),
        s.sync(SyncStatusChanged, "c9", job_id=19, status="running", old_status="pending"),
        s.sync(SyncStatusChanged, "c2", job_id=12, status="running", old_status="pending"),
        s.sync(SyncStatusChanged, "c1", job_id=11, status="failed", old_status="running"),
        s.sync(SyncSucceeded, "c2", job_id=12, status="succeeded", rows_synced=5),
        s.sync(SyncTriggering, "c1", attempt=2),
        s.sync(SyncTriggering, "c1", attempt=2),
        s.sync(SyncTriggered, "c1", job_id=13, attempt=2, status="running"),
        s.sync(SyncTriggered, "c3", job_id=14, status="running"),
        s.sync(SyncFailed, "c3", job_id=14, status="failed", error="first"),
        s.sync(SyncSucceeded, "c1", job_id=13, attempt=2, status="succeeded", bytes_synced=9),
    ]
    return [s.started()], intents, changes


def _written(backend: Backend, *appends: list[Event]) -> dict[str, Any]:
    """What *backend*'s store holds after each of *appends* (one transaction each)."""
    with backend.open(batch_interval=3600) as store:
        for events in appends:
            store.append(events)
        runs = {run.run_id: store.run(run.run_id) for run in store.runs(limit=10)}
        events = {run_id: store.events(run_id) for run_id in runs}
    return {
        "runs": runs,
        "events": events,
        "syncs": [tuple(row) for row in backend.execute(_SYNC_ROWS)],
        "event_rows": [tuple(row) for row in backend.execute(_EVENT_ROWS)],
    }


def _both(tmp_path: Path, pg_url: str, *appends: list[Event]) -> dict[str, Any]:
    sqlite = _written(Backend("sqlite", tmp_path / "sqlite"), *appends)
    postgres = _written(Backend("postgres", tmp_path / "pg", pg_url), *appends)
    assert postgres == sqlite
    return postgres


def test_syncs_that_come_back_in_one_transaction_end_as_sqlite_applies_them_in_order(
    tmp_path: Path, pg_url: str
) -> None:
    start, intents, changes = _repeats()
    found = _both(tmp_path, pg_url, start, intents, changes)

    syncs = found["runs"]["run-a"].syncs
    at = {id(event): event.at for event in intents + changes}
    # Order within the transaction decided: a repeated intent and a repeated start keep the
    # first time, the later error is kept over none, attempt 2's intent replaced attempt 1's.
    assert syncs["c3"].intent_at == intents[3].at
    assert syncs["c1"].triggered_at == at[id(changes[0])]
    assert syncs["c1"].intent_at == at[id(changes[10])]
    assert (syncs["c1"].attempt, syncs["c1"].job_id, syncs["c1"].outcome) == (2, 13, "succeeded")
    assert (syncs["c3"].outcome, syncs["c3"].error) == ("failed", "first")
    unplanned = [row for row in found["syncs"] if row[1] == "c9"]
    assert [row[6:8] for row in unplanned] == [(19, "running")]
    assert [seq for seq, _ in found["events"]["run-a"]] == list(range(1, 22))


def test_syncs_started_many_times_in_one_transaction_keep_their_first_time_and_last_job(
    tmp_path: Path, pg_url: str
) -> None:
    s = Story("run-b", ["c1", "c2"])
    # One transaction. No single one of a sync's events leaves its row right: the time must be the
    # first's, the job the last's.
    starts: list[Event] = [
        s.sync(SyncTriggered, f"c{1 + n % 2}", job_id=100 + n, status="running") for n in range(101)
    ]
    found = _both(tmp_path, pg_url, [s.started()], starts)

    syncs = found["runs"]["run-b"].syncs
    assert (syncs["c1"].job_id, syncs["c1"].triggered_at) == (200, starts[0].at)
    assert (syncs["c2"].job_id, syncs["c2"].triggered_at) == (199, starts[1].at)


def test_a_plan_naming_a_connection_twice_is_recorded_as_sqlite_records_it(
    tmp_path: Path, pg_url: str
) -> None:
    s = Story("run-c", ["c1", "c2"])
    planned = (
        PlannedSync("c1", "first name", "ws-1"),
        PlannedSync("c2", "name c2", "ws-1"),
        PlannedSync("c1", "later name", ""),
    )
    found = _both(tmp_path, pg_url, [s.started(planned=planned, total=3)])

    rows = {row[1]: row for row in found["syncs"]}
    assert (rows["c1"][2], rows["c1"][3], rows["c1"][4]) == (0, "later name", "ws-1")
    assert rows["c2"][2] == 1
