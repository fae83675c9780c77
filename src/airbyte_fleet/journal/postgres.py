"""The PostgreSQL run store: one database that several processes and machines share.

The same write path and reads as SQLite's (``writer.py``, ``queries.py``) through psycopg 3's
synchronous API: the store is called inline by the event bus, as sqlite3 is. One connection, in
autocommit (the writer begins and commits its own transactions), serves writes and reads under the
writer's lock. A database that cannot be reached fails a call within seconds (a connect timeout,
a statement timeout, TCP keepalives) rather than hanging the run; a connection that broke is made
again on the next call, so a server restarted mid-run costs the writes that failed while it was
away (each raised, its batch kept) and nothing after.

A URL may carry a password: messages name the database by :func:`redact_url`'s form, and the
password is registered with ``_redact`` so no log line shows it either.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.types.array import ListBinaryDumper

from airbyte_fleet._redact import register_secret
from airbyte_fleet.journal import pg_schema
from airbyte_fleet.journal.base import StoreBase
from airbyte_fleet.journal.dialect import Conn, Cursor, postgres
from airbyte_fleet.journal.store import JournalDamagedError, JournalError, NoJournalError
from airbyte_fleet.journal.urls import check_url, password_of, redact_url
from airbyte_fleet.journal.writer import Fsync, Writer

__all__ = ["POSTGRES", "PostgresStore", "connect", "error_line"]

POSTGRES = postgres((psycopg.Error,), psycopg.errors.UniqueViolation)

# Connection settings the caller's URL has not set: how long a database that cannot be reached
# may hold a call up. tcp_user_timeout (ms) fails a write the network stopped acknowledging;
# keepalives find a peer that went away while the connection idled.
_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "3",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    "application_name": "airbyte-fleet",
}


def error_line(exc: BaseException, url: str) -> str:
    """What psycopg said, on one line, without the password of *url*."""
    return _first_line(exc, password_of(url))


def _first_line(exc: BaseException, password: str | None) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.replace(password, "***") if password else line


def connect(url: str, *, timeout: float = 8.0) -> psycopg.Connection[Any]:
    """A connection to *url* in autocommit, taking ``$N`` placeholders, reading times in UTC,
    failing a lock wait after *timeout* seconds and any statement after a quarter more.

    Raises :class:`JournalError` naming the database without its password.
    """
    url = check_url(url)
    password = password_of(url)
    register_secret(password)
    where = redact_url(url)
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise JournalError(
            f"the database URL {where} cannot be read ({_first_line(exc, password)}); "
            "give one like postgresql://USER:PASSWORD@HOST:5432/DATABASE"
        ) from None
    for key, value in _DEFAULTS.items():
        params.setdefault(key, value)
    try:
        conn = psycopg.connect(autocommit=True, cursor_factory=psycopg.RawCursor, **params)
    except psycopg.Error as exc:
        raise JournalError(
            f"cannot connect to the run store at {where}: {_first_line(exc, password)}"
        ) from exc
    millis = max(1, int(timeout * 1000))
    try:
        conn.execute(
            "SELECT set_config('TimeZone', 'UTC', false), set_config('lock_timeout', $1, false), "
            # A statement gets more than a lock wait, so that a lock held too long is named so.
            "set_config('statement_timeout', $2, false), "
            # A process stopped inside a transaction must not hold its locks for long.
            "set_config('idle_in_transaction_session_timeout', $3, false)",
            (str(millis), str(millis * 5 // 4), str(max(60_000, 6 * millis))),
        )
    except psycopg.Error as exc:
        conn.close()
        raise JournalError(
            f"cannot set up the connection to the run store at {where}: "
            f"{_first_line(exc, password)}"
        ) from exc
    return conn


class _Conn:
    """psycopg's connection as the store's :class:`Conn` (sqlite3's shape)."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        # Lists are the writer's batches as arrays (Dialect.arrays), every statement casting them.
        # In binary they cost a copy a value; as text, a regex escapes each one in Python, which
        # made a batch dearer than the executemany it replaces.
        raw.adapters.register_dumper(list, ListBinaryDumper)

    @property
    def in_transaction(self) -> bool:
        status = self.raw.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        return self.raw.execute(sql, parameters or None)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        cursor = self.raw.cursor()
        cursor.executemany(sql, parameters)
        return cursor


class _Link:
    """The writer's database: a connection, made again on the next call after one broke."""

    dialect = POSTGRES

    def __init__(self, url: str, *, timeout: float, conn: psycopg.Connection[Any]) -> None:
        self._url = url
        self._timeout = timeout
        self._conn: _Conn | None = _Conn(conn)
        self.where = f"the run store at {redact_url(url)}"

    def connection(self) -> _Conn:
        conn = self._conn
        if conn is None or conn.raw.closed or conn.raw.broken:
            if conn is not None:
                conn.raw.close()
            self._conn = None
            conn = self._conn = _Conn(connect(self._url, timeout=self._timeout))
        return conn

    def begin(self, conn: Conn, *, durable: bool) -> None:
        conn.execute("BEGIN")
        if not durable:
            # The commit returns before the server's WAL reaches its disk: a crash of this
            # process loses nothing by it, a crash of the server the tail (see writer.py).
            conn.execute("SET LOCAL synchronous_commit TO OFF")

    def abandon(self, conn: Conn) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            # Cannot even roll back: start again on a new connection next time.
            if self._conn is not None:
                self._conn.raw.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.raw.close()
            self._conn = None


class PostgresStore(StoreBase):
    """A :class:`~airbyte_fleet.journal.RunStore` in a PostgreSQL database, with the SQLite
    :class:`~airbyte_fleet.journal.Journal`'s semantics (``store.py``); ``damage`` is always None
    (the server keeps its own data whole).

    *create* True brings the database's tables up to date first (under a lock: replicas starting
    together migrate once); False is a reader's open, which raises :class:`NoJournalError` for
    a database that has no store yet. *timeout*: how long a write waits for a lock another holds
    before the call fails (any statement: a quarter more, 10 s by default). *fsync* as the Journal's (see ``writer.py``).
    """

    def __init__(
        self,
        url: str,
        *,
        batch_interval: float = 1.0,
        create: bool = True,
        timeout: float = 8.0,
        fsync: Fsync = "triggers",
    ) -> None:
        url = check_url(url)
        self.location = redact_url(url)
        self._password = password_of(url)
        conn = connect(url, timeout=timeout)
        try:
            found = pg_schema.version(conn)
            if found == 0 and not create:
                raise NoJournalError(f"there is no run store in the database at {self.location}")
            pg_schema.apply(conn, self.location)
        except psycopg.Error as exc:
            conn.close()
            raise JournalError(
                f"cannot open the run store at {self.location}: {_first_line(exc, self._password)}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        link = _Link(url, timeout=timeout, conn=conn)
        self._start(Writer(link, threading.RLock(), fsync=fsync, batch_interval=batch_interval))

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    def _read_failed(self, exc: Exception) -> JournalError:
        return JournalError(
            f"cannot read the run store at {self.location}: {_first_line(exc, self._password)}"
        )

    def _unreadable(self, exc: ValueError | TypeError) -> JournalError:
        return JournalDamagedError(
            f"The run store at {self.location} holds a value this airbyte-fleet cannot read "
            f"({exc}): it was changed outside airbyte-fleet; restore the database from a backup, "
            "or pass --database-url with another database."
        )
