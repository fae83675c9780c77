"""The SQLite journal's write path: each event into the events table and the run's and sync's rows,
many events to a transaction (group commit).

When an event is durable: ``run_started``, every ``sync_triggering`` (the intent: nothing is
triggered that is not journaled) and ``run_finished`` are committed before the call returns, and
``append`` commits whatever it is given. Every other sync event (``sync_triggered``,
``sync_adopted``, status changes, retries, final outcomes) waits in memory and is committed with
the next of those, by a timer about a second after it came, when :data:`MAX_BATCH` are waiting,
and always by ``flush()`` and ``close()``. A commit holds every event written before it, in order.
What a killed process loses is a tail of those waiting events, and a resumer learns each again
from Airbyte: an intent without its ``sync_triggered`` is looked for in the connection's jobs, a
job in flight is read.

Surviving a power cut or a kernel crash too needs an fsync, which costs far more than the commit.
By default (``fsync="triggers"``) only a commit holding a ``sync_triggering`` is fsynced: that one
record is what stops a resumer from sending a second ``POST /jobs``, and the fsync also makes every
earlier commit durable (WAL frames reach the disk in order). What a power cut can still take away
is the tail after the last trigger (a job id, a final outcome), learnt again the same way.

Each run's sequence numbers are counted in memory, read from the file once per run and process;
another process writing to the same run (which a run's single owner never does) only costs a
retried transaction. A final outcome, a start or a finish that restates what the file holds (a
resumer reporting what it found) is not recorded twice; a run this instance started afresh and has
not finished is only ever told news, so its final events skip that check.
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

__all__ = ["MAX_BATCH", "MAX_PENDING", "Fsync", "Writer"]

log = get_logger("airbyte_fleet.journal")

Fsync = Literal["always", "triggers", "never"]

TRIGGERING = SyncTriggering.kind
# How each kind of sync event changes its sync's row (see _SYNC_SET); a kind not named here is a
# final one (engine/outcome.py's rule says which) or "other".
_GROUPS = {
    TRIGGERING: "triggering",
    SyncTriggered.kind: "started",
    SyncAdopted.kind: "started",
    SyncStatusChanged.kind: "progress",
    SyncRetrying.kind: "progress",
}
# The groups that date something in the row (intent_at, triggered_at, finished_at).
_TIMED = frozenset({"triggering", "started", "final"})
# Bounds the memory of a batch: at this size it is committed at once, whatever the timer says.
MAX_BATCH = 500
# While the disk refuses writes, batched events wait in memory; past this many the oldest go (a
# resume asks Airbyte for what they said).
MAX_PENDING = 50_000

_INSERT_EVENT = "INSERT INTO events (run_id, seq, kind, connection_id, data) VALUES (?, ?, ?, ?, ?)"

_LAST_SEQ = "SELECT MAX(seq) FROM events WHERE run_id = ?"

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

# What each sync event does to its row: the values a brand-new row would get (``new.*``, in the
# order _Transaction._sync binds them), kept or replaced depending on the kind of event (every SET
# expression reads the old row, ``syncs.*``). Written as an UPDATE, half the cost of an upsert:
# every planned sync has its row from run_started on; the upsert is for a row that is missing.
_SYNC_COLUMNS = (
    "run_id",
    "connection_id",
    "connection_name",
    "workspace_id",
    "attempt",
    "job_id",
    "status",
    "outcome",
    "error",
    "cause",
    "intent_at",
    "triggered_at",
    "finished_at",
    "rows_synced",
    "bytes_synced",
)
_SYNC_COMMON = """
    connection_name = CASE WHEN new.connection_name <> '' THEN new.connection_name
                           ELSE syncs.connection_name END,
    workspace_id = CASE WHEN new.workspace_id <> '' THEN new.workspace_id
                        ELSE syncs.workspace_id END,
    attempt = new.attempt,
    rows_synced = COALESCE(new.rows_synced, syncs.rows_synced),
    bytes_synced = COALESCE(new.bytes_synced, syncs.bytes_synced)"""
_SYNC_SET = {
    # A new attempt starts: the previous attempt's job, status and outcome no longer describe it.
    # Repeated intents of one attempt (unclear answers, tried again) keep the first time, which
    # bounds the jobs a resumer must consider as possibly ours.
    "triggering": """,
    intent_at = CASE WHEN syncs.intent_at IS NULL OR syncs.job_id IS NOT NULL
                          OR syncs.outcome IS NOT NULL OR syncs.attempt <> new.attempt
                     THEN new.intent_at ELSE syncs.intent_at END,
    job_id = NULL, status = NULL, outcome = NULL, error = NULL, cause = NULL,
    finished_at = NULL""",
    "started": """,
    job_id = new.job_id, status = new.status, outcome = NULL, error = NULL,
    cause = NULL, finished_at = NULL,
    triggered_at = COALESCE(syncs.triggered_at, new.triggered_at)""",
    "progress": """,
    job_id = COALESCE(new.job_id, syncs.job_id),
    status = COALESCE(new.status, syncs.status),
    error = COALESCE(new.error, syncs.error)""",
    "final": """,
    job_id = COALESCE(new.job_id, syncs.job_id),
    status = COALESCE(new.status, syncs.status),
    outcome = new.outcome, error = new.error, cause = new.cause,
    finished_at = new.finished_at""",
    "other": "",
}


def _sync_statements(extra: str) -> tuple[str, str]:
    """The UPDATE and the upsert that apply *extra* (and the common part) to a sync's row."""
    sets = _SYNC_COMMON + extra
    update = sets
    for number, column in enumerate(_SYNC_COLUMNS, start=1):
        update = update.replace(f"new.{column}", f"?{number}")
    upsert = sets.replace("new.", "excluded.")
    columns = ", ".join(_SYNC_COLUMNS)
    marks = ", ".join("?" * len(_SYNC_COLUMNS))
    return (
        f"UPDATE syncs SET{update}\nWHERE run_id = ?1 AND connection_id = ?2",
        f"INSERT INTO syncs ({columns})\nVALUES ({marks})\n"
        f"ON CONFLICT (run_id, connection_id) DO UPDATE SET{upsert}",
    )


