"""The SQLite journal's tables, how a file is opened, and how an older file is brought up to date.

Version 3 adds the tables that processes sharing the file coordinate through (leases, the worker's
accepted runs, schedule fires and state, connection claims): :data:`COORDINATION_TABLES`, the same
for PostgreSQL (``pg_schema.py``) but for the type of a time. Version 4 adds
``runs.planning_complete``: whether the run's plan was read to its end (a plan read while the run
goes on may not be; a resume then plans the rest), true for every run written before it.

Each run is keyed by its run id, each sync by ``(run_id, connection_id)``, and every event is
appended with a per-run sequence number. Timestamps in columns are UTC ISO text with microseconds,
so the text sorts like the instant it names.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from airbyte_fleet.journal.dialect import utc_text
from airbyte_fleet.journal.store import JournalDamagedError, JournalError

__all__ = [
    "COORDINATION_TABLES",
    "FILE_NAME",
    "PLANNING_COMPLETE",
    "SCHEMA_VERSION",
    "connect",
    "damaged_sentence",
    "journal_error",
    "parse_ts",
    "utc_text",
]

FILE_NAME = "journal.sqlite3"

_V1 = """
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

# Why a sync was skipped (engine/outcome.py SkipCause). Version 1 only kept the skip's text, and
# resume told "interrupted before its turn" by the start of it: this is the one place that text is
# matched, once, so that resume reads the cause from then on.
_V1_INTERRUPTED = "run interrupted before trigger"
_V2 = f"""
ALTER TABLE syncs ADD COLUMN cause TEXT;
UPDATE syncs SET cause = 'interrupted'
WHERE outcome = 'skipped'
  AND substr(error, 1, {len(_V1_INTERRUPTED)}) = '{_V1_INTERRUPTED}';
"""

# Where several processes meet (coordination/ reads and writes them; the store only reads
# run_leases, to fence a run). {ts} is the type of a time: SQLite keeps UTC ISO text (utc_text),
# PostgreSQL a timestamptz compared with now(). A claim row is live only while its run holds a live
# lease; stale rows are ignored and anyone may delete them.
COORDINATION_TABLES = """
CREATE TABLE run_leases (
    run_id      TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    lease_until {ts} NOT NULL,
    acquired_at {ts} NOT NULL
);
CREATE TABLE worker_runs (
    run_id           TEXT PRIMARY KEY,
    submitted_at     {ts} NOT NULL,
    submitted_by     TEXT,
    entry            TEXT NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX worker_runs_by_submission ON worker_runs (submitted_at, run_id);
CREATE TABLE schedule_fires (
    schedule TEXT NOT NULL,
    tick     {ts} NOT NULL,
    run_id   TEXT NOT NULL,
    fired_at {ts} NOT NULL,
    PRIMARY KEY (schedule, tick)
);
CREATE TABLE schedule_state (
    schedule TEXT PRIMARY KEY,
    state    TEXT NOT NULL
);
CREATE TABLE connection_claims (
    connection_id TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    job_id        BIGINT,
    triggering    BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (connection_id, run_id)
);
"""

# Whether the run's plan was read to its end ({flag}: the type of a truth value in the database).
PLANNING_COMPLETE = "ALTER TABLE runs ADD COLUMN planning_complete {flag} NOT NULL DEFAULT {true}"
_V3 = COORDINATION_TABLES.format(ts="TEXT")

_V4 = PLANNING_COMPLETE.format(flag="INTEGER", true="1")

# Index i holds the script that takes a journal from version i to i + 1; a new file runs them all,
# so a fresh journal and an upgraded one are the same.
_MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(_MIGRATIONS)


def parse_ts(value: str | datetime | None) -> datetime | None:
    """A time as a column holds it (SQLite: text; PostgreSQL: already a datetime)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def damaged_sentence(path: Path, what: object) -> str:
    """The one sentence for a journal that cannot be read: the file, the cause, what to do."""
    return (
        f"The journal at {path} cannot be read ({what}): it is damaged or not an airbyte-fleet "
        "journal; move it aside to start a new one (the runs it holds can then no longer be "
        "resumed), or pass --state-dir with another folder."
    )


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether SQLite says the file's content is broken (not that it cannot get at the file)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def journal_error(path: Path, doing: str, exc: sqlite3.Error) -> JournalError:
    """*exc* as the store's error: damage as :class:`JournalDamagedError`, anything else (a lock,
    a full disk, permissions) as :class:`JournalError`."""
    if isinstance(exc, JournalError):
        return exc
    if is_damage(exc):
        return JournalDamagedError(damaged_sentence(path, exc))
    return JournalError(f"cannot {doing} the journal at {path}: {exc}")


def connect(
    path: Path,
    *,
    busy_timeout: float,
    create: bool = True,
    first: Callable[[sqlite3.Connection], None] | None = None,
) -> sqlite3.Connection:
    """The journal file at *path*, in WAL mode and at :data:`SCHEMA_VERSION`; raises
    :class:`JournalError` when it cannot be opened or is newer than this version.

    *create* False: never create the file; open it read-only when it cannot be written (a reader
    of a state directory it may not change), where nothing is migrated. *first* is called with
    the connection before anything is written through it (a migration rewrites the WAL).
    """
    try:
        conn = _open(path, busy_timeout, "rwc" if create else "rw")
    except sqlite3.Error as exc:
        if create or getattr(exc, "sqlite_errorname", "") not in _READ_ONLY:
            raise journal_error(path, "open", exc) from exc
        try:
            conn = _open(path, busy_timeout, "ro")
        except sqlite3.Error as again:
            raise journal_error(path, "open", again) from again
    try:
        if first is not None:
            first(conn)
        if conn.execute("PRAGMA query_only").fetchone()[0]:
            _check_version(conn, path)
        else:
            conn.execute("PRAGMA journal_mode=WAL")
            _migrate(conn, path)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise journal_error(path, "open", exc) from exc
        raise
    return conn


# Each connection's page cache, in KiB (SQLite's default is 2,000).
CACHE_KIB = 256

# What SQLite answers when a file can be read but not written by this process.
_READ_ONLY = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")


def _open(path: Path, busy_timeout: float, mode: str) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the lock
    # up front instead of failing to upgrade a read lock (which busy_timeout cannot retry).
    conn = sqlite3.connect(
        f"{path.absolute().as_uri()}?mode={mode}",
        uri=True,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
    )
    if mode == "ro":
        conn.execute("PRAGMA query_only = 1")
    # A long-lived worker's page cache fills up to SQLite's default (2 MB a connection) over a
    # few hundred runs, then stays: memory that never comes back. The journal's reads are a run's
    # rows by key, which a small cache serves as well.
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    return conn


def file_version(path: Path) -> int:
    """The schema version of the journal at *path*, 0 when there is none; read-only."""
    if not path.is_file():
        return 0
    try:
        conn = _open(path, 10.0, "ro")
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise journal_error(path, "read", exc) from exc


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise JournalError(
            f"the journal at {path} has schema version {version} and cannot be brought to "
            f"version {SCHEMA_VERSION} read-only; run airbyte-fleet once where it may write "
            "the state directory"
        )


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have just migrated the file.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal at {path} has schema version {version}, newer than this "
                f"airbyte-fleet understands ({SCHEMA_VERSION}); use a newer airbyte-fleet"
            )
        for script in _MIGRATIONS[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
