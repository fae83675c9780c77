"""The store's write path: each event into the events table and the run's and sync's rows, many
events to a transaction (group commit). One code for both databases: what differs is the
:class:`Link` (the connection and how a transaction begins) and its ``dialect.py``.

When an event is durable: ``run_started``, ``syncs_planned`` (a later part of the plan: its syncs'
rows come before any of their intents), every ``sync_triggering`` (the intent: nothing is
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
(PostgreSQL: the other commits are made with ``synchronous_commit`` off, which a crash of the
server, never of this process, can take back the same way.)

A fenced run (:meth:`Writer.fence`: its holder's lease in ``run_leases``) is only written while
the lease is this process's: every transaction holding one of its events first reads the lease
row, and writes nothing when the lease has passed to another process or expired. The run's
waiting events are then dropped (a process that lost its run must not write into it), and each
later event of the run raises :class:`~airbyte_fleet.journal.LeaseLostError`; other runs' events
are written on.

Each run's sequence numbers are counted in memory, read from the file once per run and process;
another process writing to the same run (which a run's single owner never does) only costs a
retried transaction. A final outcome, a start or a finish that restates what the file holds (a
resumer reporting what it found) is not recorded twice; a run this instance started afresh and has
not finished is only ever told news, so its final events skip that check.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, NamedTuple, Protocol

import pydantic_core

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncEvent,
    SyncRetrying,
    SyncSkipped,
    SyncsPlanned,
    SyncStatusChanged,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.outcome import final_outcome
from airbyte_fleet.journal.codec import encode_event
from airbyte_fleet.journal.dialect import Conn, Dialect
from airbyte_fleet.journal.store import JournalError, LeaseLostError

__all__ = ["MAX_BATCH", "MAX_PENDING", "Fsync", "Link", "Writer"]

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
# The same rows as arrays (Dialect.arrays): their seqs differ, so one statement holds them all.
_INSERT_EVENTS = """
INSERT INTO events (run_id, seq, kind, connection_id, data)
SELECT * FROM unnest(?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[])
"""

_LAST_SEQ = "SELECT MAX(seq) FROM events WHERE run_id = ?"

_RUN_STARTED = """
INSERT INTO runs (run_id, started_at, job_type, wait, max_concurrency, total, starts, options,
                  selection, planning_complete)
VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET
    started_at = CASE WHEN runs.starts = 0 THEN excluded.started_at ELSE runs.started_at END,
    resumed_at = CASE WHEN runs.starts = 0 THEN runs.resumed_at ELSE excluded.started_at END,
    starts = runs.starts + 1,
    finished_at = NULL,
    outcome = NULL,
    interrupted = FALSE,
    reported_counts = NULL,
    job_type = excluded.job_type,
    wait = excluded.wait,
    max_concurrency = excluded.max_concurrency,
    options = COALESCE(runs.options, excluded.options),
    selection = COALESCE(runs.selection, excluded.selection),
    planning_complete = excluded.planning_complete
"""

# The last part of a plan read while the run went on: the plan is complete.
_PLANNING_COMPLETE = "UPDATE runs SET planning_complete = ? WHERE run_id = ?"

_PLANNED_CONFLICT = """
ON CONFLICT (run_id, connection_id) DO UPDATE SET
    connection_name = CASE WHEN excluded.connection_name <> '' THEN excluded.connection_name
                           ELSE syncs.connection_name END,
    workspace_id = CASE WHEN excluded.workspace_id <> '' THEN excluded.workspace_id
                        ELSE syncs.workspace_id END,
    position = COALESCE(syncs.position, excluded.position)
