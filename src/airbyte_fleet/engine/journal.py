"""The run journal: every trigger and every outcome, on disk before anyone acts on it.

A :class:`Journal` is an event sink backed by SQLite (stdlib ``sqlite3``). Each run is keyed by its
run id, each sync by ``(run_id, connection_id)``, and every event is appended with a per-run
sequence number, so a crashed run can be resumed without triggering anything twice, ``runs`` can
list history, and a service can replay a run's events and then follow it live.

Durability: ``run_started``, ``sync_triggering``, ``sync_triggered``, ``sync_adopted``, every final
sync event and ``run_finished`` are committed before the sink returns, so they survive the process
being killed at any moment. ``sync_status_changed`` and ``sync_retrying`` only say how far a job got,
which a resumed run learns again by asking Airbyte, so they are batched: committed with the next
durable write, or by a timer after about a second.

Surviving a power cut or a kernel crash too needs an fsync, which costs far more than the commit.
By default (``fsync="triggers"``) only a commit holding a ``sync_triggering`` is fsynced: that one
record is what stops a resumer from sending a second ``POST /jobs``, and the fsync also makes every
earlier commit durable (WAL frames reach the disk in order). What a power cut can still take away
is the tail after the last trigger (a job id, a final outcome), and the resumer learns those again
from Airbyte: the job list for an intent, the job itself for one in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
import time
import types
import typing
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self

import structlog

from airbyte_fleet.api.models import Connection
from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncEvent,
    SyncRetrying,
    SyncSkipped,
    SyncStatusChanged,
    SyncTriggered,
    SyncTriggering,
    final_outcome,
)
from airbyte_fleet.engine.plan import Plan, PlannedConnection
from airbyte_fleet.engine.result import OUTCOMES, ResultBuilder, RunResult, Totals
from airbyte_fleet.engine.run import INTERRUPTED_BEFORE_TRIGGER, ResumePoint

__all__ = [
    "FILE_NAME",
    "SCHEMA_VERSION",
    "Journal",
    "JournalError",
    "RunRecord",
    "RunSummary",
    "SyncRecord",
    "SyncState",
    "event_to_json",
    "reconstruct_event",
]

log = structlog.get_logger("airbyte_fleet.journal")

FILE_NAME = "journal.sqlite3"
SCHEMA_VERSION = 1

SyncState = Literal["untouched", "intent", "in_flight", "final"]
Fsync = Literal["always", "triggers", "never"]

TRIGGERING = SyncTriggering.kind
STARTED = frozenset({SyncTriggered.kind, SyncAdopted.kind})
BATCHED = frozenset({SyncStatusChanged.kind, SyncRetrying.kind})
# Bounds the memory of a batch: at this size it is committed at once, whatever the timer says.
MAX_BATCH = 500
# While the disk refuses writes, status events wait in memory; past this many the oldest go.
MAX_PENDING = 50_000


class JournalError(sqlite3.Error):
    """The journal could not be read or written (the cause is chained).

    A :class:`sqlite3.Error`, so code that already handles database errors handles this one too.
    """


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SyncRecord:
    """One connection's sync in a run, as far as the journal knows.

    ``intent_at`` is when the current attempt's trigger was first journaled (a new attempt's intent
    replaces it), so a resumer knows since when a job could be ours; ``triggered_at`` is when the
    sync's first job was triggered or adopted, so a resumed run can count the sync's timeout from
    it, as the first process did.
    """

    connection_id: str
    connection_name: str = ""
    workspace_id: str = ""
    attempt: int = 0
    job_id: int | None = None
    status: str | None = None
    outcome: str | None = None
    error: str | None = None
    intent_at: datetime | None = None
    triggered_at: datetime | None = None
    finished_at: datetime | None = None
    rows_synced: int | None = None
    bytes_synced: int | None = None

    @property
    def state(self) -> SyncState:
        """``intent`` means a ``POST /jobs`` may have been sent whose answer was never journaled:
        the resumer must look for that job in Airbyte, never trigger blindly."""
        if self.outcome is not None:
            return "final"
        if self.job_id is not None:
            return "in_flight"
        if self.intent_at is not None:
            return "intent"
        return "untouched"


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    counts: dict[str, int]
    total: int
    job_type: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "outcome": self.outcome,
            "counts": dict(self.counts),
            "total": self.total,
            "job_type": self.job_type,
        }


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    job_type: str
    wait: bool
    max_concurrency: int | None
    total: int
    interrupted: bool
    resumed_at: datetime | None
    options: dict[str, Any]
    selection: dict[str, Any] | None
    planned: list[PlannedSync]
    syncs: dict[str, SyncRecord]
    counts: dict[str, int]


# --------------------------------------------------------------------------- event (de)coding


def _ts(value: datetime) -> str:
    # One fixed format in UTC, so the text sorts like the instant it names.
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat(timespec="microseconds")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _ts(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


_SCALARS = frozenset({str, int, float, bool})
_FIELDS: dict[type[Event], tuple[tuple[str, bool], ...]] = {}


def _fields(cls: type[Event]) -> tuple[tuple[str, bool], ...]:
    # Looked up once per class: with 10,000 syncs the journal encodes tens of thousands of events.
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple((f.name, f.default is None) for f in dataclasses.fields(cls))
    return found


def event_to_json(event: Event) -> dict[str, Any]:
    """Like :meth:`Event.to_dict`, but complete enough for :func:`reconstruct_event`: fields kept out
    of logs (``planned``, ``options``) are included and floats are not rounded."""
    out: dict[str, Any] = {"event": event.kind}
    for name, none_by_default in _fields(type(event)):
        value = getattr(event, name)
        if value is None:
            if not none_by_default:
                out[name] = None
        elif type(value) in _SCALARS:
            out[name] = value
        else:
            out[name] = _plain(value)
    return out


def _event_classes(root: type[Event]) -> Iterator[type[Event]]:
    for sub in root.__subclasses__():
        yield sub
        yield from _event_classes(sub)


_REGISTRY: dict[str, type[Event]] = {}


def _event_class(kind: str) -> type[Event]:
    global _REGISTRY
    cls = _REGISTRY.get(kind)
    if cls is None:
        # Walked again on a miss, so event classes defined after the first lookup are found too;
        # built aside and swapped in, so a reader on another thread never sees it half-filled.
        registry: dict[str, type[Event]] = {}
        for sub in _event_classes(Event):
            # Only classes that name their own kind: SyncEvent inherits Event's placeholder.
            if "kind" in vars(sub):
                registry.setdefault(sub.kind, sub)
        _REGISTRY = registry
        cls = registry.get(kind)
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}")
    return cls


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else value
    if hint is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if origin is tuple and isinstance(value, list):
        item = args[0] if args else Any
        return tuple(_decode(item, v) for v in value)
    if origin is list and isinstance(value, list):
        item = args[0] if args else Any
        return [_decode(item, v) for v in value]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value)
    return value


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    hints = _hints(cls)
    kwargs = {
        f.name: _decode(hints.get(f.name, Any), data[f.name])
        for f in dataclasses.fields(cls)
        if f.init and f.name in data
    }
    return cls(**kwargs)


def reconstruct_event(data: dict[str, Any]) -> Event:
    """The typed event a stored (or :meth:`Event.to_dict`) mapping describes.

    Keys the event class does not know are ignored, so journals written by a newer version still
    replay; raises :class:`ValueError` for an unknown ``event`` kind.
    """
    kind = data.get("event")
    if not isinstance(kind, str):
        raise ValueError("not an event: no 'event' kind")
    event: Event = _build(_event_class(kind), data)
    return event


# --------------------------------------------------------------------------- schema

_SCHEMA = """
CREATE TABLE runs (
    run_id          TEXT PRIMARY KEY,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    outcome         TEXT,
    job_type        TEXT NOT NULL DEFAULT 'sync',
    wait            INTEGER NOT NULL DEFAULT 1,
    max_concurrency INTEGER,
    total           INTEGER NOT NULL DEFAULT 0,
    interrupted     INTEGER NOT NULL DEFAULT 0,
    starts          INTEGER NOT NULL DEFAULT 0,
    resumed_at      TEXT,
    options         TEXT,
    selection       TEXT,
    reported_counts TEXT
);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE TABLE syncs (
    run_id          TEXT NOT NULL,
    connection_id   TEXT NOT NULL,
    position        INTEGER,
    connection_name TEXT NOT NULL DEFAULT '',
    workspace_id    TEXT NOT NULL DEFAULT '',
    attempt         INTEGER NOT NULL DEFAULT 0,
    job_id          INTEGER,
    status          TEXT,
    outcome         TEXT,
    error           TEXT,
    intent_at       TEXT,
    triggered_at    TEXT,
    finished_at     TEXT,
    rows_synced     INTEGER,
    bytes_synced    INTEGER,
    PRIMARY KEY (run_id, connection_id)
) WITHOUT ROWID;
CREATE INDEX syncs_by_job ON syncs (job_id);
CREATE TABLE events (
    run_id        TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    kind          TEXT NOT NULL,
    connection_id TEXT,
    data          TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

"""

# Index i holds the script that takes a journal from version i to i + 1.
_MIGRATIONS: tuple[str, ...] = (_SCHEMA,)
assert len(_MIGRATIONS) == SCHEMA_VERSION

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
                   outcome, error, intent_at, triggered_at, finished_at, rows_synced, bytes_synced)
VALUES (:run_id, :connection_id, :connection_name, :workspace_id, :attempt, :job_id, :status,
        :outcome, :error, :intent_at, :triggered_at, :finished_at, :rows_synced, :bytes_synced)
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
    job_id = NULL, status = NULL, outcome = NULL, error = NULL, finished_at = NULL""",
    "started": """,
    job_id = excluded.job_id, status = excluded.status, outcome = NULL, error = NULL,
    finished_at = NULL, triggered_at = COALESCE(syncs.triggered_at, excluded.triggered_at)""",
    "progress": """,
    job_id = COALESCE(excluded.job_id, syncs.job_id),
    status = COALESCE(excluded.status, syncs.status),
    error = COALESCE(excluded.error, syncs.error)""",
    "final": """,
    job_id = COALESCE(excluded.job_id, syncs.job_id),
    status = COALESCE(excluded.status, syncs.status),
    outcome = excluded.outcome, error = excluded.error, finished_at = excluded.finished_at""",
    "other": "",
}
_SYNC_SQL = {group: _SYNC_INSERT + extra for group, extra in _SYNC_SET.items()}

