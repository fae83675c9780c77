"""The one way to open the coordinator: the SQLite journal file, or PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path

from airbyte_fleet.coordination.protocol import CoordinationError, Coordinator, new_owner
from airbyte_fleet.journal import JournalError, migrate, store_location

__all__ = ["open_coordinator"]


def open_coordinator(
    *,
    database_url: str | None,
    state_dir: Path,
    lease_seconds: float = 30.0,
    owner: str | None = None,
) -> Coordinator:
    """The coordinator of the run store: PostgreSQL at *database_url*, else the SQLite journal in
    *state_dir*. The schema is brought up to date first. *owner* defaults to a new id for this
    process instance."""
    url = (database_url or "").strip() or None
    _migrate(url, Path(state_dir))
    who = owner or new_owner()
    if url is None:
        from airbyte_fleet.coordination.sqlite import SqliteCoordinator

        return SqliteCoordinator(Path(state_dir), owner=who, lease_seconds=lease_seconds)
    # psycopg is loaded only by those who use PostgreSQL.
    from airbyte_fleet.coordination.postgres import PostgresCoordinator

    return PostgresCoordinator(url, owner=who, lease_seconds=lease_seconds)


def _migrate(url: str | None, state_dir: Path) -> None:
    try:
        migrate(database_url=url, state_dir=state_dir)
    except JournalError as exc:
        raise CoordinationError(str(exc)) from exc
    except OSError as exc:
        where = store_location(url, state_dir)
        raise CoordinationError(
            f"cannot open the run store at {where} ({exc.strerror or exc}); pass --state-dir "
            "with a folder this process may write"
        ) from exc
