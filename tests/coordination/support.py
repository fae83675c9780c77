"""Both coordination backends behind one face, so each test runs against SQLite and PostgreSQL.

A :class:`World` is one shared database (a state dir, or a fresh PostgreSQL database) and opens
coordinators on it as different processes would. :meth:`World.advance` moves lease time on:
SQLite's coordinators share an injected clock; PostgreSQL's leases are moved back by as much,
which is the same to every lease decision (they compare with ``now()``).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from airbyte_fleet.coordination import Coordinator, open_coordinator
from airbyte_fleet.coordination.sqlite import SqliteCoordinator
from airbyte_fleet.journal import FILE_NAME

# Until the journal's migrations create them (issue 14, helper H1), the tests create the tables.
_TABLES = """
CREATE TABLE IF NOT EXISTS run_leases (
  run_id TEXT PRIMARY KEY, owner TEXT NOT NULL, lease_until {ts} NOT NULL, acquired_at {ts} NOT NULL
);
CREATE TABLE IF NOT EXISTS worker_runs (
  run_id TEXT PRIMARY KEY, submitted_at {ts} NOT NULL, submitted_by TEXT, entry TEXT NOT NULL,
  cancel_requested BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS worker_runs_by_submission ON worker_runs (submitted_at, run_id);
CREATE TABLE IF NOT EXISTS schedule_fires (
  schedule TEXT NOT NULL, tick {ts} NOT NULL, run_id TEXT NOT NULL, fired_at {ts} NOT NULL,
  PRIMARY KEY (schedule, tick)
);
CREATE TABLE IF NOT EXISTS schedule_state (schedule TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS connection_claims (
  connection_id TEXT NOT NULL, run_id TEXT NOT NULL, job_id BIGINT,
  triggering BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY (connection_id, run_id)
)
"""


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2030, 1, 1, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    backend: str
    state_dir: Path
    url: str | None
    real_clock: bool = False
    clock: Clock = field(default_factory=Clock)
    opened: list[Coordinator] = field(default_factory=list)

    def open(self, *, owner: str | None = None, lease_seconds: float = 30.0) -> Coordinator:
        if self.backend == "sqlite" and not self.real_clock:
            open_coordinator(database_url=None, state_dir=self.state_dir).close()  # migrations
            made: Coordinator = SqliteCoordinator(
                self.state_dir,
                owner=owner or f"proc-{len(self.opened)}",
                lease_seconds=lease_seconds,
                clock=self.clock,
            )
        else:
            made = open_coordinator(
                database_url=self.url,
                state_dir=self.state_dir,
                lease_seconds=lease_seconds,
                owner=owner or f"proc-{len(self.opened)}",
            )
        if not self.opened:
            self._tables()
        self.opened.append(made)
        return made

    def _tables(self) -> None:
        if self.url is None:
            with closing(sqlite3.connect(self.state_dir / FILE_NAME)) as conn:
                conn.executescript(_TABLES.format(ts="TEXT"))
        else:
            with psycopg.connect(self.url, autocommit=True) as conn:
                for statement in _TABLES.format(ts="TIMESTAMPTZ").split(";"):
                    conn.execute(statement)

    def advance(self, seconds: float) -> None:
        """Let *seconds* of lease time pass."""
        if self.url is None:
            self.clock.now += timedelta(seconds=seconds)
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "UPDATE run_leases SET lease_until = lease_until - make_interval(secs => %s)",
                (seconds,),
            )

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        """Read the shared database directly (what the tests check against)."""
        if self.url is None:
            with closing(sqlite3.connect(self.state_dir / FILE_NAME)) as conn:
                return conn.execute(statement).fetchall()
        with psycopg.connect(self.url) as conn:
            return conn.execute(statement).fetchall()

    def close(self) -> None:
        for made in self.opened:
            made.close()
