"""The SQLite journal's write path: each event into the events table and the run's and sync's rows.

Durable events are committed before the call returns; status events (``sync_status_changed``,
``sync_retrying``) are batched: committed with the next durable write, or by a timer after about a
second.

Surviving a power cut or a kernel crash too needs an fsync, which costs far more than the commit.
By default (``fsync="triggers"``) only a commit holding a ``sync_triggering`` is fsynced: that one
record is what stops a resumer from sending a second ``POST /jobs``, and the fsync also makes every
earlier commit durable (WAL frames reach the disk in order). What a power cut can still take away
is the tail after the last trigger (a job id, a final outcome), and the resumer learns those again
from Airbyte: the job list for an intent, the job itself for one in flight.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic_core

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.events import (
    Event,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncEvent,
    SyncRetrying,
    SyncSkipped,
    SyncStatusChanged,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.outcome import final_outcome
from airbyte_fleet.journal.codec import encode_event
from airbyte_fleet.journal.schema import utc_text
from airbyte_fleet.journal.store import JournalError

__all__ = ["Fsync", "Writer"]

log = get_logger("airbyte_fleet.journal")

Fsync = Literal["always", "triggers", "never"]

TRIGGERING = SyncTriggering.kind
STARTED = frozenset({SyncTriggered.kind, SyncAdopted.kind})
BATCHED = frozenset({SyncStatusChanged.kind, SyncRetrying.kind})
# Bounds the memory of a batch: at this size it is committed at once, whatever the timer says.
MAX_BATCH = 500
# While the disk refuses writes, status events wait in memory; past this many the oldest go.
MAX_PENDING = 50_000

_INSERT_EVENT = """
INSERT INTO events (run_id, seq, kind, connection_id, data)
SELECT ?1, COALESCE(MAX(seq), 0) + 1, ?2, ?3, ?4 FROM events WHERE run_id = ?1
"""

_RUN_STARTED = """
INSERT INTO runs (run_id, started_at, job_type, wait, max_concurrency, total, starts, options,
                  selection)
VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET
    started_at = CASE WHEN runs.starts = 0 THEN excluded.started_at ELSE runs.started_at END,
    resumed_at = CASE WHEN runs.starts = 0 THEN runs.resumed_at ELSE excluded.started_at END,
    starts = runs.starts + 1,
    finished_at = NULL,
    outcome = NULL,
    interrupted = 0,
    reported_counts = NULL,
    job_type = excluded.job_type,
    wait = excluded.wait,
    max_concurrency = excluded.max_concurrency,
    options = COALESCE(runs.options, excluded.options),
    selection = COALESCE(runs.selection, excluded.selection)
"""

_PLANNED = """
INSERT INTO syncs (run_id, connection_id, connection_name, workspace_id, position)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (run_id, connection_id) DO UPDATE SET
    connection_name = CASE WHEN excluded.connection_name <> '' THEN excluded.connection_name
                           ELSE syncs.connection_name END,
    workspace_id = CASE WHEN excluded.workspace_id <> '' THEN excluded.workspace_id
                        ELSE syncs.workspace_id END,
    position = COALESCE(syncs.position, excluded.position)
"""

_RUN_TOTAL = """
UPDATE runs SET total = MAX(?2, (SELECT COUNT(*) FROM syncs WHERE run_id = ?1
                                 AND position IS NOT NULL))
WHERE run_id = ?1
"""

_RUN_FINISHED = """
INSERT INTO runs (run_id, started_at, finished_at, outcome, interrupted, reported_counts)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET
    finished_at = excluded.finished_at,
    outcome = excluded.outcome,
    interrupted = excluded.interrupted,
    reported_counts = excluded.reported_counts
"""

_RUN_PLACEHOLDER = """
INSERT OR IGNORE INTO runs (run_id, started_at, job_type) VALUES (?, ?, ?)
"""

# Every sync event upserts its row with the values a brand-new row would get; what an existing row
# keeps depends on the kind of event. SQLite evaluates every SET expression against the old row.
_SYNC_INSERT = """
INSERT INTO syncs (run_id, connection_id, connection_name, workspace_id, attempt, job_id, status,
                   outcome, error, cause, intent_at, triggered_at, finished_at, rows_synced,
                   bytes_synced)
VALUES (:run_id, :connection_id, :connection_name, :workspace_id, :attempt, :job_id, :status,
        :outcome, :error, :cause, :intent_at, :triggered_at, :finished_at, :rows_synced,
        :bytes_synced)
ON CONFLICT (run_id, connection_id) DO UPDATE SET
    connection_name = CASE WHEN excluded.connection_name <> '' THEN excluded.connection_name
                           ELSE syncs.connection_name END,
    workspace_id = CASE WHEN excluded.workspace_id <> '' THEN excluded.workspace_id
                        ELSE syncs.workspace_id END,
    attempt = excluded.attempt,
    rows_synced = COALESCE(excluded.rows_synced, syncs.rows_synced),
    bytes_synced = COALESCE(excluded.bytes_synced, syncs.bytes_synced)
