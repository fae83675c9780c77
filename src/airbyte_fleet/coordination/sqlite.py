"""Coordination in the SQLite journal file: several processes of one host share it.

Every transaction is ``BEGIN IMMEDIATE``: it takes the file's write lock first, so two processes
taking the next run, firing a tick or claiming a connection run one after the other. The clock is
this process's (one host, one clock); tests may replace it.

One host also means a holder's death can be seen, not only waited for: before taking a lease,
leases held by a process of this host that no longer exists are let go (a ``run`` killed with
``kill -9`` is resumed at once, not a lease time later). The owner id says the host and the pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from airbyte_fleet.coordination.protocol import CoordinationError, Lease, QueuedRun
from airbyte_fleet.coordination.sql import Dialect, Row, SqlCoordinator, Tx
from airbyte_fleet.journal import JournalError
from airbyte_fleet.journal.schema import FILE_NAME, connect, utc_text

__all__ = ["SqliteCoordinator"]

T = TypeVar("T")


def _ids(values: Sequence[str]) -> object:
    return json.dumps(list(values))


def _read_time(value: Any) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


DIALECT = Dialect(
    now=":now",
    until=":until",
    member="IN (SELECT value FROM json_each(:{p}))",
    lock_next="",
    claim_lock=None,
    named=lambda name: f":{name}",
    ids=_ids,
    time=utc_text,
    read_time=_read_time,
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection, clock_params: Mapping[str, object]) -> None:
        self._conn = conn
        self._clock = clock_params

    def rows(self, template: str, params: Mapping[str, object] | None = None) -> list[Row]:
        cursor = self._conn.execute(DIALECT.render(template), {**self._clock, **(params or {})})
        return cursor.fetchall()

    def count(self, template: str, params: Mapping[str, object] | None = None) -> int:
        cursor = self._conn.execute(DIALECT.render(template), {**self._clock, **(params or {})})
        return cursor.rowcount


class SqliteCoordinator(SqlCoordinator):
    """The coordination tables of ``<state_dir>/journal.sqlite3``; one connection, serialised by a
    lock, so threads may share an instance."""

    def __init__(
        self,
        state_dir: Path,
        *,
        owner: str,
        lease_seconds: float,
        busy_timeout: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.path = Path(state_dir) / FILE_NAME
        super().__init__(
            owner=owner, lease_seconds=lease_seconds, dialect=DIALECT, where=str(self.path)
        )
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect(self.path, busy_timeout=busy_timeout)
        except (OSError, JournalError) as exc:
            raise CoordinationError(str(exc)) from exc

    def _transaction(self, doing: str, work: Callable[[Tx], T]) -> T:
        now = self._clock()
        clock_params = {
            "now": utc_text(now),
            "until": utc_text(now + timedelta(seconds=self.lease_seconds)),
        }
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(doing, exc) from exc
            try:
                result = work(_SqliteTx(self._conn, clock_params))
                self._conn.execute("COMMIT")
            except BaseException as exc:
                # The failure below says what went wrong, not a rollback that failed after it.
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._error(doing, exc) from exc
                raise
            return result

    def acquire(self, run_id: str) -> Lease:
        self._let_go_of_the_dead(f"take the lease of run {run_id}")
        return super().acquire(run_id)

    def take_next(self, *, exclude: Collection[str] = ()) -> QueuedRun | None:
        self._let_go_of_the_dead("take the next queued run")
        return super().take_next(exclude=exclude)

    def _let_go_of_the_dead(self, doing: str) -> None:
        def work(tx: Tx) -> None:
            for run_id, owner in tx.rows(_LIVE_LEASES):
                if _gone(str(owner)):
                    tx.count(_DROP_LEASE, {"run_id": run_id, "owner": owner})

        self._transaction(doing, work)

    def _error(self, doing: str, exc: sqlite3.Error) -> CoordinationError:
        return CoordinationError(
            f"cannot {doing} in the journal at {self.path} ({exc}); check that the file is "
            "writable and not damaged"
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_LIVE_LEASES = "SELECT run_id, owner FROM run_leases WHERE lease_until > {now}"
_DROP_LEASE = "DELETE FROM run_leases WHERE run_id = :run_id AND owner = :owner"


def _gone(owner: str) -> bool:
    """Whether *owner* (``host:pid:tag``) names a process of this host that has ended."""
    parts = owner.split(":")
    if len(parts) < 3 or not parts[-2].isdigit():
        return False
    host = ":".join(parts[:-2])
    pid = int(parts[-2])
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    try:
        # A zombie (killed, its parent has not waited for it yet) still answers the signal.
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] in (["Z"], ["X"])
