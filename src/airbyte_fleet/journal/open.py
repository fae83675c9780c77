"""Which store a process uses: the SQLite file in the state dir, or the PostgreSQL database a URL
names. The one place that choice is made (``open_store``), with what the ``migrate`` command does
and what messages call the store."""

from __future__ import annotations

from pathlib import Path

from airbyte_fleet.journal.schema import FILE_NAME, SCHEMA_VERSION, connect, file_version
from airbyte_fleet.journal.sqlite import Journal
from airbyte_fleet.journal.store import JournalError, RunStore
from airbyte_fleet.journal.urls import redact_url

__all__ = ["migrate", "open_store", "store_location"]


def _url(database_url: str | None) -> str | None:
    return database_url.strip() if database_url and database_url.strip() else None


def open_store(*, database_url: str | None, state_dir: Path, create: bool = True) -> RunStore:
    """The store: :class:`Journal` in *state_dir* when *database_url* is None or empty, else a
    :class:`~airbyte_fleet.journal.PostgresStore`. *create* False never makes one (raises
    :class:`~airbyte_fleet.journal.NoJournalError` when there is none)."""
    url = _url(database_url)
    if url is None:
        return Journal(state_dir, create=create)
    # Imported here: a process keeping its runs in SQLite never loads psycopg.
    from airbyte_fleet.journal.postgres import PostgresStore

    return PostgresStore(url, create=create)


def store_location(database_url: str | None, state_dir: Path) -> str:
    """How messages name the store: the SQLite file's path, or the URL without its password."""
    url = _url(database_url)
    return str(Path(state_dir) / FILE_NAME) if url is None else redact_url(url)


def migrate(*, database_url: str | None, state_dir: Path) -> tuple[int, int]:
    """Bring the store's schema up to date (making the store if there is none); return its
    version before and after. Raises :class:`JournalError` for a store newer than this code."""
    url = _url(database_url)
    if url is None:
        path = Path(state_dir) / FILE_NAME
        before = file_version(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        connect(path, busy_timeout=10.0).close()
        return before, SCHEMA_VERSION
    import psycopg

    from airbyte_fleet.journal import pg_schema
    from airbyte_fleet.journal.postgres import connect as pg_connect
    from airbyte_fleet.journal.postgres import error_line

    where = redact_url(url)
    conn = pg_connect(url)
    try:
        before = pg_schema.apply(conn, where)
        return before, pg_schema.version(conn)
    except psycopg.Error as exc:
        raise JournalError(
            f"cannot migrate the run store at {where}: {error_line(exc, url)}"
        ) from exc
    finally:
        conn.close()
