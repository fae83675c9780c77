"""Reading the store: run listings, one run with its syncs, and a run's events.

Each function takes an open connection and its database's dialect; the store holds its lock around
the call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from airbyte_fleet.engine.events import Event, PlannedSync
from airbyte_fleet.engine.outcome import OUTCOMES, unsettled_outcome
from airbyte_fleet.journal.codec import EventDecodeError, decode_event
from airbyte_fleet.journal.dialect import Conn, Dialect
from airbyte_fleet.journal.schema import parse_ts
from airbyte_fleet.journal.store import RunRecord, SyncRecord

__all__ = ["events", "last_run_id", "run", "runs", "unfinished_runs"]

# Called with (seq, kind, why) for each stored event a reader skips.
OnSkip = Callable[[int, str, EventDecodeError], None]

_RUN_COLUMNS = (
    "run_id, started_at, finished_at, outcome, job_type, wait, max_concurrency, total, "
    "interrupted, resumed_at, options, selection, planning_complete"
)

_SYNC_COLUMNS = (
    "connection_id, connection_name, workspace_id, attempt, job_id, status, outcome, error, "
    "cause, intent_at, triggered_at, finished_at, rows_synced, bytes_synced"
)


def _shown(outcome: str | None, *, has_job: bool, finished: bool, wait: bool) -> str:
    """The outcome a run's counts show for a sync: its own, ``pending`` while the run goes on,
    else what the engine's outcome rule makes of a sync left without one."""
    if outcome is not None:
        return outcome
    if not finished:
        return "pending"
    return unsettled_outcome(has_job=has_job, wait=wait)


def _zeroed() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


def _record(row: tuple[Any, ...], *, total: int, **more: Any) -> RunRecord:
    """The record of a ``_RUN_COLUMNS`` row; *total* as the caller counted it from the syncs."""
    (
        run_id,
        started,
        finished,
        outcome,
        job_type,
        wait,
        max_concurrency,
        _,
        interrupted,
        resumed,
        options,
        selection,
        planning_complete,
    ) = row
    try:
        return RunRecord(
            run_id=run_id,
            started_at=_required(parse_ts(started)),
            finished_at=parse_ts(finished),
            outcome=outcome if finished is not None else "running",
            job_type=job_type,
            wait=bool(wait),
            max_concurrency=max_concurrency,
            total=total,
            interrupted=bool(interrupted),
            resumed_at=parse_ts(resumed),
            options=_object(options) or {},
            selection=_object(selection),
            planning_complete=bool(planning_complete),
            **more,
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"run {run_id} holds a value this version cannot read: {exc}") from None


def _required(value: Any) -> Any:
    if value is None:
        raise ValueError("a run without a start time")
    return value


def _object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, found {type(value).__name__}")
    return value


def runs(conn: Conn, d: Dialect, *, limit: int, offset: int) -> list[RunRecord]:
    """Runs newest first (by first start), without their syncs; ``counts`` come from the syncs."""
    # One read transaction, so the runs and their counts come from the same moment.
    conn.execute(d.begin_read)
    try:
        rows = conn.execute(
            d.sql(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at DESC, rowid DESC "
                "LIMIT ? OFFSET ?"
            ),
            (limit, offset),
        ).fetchall()
        counted = _counts(conn, d, [(r[0], r[2] is not None, bool(r[5])) for r in rows])
    finally:
        conn.execute("COMMIT")
    out: list[RunRecord] = []
    for row in rows:
        counts, found = counted[row[0]]
        out.append(_record(row, total=found or row[7], counts=counts))
    return out