"""
_PLANNED = f"""
INSERT INTO syncs (run_id, connection_id, connection_name, workspace_id, position)
VALUES (?, ?, ?, ?, ?){_PLANNED_CONFLICT}"""
# As arrays (Dialect.arrays), for parts in which no connection comes twice (_parts): an upsert
# statement may not change one row twice.
_PLANNED_ARRAYS = f"""
INSERT INTO syncs (run_id, connection_id, connection_name, workspace_id, position)
SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::integer[]){_PLANNED_CONFLICT}"""

_RUN_TOTAL = """
UPDATE runs SET total = GREATEST(?2, (SELECT COUNT(*) FROM syncs WHERE run_id = ?1
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
INSERT INTO runs (run_id, started_at, job_type) VALUES (?, ?, ?) ON CONFLICT DO NOTHING
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
# PostgreSQL's type of the columns that are not text, for rows sent as arrays (Dialect.arrays).
_SYNC_TYPES = {
    "attempt": "integer",
    "job_id": "bigint",
    "intent_at": "timestamptz",
    "triggered_at": "timestamptz",
    "finished_at": "timestamptz",
    "rows_synced": "bigint",
    "bytes_synced": "bigint",
}
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


class _SyncSql(NamedTuple):
    """The statements of one group of sync events (see _SYNC_SET)."""

    # Applies the group's change to a row; takes what *takes* keeps of _Transaction._sync's values.
    update: str
    takes: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    # The same for a row that may be missing; takes them all.
    upsert: str
    # *update* over arrays (Dialect.arrays), one per value *takes* keeps, for rows of distinct
    # syncs only: UPDATE ... FROM applies a single one of a target's source rows, no saying which.
    update_arrays: str


def _sync_statements(extra: str) -> _SyncSql:
    """The statements that apply *extra* (and the common part) to a sync's row."""
    sets = _SYNC_COMMON + extra
    # The UPDATE binds only the values it names: PostgreSQL cannot type a parameter it never sees.
    used = [i for i, column in enumerate(_SYNC_COLUMNS) if i < 2 or f"new.{column}" in sets]
    update = sets
    for number, i in enumerate(used, start=1):
        update = update.replace(f"new.{_SYNC_COLUMNS[i]}", f"?{number}")
    upsert = sets.replace("new.", "excluded.")
    columns = ", ".join(_SYNC_COLUMNS)
    marks = ", ".join("?" * len(_SYNC_COLUMNS))
    names = [_SYNC_COLUMNS[i] for i in used]
    arrays = ", ".join(f"?::{_SYNC_TYPES.get(name, 'text')}[]" for name in names)
    return _SyncSql(
        f"UPDATE syncs SET{update}\nWHERE run_id = ?1 AND connection_id = ?2",
        operator.itemgetter(*used),
        f"INSERT INTO syncs ({columns})\nVALUES ({marks})\n"
        f"ON CONFLICT (run_id, connection_id) DO UPDATE SET{upsert}",
        f"UPDATE syncs SET{sets}\nFROM unnest({arrays}) AS new({', '.join(names)})\n"
        "WHERE syncs.run_id = new.run_id AND syncs.connection_id = new.connection_id",
    )


_SYNC_SQL = {group: _sync_statements(extra) for group, extra in _SYNC_SET.items()}


def _json(value: Any) -> str | None:
    if value is None:
        return None
    # fallback=str: a value JSON cannot hold is kept as its text rather than failing the write.
    return pydantic_core.to_json(value, fallback=str).decode()


def _columns(rows: Iterable[Sequence[Any]]) -> list[list[Any]]:
    """*rows* (at least one) as one list per column: the arrays a statement over arrays takes."""
    return [list(column) for column in zip(*rows, strict=True)]


def _parts(rows: Sequence[tuple[Any, ...]]) -> Iterator[Sequence[tuple[Any, ...]]]:
    """*rows* (a sync's run and connection first) cut in order into consecutive parts in which no
    sync comes twice. One statement over arrays applies a part: its rows touch distinct sync rows,
    so their order within it does not matter, and the parts keep each sync's events in order."""
    start = 0
    seen: set[tuple[Any, Any]] = set()
    for i, row in enumerate(rows):
        key = (row[0], row[1])
        if key in seen:
            yield rows[start:i]
            start = i
            seen = set()
        seen.add(key)
    if start < len(rows):
        yield rows[start:]


def _waits(event: Event) -> bool:
    """Whether *event* may wait for a later commit (see the module's doc)."""
    return isinstance(event, SyncEvent) and event.kind != TRIGGERING


class Link(Protocol):
    """The writer's way to its database: the connection (made again after one broke, for a server
    that went away), how a write transaction begins, and the dialect of both."""

    dialect: Dialect
    # How messages name the store ("the journal at PATH"); never carries a password.
    where: str

    def connection(self) -> Conn: ...

    def begin(self, conn: Conn, *, durable: bool) -> None:
        """Start a write transaction; *durable*: its commit must reach the disk (see above)."""

    def abandon(self, conn: Conn) -> None:
        """Undo what a failed transaction began (a connection that cannot is dropped)."""

    def close(self) -> None: ...


class _Lost(Exception):
    """Inside a transaction: fenced runs whose lease is not this process's any more."""

    def __init__(self, runs: set[str]) -> None:
        super().__init__(", ".join(sorted(runs)))
        self.runs = runs


class Writer:
    """Owns the store's connection: every write, the batch and its timer, fences, and closing.

    Calls are serialised by *lock*, which readers of the same connection share.
    """

    def __init__(
        self,
        link: Link,
        lock: threading.RLock,
        *,
        fsync: Fsync,
        batch_interval: float,
    ) -> None:
        self.link = link
        self.dialect = link.dialect
        self.lock = lock
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
        # Fenced runs with the owner their lease must have; the fenced runs found lost.
        self._fences: dict[str, str] = {}
        self._lost: set[str] = set()
        self._closed = False

    # ----------------------------------------------------------------- lifecycle

    @property
    def conn(self) -> Any:
        """The connection (SQLite's own object; PostgreSQL's adapter, made again if it broke)."""
        return self.link.connection()

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
                self.link.close()

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

    def fence(self, run_id: str, owner: str | None) -> None:
        """Write *run_id*'s events only while *owner* holds its lease (None: always again)."""
        with self.lock:
            self._lost.discard(run_id)
            if owner is None:
                self._fences.pop(run_id, None)
            else:
                self._fences[run_id] = owner

    # ----------------------------------------------------------------- writing

    def write(self, event: Event) -> None:
        item = (event, encode_event(event))
        with self.lock:
            self.check_open()
            self._refuse_lost([item])
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
            self._refuse_lost(items)
            if items:
                self._commit(items)

    def _refuse_lost(self, items: Sequence[tuple[Event, str]]) -> None:
        if self._lost:
            for event, _ in items:
                if event.run_id in self._lost:
                    raise LeaseLostError(event.run_id)

    def _commit(self, items: Sequence[tuple[Event, str]]) -> None:
        """Write the batch and *items* in one transaction; the batch is kept if it fails."""
        errors, conflict = self.dialect.errors, self.dialect.conflict
        while True:
            batch = [*self._pending, *items] if self._pending else items
            durable = self._fsync == "always" or (
                self._fsync == "triggers" and any(event.kind == TRIGGERING for event, _ in items)
            )
            try:
                try:
                    done = self._transaction(batch, durable=durable)
                except conflict:
                    # Another process wrote to one of these runs since this one last did, so
                    # the seqs counted here are taken: count again from the database.
                    self._seq.clear()
                    done = self._transaction(batch, durable=durable)
            except _Lost as lost:
                self._lose(lost.runs)
                self._refuse_lost(items)
                continue  # the other runs' events, without the lost ones
            except errors as exc:
                if len(self._pending) > MAX_PENDING:
                    log.warning("journal_dropped_events", count=len(self._pending) - MAX_PENDING)
                    del self._pending[: len(self._pending) - MAX_PENDING]
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise JournalError(f"cannot write to {self.link.where}: {first}") from exc
            break
        self._pending.clear()
        self._timer_error = None
        # The timer is left to fire into an empty batch: cancelling it on every durable write would
        # start one thread per batched event.
        done.settle(self)

    def _lose(self, runs: set[str]) -> None:
        self._lost |= runs
        kept = [item for item in self._pending if item[0].run_id not in runs]
        log.warning(
            "journal_lease_lost",
            run_ids=sorted(runs),
            dropped=len(self._pending) - len(kept),
            note="another process holds these runs now; this one writes nothing more of them",
        )
        self._pending = kept

    def _transaction(self, batch: Sequence[tuple[Event, str]], *, durable: bool) -> _Transaction:
        conn = self.link.connection()
        tx = _Transaction(self, conn)
        self.link.begin(conn, durable=durable)
        try:
            if self._fences:
                self._check_fences(conn, batch)
            for event, text in batch:
                tx.apply(event, text)
            tx.finish()
            conn.execute("COMMIT")
        except BaseException:
            self.link.abandon(conn)
            raise
        return tx

    def _check_fences(self, conn: Conn, batch: Sequence[tuple[Event, str]]) -> None:
        fenced = {event.run_id for event, _ in batch if event.run_id in self._fences}
        lost = {
            run_id
            for run_id in sorted(fenced)
            if conn.execute(
                self.dialect.fence, self.dialect.fence_params(run_id, self._fences[run_id])
            ).fetchone()
            is None
        }
        if lost:
            raise _Lost(lost)

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

    __slots__ = ("_fresh", "_group", "_known", "_params", "_rows", "_seq", "conn", "d", "writer")

    def __init__(self, writer: Writer, conn: Conn) -> None:
        self.writer = writer
        self.conn = conn
        self.d = writer.dialect
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
                # Finished: nothing more of it comes from this process (a resume fences it
                # again), and a worker that runs thousands of runs must not keep each one.
                writer._seq.pop(run_id, None)
                writer._known_runs.discard(run_id)
                writer._fences.pop(run_id, None)
                writer._lost.discard(run_id)

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
                self.conn.execute(
                    self.d.sql(_RUN_PLACEHOLDER), (run_id, self.d.ts(event.at), event.job_type)
                )
            self._sync(event, group, outcome)
        elif isinstance(event, RunStarted):
            self._flush()
            if not self._run_started(event):
                return
        elif isinstance(event, RunFinished):
            self._flush()
            if not self._run_finished(event):
                return
        elif isinstance(event, SyncsPlanned):
            self._flush()
            self._syncs_planned(event)
        self._known.add(run_id)
        self._rows.append((run_id, self._next_seq(run_id), event.kind, connection_id, text))

    def finish(self) -> None:
        self._flush()
        if not self._rows:
            return
        if self.d.arrays:
            self.conn.execute(self.d.sql(_INSERT_EVENTS), _columns(self._rows))
        else:
            self.conn.executemany(self.d.sql(_INSERT_EVENT), self._rows)

    def _is_fresh(self, run_id: str) -> bool:
        if run_id in self._fresh:
            return bool(self._fresh[run_id])
        return run_id in self.writer._fresh

    def _next_seq(self, run_id: str) -> int:
        last = self._seq.get(run_id)
        if last is None:
            last = self.writer._seq.get(run_id)
        if last is None:
            last = self.conn.execute(self.d.sql(_LAST_SEQ), (run_id,)).fetchone()[0] or 0
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
        statements = _SYNC_SQL[self._group]
        takes = statements.takes
        if self.d.arrays:
            update = self.d.sql(statements.update_arrays)
            updated = sum(
                self.conn.execute(update, _columns(map(takes, part))).rowcount
                for part in _parts(self._params)
            )
        else:
            update = self.d.sql(statements.update)
            updated = self.conn.executemany(update, map(takes, self._params)).rowcount
        if updated < len(self._params):
            # A row is missing (a sync without its run_started). Each statement sets a column to
            # a value or keeps the old one, so applying the same events again, as upserts, leaves
            # the rows that were there as they are and creates the missing ones.
            self.conn.executemany(self.d.sql(statements.upsert), self._params)
        self._params = []

    # ----------------------------------------------------------------- one event

    def _restates(self, sync: SyncEvent, outcome: str) -> bool:
        """A final outcome of the same attempt and job as the one stored (a resumer reporting what
        it found): recording it twice would double it in the replayed event stream.

        Only final events are checked: they are the ones a resumer re-sends, and a unique index
        over every event would cost a page write per commit."""
        self._flush()
        row = self.conn.execute(
            self.d.sql(
                "SELECT outcome, attempt, job_id FROM syncs WHERE run_id = ? AND connection_id = ?"
            ),
            (sync.run_id, sync.connection_id),
        ).fetchone()
        if row is None or row[0] is None:
            return False
        job_id = sync.job_id if sync.job_id is not None else row[2]
        return bool(row[0] == outcome and row[1] == sync.attempt and row[2] == job_id)

    def _run_row(self, run_id: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(
            self.d.sql(
                "SELECT starts, started_at, resumed_at, finished_at FROM runs WHERE run_id = ?"
            ),
            (run_id,),
        ).fetchone()
        return row

    def _run_started(self, event: RunStarted) -> bool:
        """Record a start; False when it is one already recorded."""
        row = self._run_row(event.run_id)
        if row is not None and row[0] > 0 and self.d.ts(event.at) in (row[1], row[2]):
            return False
        self._fresh[event.run_id] = row is None
        # Empty means "not told": it must not hide the options an earlier start recorded.
        options = event.options or None
        self.conn.execute(
            self.d.sql(_RUN_STARTED),
            (
                event.run_id,
                self.d.ts(event.at),
                event.job_type,
                self.d.flag(event.wait),
                event.max_concurrency,
                event.total,
                _json(options),
                _json(event.selection),
                self.d.flag(not event.planning),
            ),
        )
        self._plan(event.run_id, event.planned, event.total)
        return True

    def _syncs_planned(self, event: SyncsPlanned) -> None:
        """Add a later part of the run's plan, after the syncs it holds."""
        self._plan(event.run_id, event.planned, event.total)
        if event.final and event.error is None:
            self.conn.execute(self.d.sql(_PLANNING_COMPLETE), (self.d.flag(True), event.run_id))

    def _plan(self, run_id: str, items: Sequence[PlannedSync], total: int) -> None:
        # A resumed run keeps its plan order; connections new to it go after the known ones.
        base = self.conn.execute(
            self.d.sql("SELECT COALESCE(MAX(position), -1) + 1 FROM syncs WHERE run_id = ?"),
            (run_id,),
        ).fetchone()[0]
        planned = [
            (run_id, p.connection_id, p.connection_name, p.workspace_id, base + i)
            for i, p in enumerate(items)
        ]
        if self.d.arrays:
            for part in _parts(planned):
                self.conn.execute(self.d.sql(_PLANNED_ARRAYS), _columns(part))
        else:
            self.conn.executemany(self.d.sql(_PLANNED), planned)
        self.conn.execute(self.d.sql(_RUN_TOTAL), (run_id, total))

    def _run_finished(self, event: RunFinished) -> bool:
        """Record a finish; False when it is the one already recorded."""
        at = self.d.ts(event.at)
        row = self._run_row(event.run_id)
        if row is not None and row[3] == at:
            return False
        self._fresh[event.run_id] = None
        self.conn.execute(
            self.d.sql(_RUN_FINISHED),
            (
                event.run_id,
                at,
                at,
                event.outcome,
                self.d.flag(event.interrupted),
                _json(event.counts),
            ),
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
        at = self.d.ts(event.at) if group in _TIMED else None
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