_SYNC_COLUMNS = (
    "connection_id, connection_name, workspace_id, attempt, job_id, status, outcome, error, "
    "intent_at, triggered_at, finished_at, rows_synced, bytes_synced"
)

_RUN_COLUMNS = (
    "run_id, started_at, finished_at, outcome, job_type, wait, max_concurrency, total, "
    "interrupted, resumed_at, options, selection"
)


def _settle(outcome: str | None, has_job: bool, finished: bool, wait: bool) -> str:
    """The outcome a run summary shows for a sync; mirrors ResultBuilder at ``run_finished``."""
    if outcome is not None:
        return outcome
    if not finished:
        return "pending"
    return "triggered" if not wait and has_job else "error"


def _zeroed() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    # default=str: a value JSON cannot hold is kept as its text rather than failing the write.
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- journal


class Journal:
    """An event sink that keeps each run on disk; safe to share one state dir between processes.

    Calls are serialised by a lock, so one instance may serve the event loop and a reader thread.
    Writes raise :class:`JournalError`; the caller decides whether to carry on without a journal.

    *fsync* chooses what survives a power cut (every mode survives a killed process): ``"always"``
    every durable commit, ``"triggers"`` (default) every trigger intent and all before it,
    ``"never"`` whatever the OS had written out.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        fsync: Fsync = "triggers",
        busy_timeout: float = 10.0,
        batch_interval: float = 1.0,
    ) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._batch_interval = batch_interval
        self._lock = threading.RLock()
        # Batched events with their JSON, encoded on arrival so a bad one fails its own call and
        # never blocks the batch it would have joined.
        self._pending: list[tuple[Event, str]] = []
        self._pending_since = 0.0
        self._timer: threading.Timer | None = None
        self._known_runs: set[str] = set()
        self._closed = False
        self._fsync = fsync
        self._synchronous = ""
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the lock
            # up front instead of failing to upgrade a read lock (which busy_timeout cannot retry).
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal at {self.path}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._set_synchronous("FULL" if fsync == "always" else "NORMAL")
            self._migrate()
        except JournalError:
            self._conn.close()
            raise
        except sqlite3.Error as exc:
            self._conn.close()
            raise JournalError(f"cannot open the journal at {self.path}: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have just created the schema.
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal at {self.path} has schema version {version}, newer than this "
                    f"airbyte-fleet understands ({SCHEMA_VERSION}); use a newer airbyte-fleet"
                )
            for script in _MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Commit any batched events and close the file. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._cancel_timer()
            try:
                if self._pending:
                    self._commit([])
            finally:
                self._closed = True
                self._conn.close()

    def flush(self) -> None:
        """Commit batched events now."""
        with self._lock:
            self._check_open()
            if self._pending:
                self._commit([])

    # ----------------------------------------------------------------- sink

    def __call__(self, event: Event) -> None:
        # event_to_json already gives plain values: no second walk through _json's _plain.
        text = json.dumps(
            event_to_json(event), separators=(",", ":"), ensure_ascii=False, default=str
        )
        item = (event, text)
        with self._lock:
            self._check_open()
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

    def _set_synchronous(self, mode: str) -> None:
        if mode != self._synchronous:
            self._conn.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    def _commit(self, items: Sequence[tuple[Event, str]]) -> None:
        """Write the batch and *items* in one transaction; the batch is kept if it fails."""
        batch = [*self._pending, *items]
        new_runs: set[str] = set()
        try:
            if self._fsync == "triggers":
                trigger = any(event.kind == TRIGGERING for event, _ in items)
                self._set_synchronous("FULL" if trigger else "NORMAL")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for event, text in batch:
                    self._apply(event, text, new_runs)
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if len(self._pending) > MAX_PENDING:
                log.warning("journal_dropped_status_events", count=len(self._pending) - MAX_PENDING)
                del self._pending[: len(self._pending) - MAX_PENDING]
            raise JournalError(f"cannot write to the journal at {self.path}: {exc}") from exc
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
        with self._lock:
            self._timer = None
            if self._closed or not self._pending:
                return
            try:
                self._commit([])
            except JournalError as exc:
                # Nobody to raise to on this thread; the events stay batched for the next write.
                log.warning("journal_flush_failed", error=str(exc))

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError("the journal is closed")

    # ----------------------------------------------------------------- writing

    def _apply(self, event: Event, text: str, new_runs: set[str]) -> None:
        sync = event if isinstance(event, SyncEvent) else None
        outcome = final_outcome(sync) if sync is not None else None
        if self._is_replay(event, sync, outcome):
            return
        # seq is computed inside the write transaction, so two processes never share one.
        self._conn.execute(
            _INSERT_EVENT, (event.run_id, event.kind, sync.connection_id if sync else None, text)
        )
        if isinstance(event, RunStarted):
            self._run_started(event)
        elif isinstance(event, RunFinished):
            self._conn.execute(
                _RUN_FINISHED,
                (
                    event.run_id,
                    _ts(event.at),
                    _ts(event.at),
                    event.outcome,
                    int(event.interrupted),
                    _json(event.counts),
                ),
            )
        elif sync is not None:
            if event.run_id not in self._known_runs and event.run_id not in new_runs:
                # Keeps a sync that arrives without its run_started (a late subscriber) listable.
                self._conn.execute(_RUN_PLACEHOLDER, (event.run_id, _ts(event.at), sync.job_type))
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
            row = self._conn.execute(
                "SELECT outcome, attempt, job_id FROM syncs WHERE run_id = ? AND connection_id = ?",
                (sync.run_id, sync.connection_id),
            ).fetchone()
            if row is None or row[0] is None:
                return False
            job_id = sync.job_id if sync.job_id is not None else row[2]
            return bool(row[0] == outcome and row[1] == sync.attempt and row[2] == job_id)
        if isinstance(event, RunStarted | RunFinished):
            row = self._conn.execute(
                "SELECT starts, started_at, resumed_at, finished_at FROM runs WHERE run_id = ?",
                (event.run_id,),
            ).fetchone()
            if row is None:
                return False
            at = _ts(event.at)
            if isinstance(event, RunStarted):
                return bool(row[0] > 0 and at in (row[1], row[2]))
            return bool(row[3] == at)
        return False

    def _run_started(self, event: RunStarted) -> None:
        # Empty means "not told": it must not hide the options an earlier start recorded.
        options = event.options or None
        selection = event.selection
        self._conn.execute(
            _RUN_STARTED,
            (
                event.run_id,
                _ts(event.at),
                event.job_type,
                int(event.wait),
                event.max_concurrency,
                event.total,
                _json(options),
                _json(selection),
            ),
        )
        # A resumed run keeps its plan order; connections new to it go after the known ones.
        base = self._conn.execute(
            "SELECT COALESCE(MAX(position), -1) + 1 FROM syncs WHERE run_id = ?", (event.run_id,)
        ).fetchone()[0]
        self._conn.executemany(
            _PLANNED,
            (
                (event.run_id, p.connection_id, p.connection_name, p.workspace_id, base + i)
                for i, p in enumerate(event.planned)
            ),
        )
        self._conn.execute(_RUN_TOTAL, (event.run_id, event.total))

    def _sync(self, event: SyncEvent, outcome: str | None) -> None:
        kind = event.kind
        at = _ts(event.at)
        error = event.error
        if outcome is not None:
            group = "final"
            if error is None and isinstance(event, SyncSkipped) and event.reason:
                error = event.reason
        elif kind == TRIGGERING:
            group = "triggering"
        elif kind in STARTED:
            group = "started"
        elif kind in BATCHED:
            group = "progress"
        else:
            group = "other"
        self._conn.execute(
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
                "intent_at": at if group == "triggering" else None,
                "triggered_at": at if group == "started" else None,
                "finished_at": at if group == "final" else None,
                "rows_synced": event.rows_synced,
                "bytes_synced": event.bytes_synced,
            },
        )

    # ----------------------------------------------------------------- reading

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._check_open()
            if self._pending:
                # A reader on this instance sees what it was told, batched or not.
                self._commit([])
            try:
                yield self._conn
            except JournalError:
                raise
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal at {self.path}: {exc}") from exc

    def runs(self, *, limit: int = 20, offset: int = 0) -> list[RunSummary]:
        """Runs newest first (by first start); ``counts`` come from the syncs, ``pending`` for those
        still open in an unfinished run."""
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                rows = conn.execute(
                    "SELECT run_id, started_at, finished_at, outcome, job_type, wait, total "
                    "FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ? OFFSET ?",
                    (limit, offset),
                ).fetchall()
                counted = self._counts(conn, [(r[0], r[2] is not None, bool(r[5])) for r in rows])
            finally:
                conn.execute("COMMIT")
        out: list[RunSummary] = []
        for run_id, started, finished, outcome, job_type, _, total in rows:
            counts, found = counted[run_id]
            out.append(
                RunSummary(
                    run_id=run_id,
                    started_at=datetime.fromisoformat(started),
                    finished_at=_dt(finished),
                    outcome=outcome if finished is not None else "running",
                    counts=counts,
                    total=found or total,
                    job_type=job_type,
                )
            )
        return out

    @staticmethod
    def _counts(
        conn: sqlite3.Connection, runs: Iterable[tuple[str, bool, bool]]
    ) -> dict[str, tuple[dict[str, int], int]]:
        wanted = {run_id: (finished, wait) for run_id, finished, wait in runs}
        out = {run_id: (_zeroed(), 0) for run_id in wanted}
        if not wanted:
            return out
        marks = ",".join("?" * len(wanted))
        rows = conn.execute(
            "SELECT run_id, outcome, job_id IS NOT NULL, COUNT(*) FROM syncs "
            f"WHERE run_id IN ({marks}) GROUP BY 1, 2, 3",
            list(wanted),
        ).fetchall()
        for run_id, outcome, has_job, n in rows:
            counts, total = out[run_id]
            finished, wait = wanted[run_id]
            key = _settle(outcome, bool(has_job), finished, wait)
            counts[key] = counts.get(key, 0) + n
            out[run_id] = (counts, total + n)
        return out

    def last_run_id(self) -> str | None:
        """The run started most recently (by its first start), finished or not."""
        query = "SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1"
        with self._reading() as conn:
            row = conn.execute(query).fetchone()
        return None if row is None else str(row[0])

    def unfinished_runs(self) -> list[str]:
        """Runs whose last start has no ``run_finished`` after it, oldest first."""
        query = "SELECT run_id FROM runs WHERE finished_at IS NULL ORDER BY started_at, rowid"
        with self._reading() as conn:
            rows = conn.execute(query).fetchall()
        return [str(r[0]) for r in rows]

    def run(self, run_id: str) -> RunRecord | None:
        with self._reading() as conn:
            # One read transaction, so the run and its syncs come from the same moment.
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                syncs = conn.execute(
                    f"SELECT position, {_SYNC_COLUMNS} FROM syncs WHERE run_id = ? "
                    "ORDER BY position IS NULL, position, connection_id",
                    (run_id,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
        if row is None:
            return None
        (
            _,
            started,
            finished,
            outcome,
            job_type,
            wait,
            max_concurrency,
            total,
            interrupted,
            resumed,
            options,
            selection,
        ) = row
        records: dict[str, SyncRecord] = {}
        planned: list[PlannedSync] = []
        counts = _zeroed()
        for position, *values in syncs:
            record = SyncRecord(
                connection_id=values[0],
                connection_name=values[1],
                workspace_id=values[2],
                attempt=values[3],
                job_id=values[4],
                status=values[5],
                outcome=values[6],
                error=values[7],
                intent_at=_dt(values[8]),
                triggered_at=_dt(values[9]),
                finished_at=_dt(values[10]),
                rows_synced=values[11],
                bytes_synced=values[12],
            )
            records[record.connection_id] = record
            if position is not None:
                planned.append(
                    PlannedSync(record.connection_id, record.connection_name, record.workspace_id)
                )
            key = _settle(record.outcome, record.job_id is not None, finished is not None, wait)
            counts[key] = counts.get(key, 0) + 1
        return RunRecord(
            run_id=run_id,
            started_at=datetime.fromisoformat(started),
            finished_at=_dt(finished),
            outcome=outcome if finished is not None else "running",
            job_type=job_type,
            wait=bool(wait),
            max_concurrency=max_concurrency,
            total=max(total, len(records)),
            interrupted=bool(interrupted),
            resumed_at=_dt(resumed),
            options=json.loads(options) if options else {},
            selection=json.loads(selection) if selection else None,
            planned=planned,
            syncs=records,
            counts=counts,
        )

    def events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(seq, event)`` pairs with ``seq > after``, in order; pass the last seq back as *after*
        to page, or to follow a run that is still being written."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT seq, data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (run_id, after, -1 if limit is None else limit),
            ).fetchall()
        return [(int(seq), json.loads(data)) for seq, data in rows]

    def rebuild_result(self, run_id: str) -> RunResult | None:
        """The run's result as a :class:`ResultBuilder` fed its journaled events would give it.

        For a run that never finished (crashed, or still going), ``outcome`` is ``"running"`` and
        each sync shows what was known; open syncs are counted as ``pending``.
        """
        stored = self.events(run_id)
        builder = ResultBuilder()
        started = False
        finished = False
        for _, data in stored:
            try:
                event = reconstruct_event(data)
            except ValueError:
                continue  # a kind this version does not know cannot change its result
            if isinstance(event, RunStarted):
                started = True
                finished = False
            elif isinstance(event, RunFinished):
                finished = True
            if started:
                builder(event)
        if not started:
            return None
        result = builder.result
        if finished:
            return result
        return _partial(builder, result)


def _partial(builder: ResultBuilder, result: RunResult) -> RunResult:
    # ResultBuilder only lists its syncs at run_finished; an unfinished run still deserves them.
    syncs = builder.snapshot().syncs
    counts = _zeroed()
    for s in syncs:
        key = s.outcome or "pending"
        counts[key] = counts.get(key, 0) + 1
    return result.model_copy(
        update={
            # An earlier process may have finished the run before this one resumed it.
            "outcome": "running",
            "finished_at": None,
            "duration_s": None,
            "syncs": syncs,
            "counts": counts,
            "totals": Totals(
                rows_synced=sum(s.rows_synced or 0 for s in syncs),
                bytes_synced=sum(s.bytes_synced or 0 for s in syncs),
            ),
        }
    )


def _resume_state(rec: SyncRecord) -> SyncState:
    # Skipped only because the run was interrupted before its turn: resuming means running it.
    if (
        rec.state == "final"
        and rec.outcome == "skipped"
        and rec.job_id is None
        and (rec.error or "").startswith(INTERRUPTED_BEFORE_TRIGGER)
    ):
        return "untouched"
    return rec.state


def resume_plan(record: RunRecord) -> tuple[Plan, dict[str, ResumePoint]]:
    """The plan and resume points that carry on *record* where it stopped (as ``run --resume``)."""
    items = tuple(
        PlannedConnection(
            Connection.model_validate(
                {
                    "connectionId": p.connection_id,
                    "name": p.connection_name,
                    "workspaceId": p.workspace_id,
                }
            )
        )
        for p in record.planned
    )
    points = {
        cid: ResumePoint(
            state=_resume_state(rec),
            attempt=rec.attempt,
            job_id=rec.job_id,
            outcome=rec.outcome,
            intent_at=rec.intent_at,
            triggered_at=rec.triggered_at,
        )
        for cid, rec in record.syncs.items()
    }
    return Plan(items=items), points