def _counts(
    conn: Conn, d: Dialect, runs: Iterable[tuple[str, bool, bool]]
) -> dict[str, tuple[dict[str, int], int]]:
    wanted = {run_id: (finished, wait) for run_id, finished, wait in runs}
    out = {run_id: (_zeroed(), 0) for run_id in wanted}
    if not wanted:
        return out
    marks = ",".join("?" * len(wanted))
    rows = conn.execute(
        # Not cached: the number of marks changes with the page.
        d.translate(
            "SELECT run_id, outcome, job_id IS NOT NULL, COUNT(*) FROM syncs "
            f"WHERE run_id IN ({marks}) GROUP BY 1, 2, 3"
        ),
        list(wanted),
    ).fetchall()
    for run_id, outcome, has_job, n in rows:
        counts, total = out[run_id]
        finished, wait = wanted[run_id]
        key = _shown(outcome, has_job=bool(has_job), finished=finished, wait=wait)
        counts[key] = counts.get(key, 0) + n
        out[run_id] = (counts, total + n)
    return out


def last_run_id(conn: Conn, d: Dialect) -> str | None:
    query = "SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1"
    row = conn.execute(d.sql(query)).fetchone()
    return None if row is None else str(row[0])


def unfinished_runs(conn: Conn, d: Dialect) -> list[str]:
    query = "SELECT run_id FROM runs WHERE finished_at IS NULL ORDER BY started_at, rowid"
    return [str(r[0]) for r in conn.execute(d.sql(query)).fetchall()]


def run(conn: Conn, d: Dialect, run_id: str) -> RunRecord | None:
    # One read transaction, so the run and its syncs come from the same moment.
    conn.execute(d.begin_read)
    try:
        row = conn.execute(
            d.sql(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?"), (run_id,)
        ).fetchone()
        syncs = conn.execute(
            d.sql(
                f"SELECT position, {_SYNC_COLUMNS} FROM syncs WHERE run_id = ? "
                "ORDER BY position IS NULL, position, connection_id"
            ),
            (run_id,),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    if row is None:
        return None
    finished, wait = row[2] is not None, bool(row[5])
    records: dict[str, SyncRecord] = {}
    planned: list[PlannedSync] = []
    counts = _zeroed()
    for position, *values in syncs:
        try:
            record = _sync_record(values)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"run {run_id}, connection {values[0]}, holds a value this version cannot read: "
                f"{exc}"
            ) from None
        records[record.connection_id] = record
        if position is not None:
            planned.append(
                PlannedSync(record.connection_id, record.connection_name, record.workspace_id)
            )
        key = _shown(
            record.outcome, has_job=record.job_id is not None, finished=finished, wait=wait
        )
        counts[key] = counts.get(key, 0) + 1
    total = max(row[7], len(records))
    return _record(row, total=total, counts=counts, planned=planned, syncs=records)


def _sync_record(values: list[Any]) -> SyncRecord:
    return SyncRecord(
        connection_id=values[0],
        connection_name=values[1],
        workspace_id=values[2],
        attempt=values[3],
        job_id=values[4],
        status=values[5],
        outcome=values[6],
        error=values[7],
        cause=values[8],
        intent_at=parse_ts(values[9]),
        triggered_at=parse_ts(values[10]),
        finished_at=parse_ts(values[11]),
        rows_synced=values[12],
        bytes_synced=values[13],
    )


def events(
    conn: Conn,
    d: Dialect,
    run_id: str,
    *,
    after: int,
    limit: int | None,
    on_skip: OnSkip,
) -> list[tuple[int, Event]]:
    out: list[tuple[int, Event]] = []
    query = d.sql(
        "SELECT seq, kind, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?"
    )
    while limit is None or len(out) < limit:
        want = -1 if limit is None else limit - len(out)
        rows = conn.execute(query, (run_id, after, d.no_limit if want < 0 else want)).fetchall()
        for seq, kind, data in rows:
            after = seq
            try:
                out.append((int(seq), decode_event(data, kind=kind)))
            except EventDecodeError as exc:
                on_skip(int(seq), str(kind), exc)
        # Read again only to make up for skipped rows: fewer than asked means the end for now.
        if want < 0 or len(rows) < want:
            break
    return out
