"""The PostgreSQL store's tables and their versions: each applied once, in order, under a lock, so
that replicas starting together migrate the database once.

Version 1 is the journal (runs, syncs, events: the columns of SQLite's versions 1 and 2, with
PostgreSQL's types), version 2 the coordination tables (``schema.COORDINATION_TABLES``), version 3
``runs.planning_complete`` (``schema.PLANNING_COMPLETE``). Which
versions a database has is in ``schema_migrations``; a database with a version this code does not
know is refused, as a newer SQLite journal is.
"""

from __future__ import annotations

from typing import Any

import psycopg

from airbyte_fleet.journal.schema import COORDINATION_TABLES, PLANNING_COMPLETE
from airbyte_fleet.journal.store import JournalError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "apply", "version"]

# runs.rowid: the order rows were made, as SQLite's rowid, which the listings break ties with.
_V1 = """
CREATE TABLE runs (
    run_id          TEXT PRIMARY KEY,
    rowid           BIGINT GENERATED ALWAYS AS IDENTITY,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    outcome         TEXT,
    job_type        TEXT NOT NULL DEFAULT 'sync',
    wait            BOOLEAN NOT NULL DEFAULT TRUE,
    max_concurrency INTEGER,
    total           INTEGER NOT NULL DEFAULT 0,
    interrupted     BOOLEAN NOT NULL DEFAULT FALSE,
    starts          INTEGER NOT NULL DEFAULT 0,
    resumed_at      TIMESTAMPTZ,
    options         TEXT,
    selection       TEXT,
    reported_counts TEXT
);
CREATE INDEX runs_by_start ON runs (started_at, rowid);
CREATE INDEX runs_unfinished ON runs (started_at, rowid) WHERE finished_at IS NULL;
CREATE TABLE syncs (
    run_id          TEXT NOT NULL,
    connection_id   TEXT NOT NULL,
    position        INTEGER,
    connection_name TEXT NOT NULL DEFAULT '',
    workspace_id    TEXT NOT NULL DEFAULT '',
    attempt         INTEGER NOT NULL DEFAULT 0,
    job_id          BIGINT,
    status          TEXT,
    outcome         TEXT,
    error           TEXT,
    cause           TEXT,
    intent_at       TIMESTAMPTZ,
    triggered_at    TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    rows_synced     BIGINT,
    bytes_synced    BIGINT,
    PRIMARY KEY (run_id, connection_id)
);
CREATE INDEX syncs_by_job ON syncs (job_id);
CREATE TABLE events (
    run_id        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    connection_id TEXT,
    data          TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""

_V2 = COORDINATION_TABLES.format(ts="TIMESTAMPTZ")

_V3 = PLANNING_COMPLETE.format(flag="BOOLEAN", true="TRUE")

# Index i holds the script that takes a database from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)

# pg_advisory_xact_lock's key for migrating: any constant no other application is likely to use.
_LOCK = 0x41_69_72_62_79_74_65  # "Airbyte"

_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""


def version(conn: psycopg.Connection[Any]) -> int:
    """The highest version the database has, 0 when it has none (not a store yet)."""
    found = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not found or not found[0]:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def _newer(where: str, found: int) -> JournalError:
    return JournalError(
        f"the run store at {where} has schema version {found}, newer than this airbyte-fleet "
        f"understands ({SCHEMA_VERSION}); use a newer airbyte-fleet"
    )


def apply(conn: psycopg.Connection[Any], where: str, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the database (*conn* in autocommit) to version *target*; return the version it had.

    Raises :class:`JournalError` for a database newer than this code; psycopg's errors otherwise.
    """
    before = version(conn)
    if before >= target:
        if before > SCHEMA_VERSION:
            raise _newer(where, before)
        return before
    with conn.transaction():
        # Whoever takes the lock second finds the work done (read again below).
        conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK})")
        conn.execute(_TABLE)
        before = version(conn)
        if before > SCHEMA_VERSION:
            raise _newer(where, before)
        for number in range(before, target):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", (number + 1,))
    return before