_SYNC_SQL = {group: _sync_statements(extra) for group, extra in _SYNC_SET.items()}


def _json(value: Any) -> str | None:
    if value is None:
        return None
    # fallback=str: a value JSON cannot hold is kept as its text rather than failing the write.
    return pydantic_core.to_json(value, fallback=str).decode()


def _waits(event: Event) -> bool:
    """Whether *event* may wait for a later commit (see the module's doc)."""
    return isinstance(event, SyncEvent) and event.kind != TRIGGERING


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
        self._timer_error: JournalError | None = None
        # Per run: the last seq written, whether it has a row, whether this instance started it
        # afresh (and has not finished it). A finished run is forgotten.
        self._seq: dict[str, int] = {}
        self._known_runs: set[str] = set()
        self._fresh: set[str] = set()
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
        """Commit what is batched and let go. A disk that refuses the batch loses it (events a
        resume learns again from Airbyte) with a warning: closing never fails."""
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

    def check(self) -> None:
        """Raise, without waiting for the disk, what stopped the timer committing the events
        that wait (a lock held past the busy timeout, a full disk); nothing if they are fine."""
        failed = self._timer_error
        if failed is not None and self._pending:
            raise failed

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
            if not _waits(event):
                self._commit([item])
                return
            now = time.monotonic()
            if not self._pending:
                self._pending_since = now
            self._pending.append(item)
            # Also after the timer failed to commit: the next event tries again, and the caller
            # hears of a disk that still refuses.
            if len(self._pending) >= MAX_BATCH or now - self._pending_since >= self._batch_interval:
                self._commit([])
            else:
                self._arm_timer()

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
        batch = [*self._pending, *items] if self._pending else items
        try:
            if self._fsync == "triggers":
                trigger = any(event.kind == TRIGGERING for event, _ in items)
                self._set_synchronous("FULL" if trigger else "NORMAL")
            try:
                done = self._transaction(batch)
            except sqlite3.IntegrityError:
                # Another process wrote to one of these runs since this one last did, so the
                # seqs counted here are taken: count again from the file.
                self._seq.clear()
                done = self._transaction(batch)
        except sqlite3.Error as exc:
            if len(self._pending) > MAX_PENDING:
                log.warning("journal_dropped_events", count=len(self._pending) - MAX_PENDING)
                del self._pending[: len(self._pending) - MAX_PENDING]
            raise JournalError(f"cannot write to the journal at {self._path}: {exc}") from exc
        self._pending.clear()
        self._timer_error = None
        # The timer is left to fire into an empty batch: cancelling it on every durable write would
        # start one thread per batched event.
        done.settle(self)

    def _transaction(self, batch: Sequence[tuple[Event, str]]) -> _Transaction:
        tx = _Transaction(self)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for event, text in batch:
                tx.apply(event, text)
            tx.finish()
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return tx

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
                # Nobody to raise to on this thread; the events stay batched for the next write,
                # and check() tells the run (which may have nothing more to write for a while).
                self._timer_error = exc
                log.warning("journal_flush_failed", error=str(exc))