"""

_SYNC_SET = {
    # A new attempt starts: the previous attempt's job, status and outcome no longer describe it.
    # Repeated intents of one attempt (unclear answers, tried again) keep the first time, which
    # bounds the jobs a resumer must consider as possibly ours.
    "triggering": """,
    intent_at = CASE WHEN syncs.intent_at IS NULL OR syncs.job_id IS NOT NULL
                          OR syncs.outcome IS NOT NULL OR syncs.attempt <> excluded.attempt
                     THEN excluded.intent_at ELSE syncs.intent_at END,
    job_id = NULL, status = NULL, outcome = NULL, error = NULL, cause = NULL,
    finished_at = NULL""",
    "started": """,
    job_id = excluded.job_id, status = excluded.status, outcome = NULL, error = NULL,
    cause = NULL, finished_at = NULL,
    triggered_at = COALESCE(syncs.triggered_at, excluded.triggered_at)""",
    "progress": """,
    job_id = COALESCE(excluded.job_id, syncs.job_id),
    status = COALESCE(excluded.status, syncs.status),
    error = COALESCE(excluded.error, syncs.error)""",
    "final": """,
    job_id = COALESCE(excluded.job_id, syncs.job_id),
    status = COALESCE(excluded.status, syncs.status),
    outcome = excluded.outcome, error = excluded.error, cause = excluded.cause,
    finished_at = excluded.finished_at""",
    "other": "",
}
_SYNC_SQL = {group: _SYNC_INSERT + extra for group, extra in _SYNC_SET.items()}


def _json(value: Any) -> str | None:
    if value is None:
        return None
    # fallback=str: a value JSON cannot hold is kept as its text rather than failing the write.
    return pydantic_core.to_json(value, fallback=str).decode()


class Writer:
    """Owns the journal's connection: every write, the batch and its timer, and closing.

    Calls are serialised by *lock*, which readers of the same connection share.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        lock: threading.RLock,
        *,
        path: Path,
        fsync: Fsync,
        batch_interval: float,
    ) -> None:
        self.conn = conn
        self.lock = lock
        self._path = path
        self._fsync = fsync
        self._batch_interval = batch_interval
        # Batched events with their JSON, encoded on arrival so a bad one fails its own call and
        # never blocks the batch it would have joined.
        self._pending: list[tuple[Event, str]] = []
        self._pending_since = 0.0
        self._timer: threading.Timer | None = None
        self._known_runs: set[str] = set()
        self._closed = False
        self._synchronous = ""
        self._set_synchronous("FULL" if fsync == "always" else "NORMAL")

    # ----------------------------------------------------------------- lifecycle

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise JournalError("the journal is closed")

    def close(self) -> None:
        """Commit what is batched and let go. A disk that refuses the batch loses it (status
        events only, which a resume asks Airbyte for again) with a warning: closing never
        fails."""
        with self.lock:
            if self._closed:
                return
            self._cancel_timer()
            try:
                if self._pending:
                    self._commit([])
            except JournalError as exc:
                log.warning("journal_batch_lost", events=len(self._pending), error=str(exc))
            finally:
                self._closed = True
                self.conn.close()

    def flush(self) -> None:
        """Commit batched events now (a reader on this connection then sees them too)."""
        with self.lock:
            self.check_open()
            if self._pending:
                self._commit([])

    # ----------------------------------------------------------------- writing

    def write(self, event: Event) -> None:
        item = (event, encode_event(event))
        with self.lock:
            self.check_open()
            if event.kind in BATCHED:
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending.append(item)
                due = time.monotonic() - self._pending_since >= self._batch_interval
                if due or len(self._pending) >= MAX_BATCH:
                    self._commit([])
                else:
                    self._arm_timer()
                return
            self._commit([item])

    def append(self, events: Iterable[Event]) -> None:
        items = [(event, encode_event(event)) for event in events]
        with self.lock:
            self.check_open()
            if items:
                self._commit(items)

    def _set_synchronous(self, mode: str) -> None:
        if mode != self._synchronous:
            self.conn.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    def _commit(self, items: Sequence[tuple[Event, str]]) -> None:
        """Write the batch and *items* in one transaction; the batch is kept if it fails."""
        batch = [*self._pending, *items]
        new_runs: set[str] = set()
        try:
            if self._fsync == "triggers":
                trigger = any(event.kind == TRIGGERING for event, _ in items)
                self._set_synchronous("FULL" if trigger else "NORMAL")
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for event, text in batch:
                    self._apply(event, text, new_runs)
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if len(self._pending) > MAX_PENDING:
                log.warning("journal_dropped_status_events", count=len(self._pending) - MAX_PENDING)
                del self._pending[: len(self._pending) - MAX_PENDING]
            raise JournalError(f"cannot write to the journal at {self._path}: {exc}") from exc
        self._pending.clear()
        # The timer is left to fire into an empty batch: cancelling it on every durable write would
        # start one thread per status event.
        self._known_runs |= new_runs

    def _arm_timer(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self._batch_interval, self._on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        with self.lock:
            self._timer = None
            if self._closed or not self._pending:
                return
            try:
                self._commit([])
            except JournalError as exc:
                # Nobody to raise to on this thread; the events stay batched for the next write.
                log.warning("journal_flush_failed", error=str(exc))

    # ----------------------------------------------------------------- one event

    def _apply(self, event: Event, text: str, new_runs: set[str]) -> None:
        sync = event if isinstance(event, SyncEvent) else None
        outcome = final_outcome(sync) if sync is not None else None
        if self._is_replay(event, sync, outcome):
            return
        # seq is computed inside the write transaction, so two processes never share one.
        self.conn.execute(
            _INSERT_EVENT, (event.run_id, event.kind, sync.connection_id if sync else None, text)
        )
        if isinstance(event, RunStarted):
            self._run_started(event)
        elif isinstance(event, RunFinished):
            self.conn.execute(
                _RUN_FINISHED,
                (
                    event.run_id,
                    utc_text(event.at),
                    utc_text(event.at),
                    event.outcome,
                    int(event.interrupted),
                    _json(event.counts),
                ),
            )
        elif sync is not None:
            if event.run_id not in self._known_runs and event.run_id not in new_runs:
                # Keeps a sync that arrives without its run_started (a late subscriber) listable.
                self.conn.execute(
                    _RUN_PLACEHOLDER, (event.run_id, utc_text(event.at), sync.job_type)
                )
                new_runs.add(event.run_id)
            self._sync(sync, outcome)
        new_runs.add(event.run_id)

    def _is_replay(self, event: Event, sync: SyncEvent | None, outcome: str | None) -> bool:
        """An event that states again what the journal already holds: a final outcome of the same
        attempt and job (a resumer reporting what it found), or a start or finish already written.
        Recording it twice would double it in the replayed event stream.

        Only these kinds are checked: they are the ones a resumer or a retried write re-sends, and
        a unique index over every event would cost a page write per commit.
        """
        if sync is not None:
            if outcome is None:
                return False
            row = self.conn.execute(
                "SELECT outcome, attempt, job_id FROM syncs WHERE run_id = ? AND connection_id = ?",
                (sync.run_id, sync.connection_id),
            ).fetchone()
            if row is None or row[0] is None:
                return False
            job_id = sync.job_id if sync.job_id is not None else row[2]
            return bool(row[0] == outcome and row[1] == sync.attempt and row[2] == job_id)
        if isinstance(event, RunStarted | RunFinished):
            row = self.conn.execute(
                "SELECT starts, started_at, resumed_at, finished_at FROM runs WHERE run_id = ?",
                (event.run_id,),
            ).fetchone()
            if row is None:
                return False
            at = utc_text(event.at)
            if isinstance(event, RunStarted):
                return bool(row[0] > 0 and at in (row[1], row[2]))
            return bool(row[3] == at)
        return False

    def _run_started(self, event: RunStarted) -> None:
        # Empty means "not told": it must not hide the options an earlier start recorded.
        options = event.options or None
        self.conn.execute(
            _RUN_STARTED,
            (
                event.run_id,
                utc_text(event.at),
                event.job_type,
                int(event.wait),
                event.max_concurrency,
                event.total,
                _json(options),
                _json(event.selection),
            ),
        )
        # A resumed run keeps its plan order; connections new to it go after the known ones.
        base = self.conn.execute(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM syncs WHERE run_id = ?", (event.run_id,)
        ).fetchone()[0]
        self.conn.executemany(
            _PLANNED,
            (
                (event.run_id, p.connection_id, p.connection_name, p.workspace_id, base + i)
                for i, p in enumerate(event.planned)
            ),
        )
        self.conn.execute(_RUN_TOTAL, (event.run_id, event.total))

    def _sync(self, event: SyncEvent, outcome: str | None) -> None:
        kind = event.kind
        at = utc_text(event.at)
        error = event.error
        cause = None
        if outcome is not None:
            group = "final"
            if isinstance(event, SyncSkipped):
                cause = event.cause
                if error is None and event.reason:
                    error = event.reason
        elif kind == TRIGGERING:
            group = "triggering"
        elif kind in STARTED:
            group = "started"
        elif kind in BATCHED:
            group = "progress"
        else:
            group = "other"
        self.conn.execute(
            _SYNC_SQL[group],
            {
                "run_id": event.run_id,
                "connection_id": event.connection_id,
                "connection_name": event.connection_name,
                "workspace_id": event.workspace_id,
                "attempt": event.attempt,
                "job_id": event.job_id,
                "status": event.status,
                "outcome": outcome,
                "error": error if group in ("final", "progress") else None,
                "cause": cause,
                "intent_at": at if group == "triggering" else None,
                "triggered_at": at if group == "started" else None,
                "finished_at": at if group == "final" else None,
                "rows_synced": event.rows_synced,
                "bytes_synced": event.bytes_synced,
            },
        )
