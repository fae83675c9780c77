"""What differs between the store's two databases, SQLite and PostgreSQL, and nothing else.

The SQL of the write path and the reads is written once, in SQLite's spelling (``?`` and ``?N``
placeholders, ``GREATEST`` for the larger of two values, ``TRUE``/``FALSE``, upserts with
``ON CONFLICT``); :meth:`Dialect.sql` turns it into the other database's. PostgreSQL's ``runs``
table has a ``rowid`` column of its own (an identity: the order rows were made, as SQLite's rowid),
so the listings' ``ORDER BY ... rowid`` reads the same on both. How a value is bound (a timestamp
as text or as a ``timestamptz``, a flag as 0/1 or a boolean), how a transaction begins and what a
database error is are the rest of a dialect.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

__all__ = ["SQLITE", "Conn", "Cursor", "Dialect", "utc_text"]


def utc_text(value: datetime) -> str:
    """*value* as SQLite's columns hold times: UTC ISO text with microseconds, which sorts like the
    instant it names."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat(timespec="microseconds")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class Cursor(Protocol):
    """What the store reads of a cursor (sqlite3's and psycopg's have it)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    """A connection as the store uses it: sqlite3's as it is, psycopg's through a thin adapter."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


_NUMBERED = re.compile(r"\?(\d*)")


def _dollars(text: str) -> str:
    """``?`` and ``?N`` as PostgreSQL's ``$N``: a bare ``?`` takes the next number."""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(1):
            return f"${match.group(1)}"
        count += 1
        return f"${count}"

    return _NUMBERED.sub(number, text)


def _sqlite(text: str) -> str:
    # SQLite's scalar max() is PostgreSQL's GREATEST (its max() is only an aggregate).
    return text.replace("GREATEST(", "MAX(")


@dataclass(frozen=True, eq=False)
class Dialect:
    """One database's spelling of the store's SQL and values.

    *begin_write* starts a write transaction (SQLite: take the write lock up front), *begin_read*
    a read that sees one moment; *no_limit* is what ``LIMIT ?`` takes for "all"; *fence* reads the
    lease row that a fenced run's writes depend on (see ``writer.py``), with *fence_params*.
    *arrays*: the writer sends a batch of rows as one statement over arrays (``unnest``) rather
    than an ``executemany``, which psycopg binds and sends row by row in Python (about four times
    the client CPU a row; sqlite3's runs in C and gains nothing).
    """

    name: str
    translate: Callable[[str], str]
    ts: Callable[[datetime], Any]
    flag: Callable[[bool], Any]
    begin_write: str
    begin_read: str
    no_limit: int | None
    errors: tuple[type[Exception], ...]
    conflict: type[Exception]
    fence: str
    fence_params: Callable[[str, str], tuple[Any, ...]]
    arrays: bool = False
    _cache: dict[str, str] = field(default_factory=dict, repr=False)

    def sql(self, text: str) -> str:
        """*text* (SQLite's spelling) in this database's."""
        found = self._cache.get(text)
        if found is None:
            found = self._cache[text] = self.translate(text)
        return found


SQLITE = Dialect(
    name="sqlite",
    translate=_sqlite,
    ts=utc_text,
    flag=int,
    begin_write="BEGIN IMMEDIATE",
    begin_read="BEGIN",
    no_limit=-1,
    errors=(sqlite3.Error,),
    conflict=sqlite3.IntegrityError,
    # The write lock BEGIN IMMEDIATE took keeps the row as read until the commit.
    fence="SELECT 1 FROM run_leases WHERE run_id = ? AND owner = ? AND lease_until > ?",
    fence_params=lambda run_id, owner: (run_id, owner, utc_text(datetime.now(UTC))),
)


def postgres(errors: tuple[type[Exception], ...], conflict: type[Exception]) -> Dialect:
    """PostgreSQL's dialect, given psycopg's error classes (imported by its only user)."""
    return Dialect(
        name="postgresql",
        translate=_dollars,
        ts=_utc,
        flag=bool,
        begin_write="BEGIN",
        begin_read="BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        no_limit=None,
        errors=errors,
        conflict=conflict,
        # The database's clock, the same for every replica. FOR SHARE: a process taking the
        # lease over waits for this transaction, so whatever it reads after taking it includes
        # what this one wrote.
        fence="SELECT 1 FROM run_leases WHERE run_id = $1 AND owner = $2 "
        "AND lease_until > now() FOR SHARE",
        fence_params=lambda run_id, owner: (run_id, owner),
        arrays=True,
    )