class _Transaction:
    """One transaction's writes: sync rows updated in order (consecutive updates of one kind in one
    ``executemany``), event rows inserted together at the end. What it learns about runs (seqs,
    rows, fresh starts) reaches the writer only once it is committed (:meth:`settle`)."""

    __slots__ = ("_fresh", "_group", "_known", "_params", "_rows", "_seq", "conn", "writer")

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.conn = writer.conn
        self._rows: list[tuple[str, int, str, str | None, str]] = []
        self._seq: dict[str, int] = {}
        self._known: set[str] = set()
        # run id -> whether it is fresh now (see Writer._fresh); None: it was finished.
        self._fresh: dict[str, bool | None] = {}
        self._group = ""
        self._params: list[tuple[Any, ...]] = []

    def settle(self, writer: Writer) -> None:
        writer._seq.update(self._seq)
        writer._known_runs |= self._known
        for run_id, fresh in self._fresh.items():
            if fresh:
                writer._fresh.add(run_id)
            else:
                writer._fresh.discard(run_id)
            if fresh is None:
                writer._seq.pop(run_id, None)
                writer._known_runs.discard(run_id)

    def apply(self, event: Event, text: str) -> None:
        run_id = event.run_id
        connection_id = None
        if isinstance(event, SyncEvent):
            connection_id = event.connection_id
            group = _GROUPS.get(event.kind)
            outcome = None if group is not None else final_outcome(event)
            if (
                outcome is not None
                and not self._is_fresh(run_id)
                and self._restates(event, outcome)
            ):
                return
            if run_id not in self._known and run_id not in self.writer._known_runs:
                # Keeps a sync that arrives without its run_started (a late subscriber) listable.
                self.conn.execute(_RUN_PLACEHOLDER, (run_id, utc_text(event.at), event.job_type))
            self._sync(event, group, outcome)
        elif isinstance(event, RunStarted):
            self._flush()
            if not self._run_started(event):
                return
        elif isinstance(event, RunFinished):
            self._flush()
            if not self._run_finished(event):
                return
        self._known.add(run_id)
        self._rows.append((run_id, self._next_seq(run_id), event.kind, connection_id, text))

    def finish(self) -> None:
        self._flush()
        if self._rows:
            self.conn.executemany(_INSERT_EVENT, self._rows)

    def _is_fresh(self, run_id: str) -> bool:
        if run_id in self._fresh:
            return bool(self._fresh[run_id])
        return run_id in self.writer._fresh

    def _next_seq(self, run_id: str) -> int:
        last = self._seq.get(run_id)
        if last is None:
            last = self.writer._seq.get(run_id)
        if last is None:
            last = self.conn.execute(_LAST_SEQ, (run_id,)).fetchone()[0] or 0
        last += 1
        self._seq[run_id] = last
        return last

    def _add(self, group: str, params: tuple[Any, ...]) -> None:
        if group != self._group:
            self._flush()
            self._group = group
        self._params.append(params)

    def _flush(self) -> None:
        if not self._params:
            return
        update, upsert = _SYNC_SQL[self._group]
        if self.conn.executemany(update, self._params).rowcount < len(self._params):
            # A row is missing (a sync without its run_started). Each statement sets a column to
            # a value or keeps the old one, so applying the same events again, as upserts, leaves
            # the rows that were there as they are and creates the missing ones.
            self.conn.executemany(upsert, self._params)
        self._params = []

    # ----------------------------------------------------------------- one event

    def _restates(self, sync: SyncEvent, outcome: str) -> bool:
        """A final outcome of the same attempt and job as the one stored (a resumer reporting what
        it found): recording it twice would double it in the replayed event stream.

        Only final events are checked: they are the ones a resumer re-sends, and a unique index
        over every event would cost a page write per commit."""
        self._flush()
        row = self.conn.execute(
            "SELECT outcome, attempt, job_id FROM syncs WHERE run_id = ? AND connection_id = ?",
            (sync.run_id, sync.connection_id),
        ).fetchone()
        if row is None or row[0] is None:
            return False
        job_id = sync.job_id if sync.job_id is not None else row[2]
        return bool(row[0] == outcome and row[1] == sync.attempt and row[2] == job_id)

    def _run_row(self, run_id: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(
            "SELECT starts, started_at, resumed_at, finished_at FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        return row

    def _run_started(self, event: RunStarted) -> bool:
        """Record a start; False when it is one already recorded."""
        row = self._run_row(event.run_id)
        if row is not None and row[0] > 0 and utc_text(event.at) in (row[1], row[2]):
            return False
        self._fresh[event.run_id] = row is None
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
        return True

    def _run_finished(self, event: RunFinished) -> bool:
        """Record a finish; False when it is the one already recorded."""
        at = utc_text(event.at)
        row = self._run_row(event.run_id)
        if row is not None and row[3] == at:
            return False
        self._fresh[event.run_id] = None
        self.conn.execute(
            _RUN_FINISHED,
            (event.run_id, at, at, event.outcome, int(event.interrupted), _json(event.counts)),
        )
        return True

    def _sync(self, event: SyncEvent, group: str | None, outcome: str | None) -> None:
        error = event.error
        cause = None
        if outcome is not None:
            group = "final"
            if isinstance(event, SyncSkipped):
                cause = event.cause
                if error is None and event.reason:
                    error = event.reason
        elif group is None:
            group = "other"
        at = utc_text(event.at) if group in _TIMED else None
        self._add(
            group,
            (
                event.run_id,
                event.connection_id,
                event.connection_name,
                event.workspace_id,
                event.attempt,
                event.job_id,
                event.status,
                outcome,
                error if group in ("final", "progress") else None,
                cause,
                at if group == "triggering" else None,
                at if group == "started" else None,
                at if group == "final" else None,
                event.rows_synced,
                event.bytes_synced,
            ),
        )
