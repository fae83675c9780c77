"""Coordination in PostgreSQL: several ``serve`` replicas on several hosts share one database.

Every lease decision reads the database's clock (``now()``), the one clock all replicas share.
``take_next`` locks the row it picks (``FOR UPDATE ... SKIP LOCKED``), so replicas taking runs at
the same moment take different ones; a connection's claims are serialised by a transaction-scoped
advisory lock on the connection id. Connections come from a small pool, so threads may share an
instance.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from airbyte_fleet._redact import register_secret
from airbyte_fleet.coordination.protocol import CoordinationError
from airbyte_fleet.coordination.sql import Dialect, Row, SqlCoordinator, Tx
from airbyte_fleet.journal.urls import password_of, redact_url

# The pool reports a failed reconnect on its own logger: without a handler of the application's,
# Python's last-resort handler would print it as plain lines among the JSON ones. Our own errors
# say the same in one sentence; an application that configures logging still gets these records.
logging.getLogger("psycopg").addHandler(logging.NullHandler())

__all__ = ["PostgresCoordinator"]

T = TypeVar("T")

# A conflict between two transactions (rare: finishing a run while another claims its
# connection) is retried; anything else is the database's failure.
_RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_ATTEMPTS = 3


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _read_time(value: Any) -> datetime:
    moment: datetime = value
    return moment.astimezone(UTC)


def _ids(values: Sequence[str]) -> object:
    return list(values)


DIALECT = Dialect(
    now="now()",
    until="(now() + make_interval(secs => :lease))",
    member="= ANY(:{p})",
    lock_next="FOR UPDATE OF w SKIP LOCKED",
    claim_lock="SELECT pg_advisory_xact_lock(hashtextextended(:connection_id, 0))",
    named=lambda name: f"%({name})s",
    ids=_ids,
    time=_aware,
    read_time=_read_time,
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _PgTx:
    def __init__(self, cursor: psycopg.Cursor[Row], lease_seconds: float) -> None:
        self._cursor = cursor
        self._lease = lease_seconds

    def _execute(self, template: str, params: Mapping[str, object] | None) -> None:
        self._cursor.execute(DIALECT.render(template), {"lease": self._lease, **(params or {})})

    def rows(self, template: str, params: Mapping[str, object] | None = None) -> list[Row]:
        self._execute(template, params)
        return self._cursor.fetchall()

    def count(self, template: str, params: Mapping[str, object] | None = None) -> int:
        self._execute(template, params)
        return self._cursor.rowcount


class PostgresCoordinator(SqlCoordinator):
    """The coordination tables of the PostgreSQL database at *url*."""

    def __init__(
        self,
        url: str,
        *,
        owner: str,
        lease_seconds: float,
        max_connections: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        register_secret(password_of(url))
        super().__init__(
            owner=owner, lease_seconds=lease_seconds, dialect=DIALECT, where=redact_url(url)
        )
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"connect_timeout": max(1, int(connect_timeout / 2))},
            open=False,
            # A connection the server dropped (a restart, a failover) is replaced before use.
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            name="airbyte-fleet-coordination",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise CoordinationError(
                f"cannot reach the database at {self.where} ({self._why_not(url)}); check the "
                "URL and that the server is up"
            ) from None

    @staticmethod
    def _why_not(url: str) -> str:
        # The pool only says it timed out; one direct attempt says why.
        try:
            with psycopg.connect(url, connect_timeout=5):
                return "it answered only now"
        except psycopg.Error as exc:
            return _first_line(exc)

    def _transaction(self, doing: str, work: Callable[[Tx], T]) -> T:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                    return work(_PgTx(cursor, self.lease_seconds))
            except _RETRIED as exc:
                if attempt == _ATTEMPTS:
                    raise self._error(doing, exc) from exc
            except psycopg.Error as exc:
                raise self._error(doing, exc) from exc
        raise AssertionError("unreachable")

    def _error(self, doing: str, exc: psycopg.Error) -> CoordinationError:
        return CoordinationError(
            f"cannot {doing} in the database at {self.where} ({_first_line(exc)}); check that "
            "the server is up and reachable"
        )

    def close(self) -> None:
        self._pool.close()
