"""The two stores side by side for the contract tests: the same test on a SQLite file and on a
real PostgreSQL database, with ways to read or write either behind the store's back."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from airbyte_fleet.journal import FILE_NAME, Journal, RunStore
from airbyte_fleet.journal.dialect import SQLITE, Dialect
from airbyte_fleet.journal.postgres import POSTGRES, PostgresStore
from journal import stories


@dataclass
class Backend:
    """One store's home: a state dir (SQLite) or a database URL (PostgreSQL)."""

    name: str
    state_dir: Path
    url: str | None = None

    @property
    def dialect(self) -> Dialect:
        return SQLITE if self.url is None else POSTGRES

    def open(self, *, lock_timeout: float | None = None, **options: Any) -> RunStore:
        """A store here; *lock_timeout*: how long a write waits for a lock another holds."""
        if self.url is None:
            if lock_timeout is not None:
                options["busy_timeout"] = lock_timeout
            return Journal(self.state_dir, **options)
        if lock_timeout is not None:
            options["timeout"] = lock_timeout
        return PostgresStore(self.url, **options)

    def argv(self) -> list[str]:
        """Where a child process finds the store: ``open_store(database_url=argv[1] or None,
        state_dir=argv[0])``."""
        return [str(self.state_dir), self.url or ""]

    def env(self) -> dict[str, str]:
        """A child process's environment: its scripts open ``FLEET_TEST_STORE_URL`` when set,
        else the state dir they are given."""
        return {**os.environ, "FLEET_TEST_STORE_URL": self.url or ""}

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run *sql* (SQLite's spelling) behind the store's back, committed; its rows."""
        if self.url is None:
            db = sqlite3.connect(self.state_dir / FILE_NAME)
            try:
                with db:
                    return db.execute(sql, params).fetchall()
            finally:
                db.close()
        with psycopg.connect(self.url, autocommit=True, cursor_factory=psycopg.RawCursor) as pg:
            cursor = pg.execute(POSTGRES.translate(sql), params or None)
            return cursor.fetchall() if cursor.description else []

    def insert_rows(self, run_id: str, *rows: tuple[int, str, str]) -> None:
        """Write (seq, kind, data) event rows, as another version would."""
        for seq, kind, data in rows:
            self.execute(
                "INSERT INTO events (run_id, seq, kind, data) VALUES (?, ?, ?, ?)",
                (run_id, seq, kind, data),
            )

    def stored_rows(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.execute("SELECT data FROM events WHERE run_id = ? ORDER BY seq", (run_id,))
        return [json.loads(data) for (data,) in rows]

    @contextlib.contextmanager
    def write_lock_held(self) -> Iterator[None]:
        """Another process holds what a write needs while the block runs."""
        if self.url is None:
            with stories.write_lock_held(self.state_dir):
                yield
            return
        with psycopg.connect(self.url, autocommit=True) as other:
            other.execute("BEGIN")
            # EXCLUSIVE: readers go on, writers wait (SQLite's write lock).
            other.execute("LOCK TABLE runs, syncs, events IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                other.execute("ROLLBACK")
