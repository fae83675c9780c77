"""The SQLite run store: one file in the state dir, shared safely by several processes."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from airbyte_fleet._logging import get_logger
from airbyte_fleet.journal.base import StoreBase
from airbyte_fleet.journal.damage import Leftover, find_damage, leftover
from airbyte_fleet.journal.dialect import SQLITE, Conn
from airbyte_fleet.journal.schema import FILE_NAME, connect, damaged_sentence, journal_error
from airbyte_fleet.journal.store import JournalDamagedError, JournalError, NoJournalError
from airbyte_fleet.journal.writer import Fsync, Writer

__all__ = ["Journal"]

log = get_logger("airbyte_fleet.journal")

# The journal files this process has open, by path, with how many instances hold each.
_OPEN: dict[Path, int] = {}
_OPEN_LOCK = threading.Lock()


class _Link:
    """The writer's SQLite file: one connection for good, fsynced by ``PRAGMA synchronous``."""

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection, path: Path, *, fsync: Fsync) -> None:
        self.conn = conn
        self.where = f"the journal at {path}"
        self._synchronous = ""
        self._set_synchronous("FULL" if fsync == "always" else "NORMAL")

    def connection(self) -> sqlite3.Connection:
        return self.conn

    def _set_synchronous(self, mode: str) -> None:
        if mode != self._synchronous:
            self.conn.execute(f"PRAGMA synchronous={mode}")
            self._synchronous = mode

    def begin(self, conn: Conn, *, durable: bool) -> None:
        # Outside the transaction: SQLite takes the setting for the commits that follow.
        self._set_synchronous("FULL" if durable else "NORMAL")
        conn.execute("BEGIN IMMEDIATE")

    def abandon(self, conn: Conn) -> None:
        if conn.in_transaction:
            conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


class Journal(StoreBase):
    """A :class:`~airbyte_fleet.journal.RunStore` backed by SQLite (stdlib ``sqlite3``).

    Calls are serialised by a lock, so one instance may serve the event loop and a reader thread.
    Writes raise :class:`JournalError`; the caller decides whether to carry on without a journal.

    *fsync* chooses what survives a power cut (every mode survives a killed process): ``"always"``
    every durable commit, ``"triggers"`` (default) every trigger intent and all before it,
    ``"never"`` whatever the OS had written out. *batch_interval*: how long at most an event that
    may wait for a later commit (``sync_triggered``, a status, an outcome: see ``writer.py``)
    waits for one.

    *create* False: a reader's open, which never creates the state directory or the file (raises
    :class:`NoJournalError` when there is none) and is read-only where it cannot write.

    When the last process to use the file did not close it, opening checks it for damage
    (``damage.py``); what is found is in :attr:`damage` and logged, and the journal is still used.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        fsync: Fsync = "triggers",
        busy_timeout: float = 10.0,
        batch_interval: float = 1.0,
        create: bool = True,
    ) -> None:
        self.path = Path(state_dir) / FILE_NAME
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise NoJournalError(f"there is no journal in {self.path.parent}")
        self.damage: str | None = None
        with _OPEN_LOCK:
            # Another instance of this process checked the file when it opened it (and reading
            # the wal-index now would drop that instance's locks: see damage.py).
            key = self.path.resolve()
            before = leftover(self.path) if not _OPEN.get(key) else None

            def check(conn: sqlite3.Connection) -> None:
                assert before is not None
                self.damage = self._check(conn, before)

            conn = connect(
                self.path,
                busy_timeout=busy_timeout,
                create=create,
                first=check if before is not None else None,
            )
            _OPEN[key] = _OPEN.get(key, 0) + 1
        self._key = key
        try:
            link = _Link(conn, self.path, fsync=fsync)
            self._start(Writer(link, threading.RLock(), fsync=fsync, batch_interval=batch_interval))
        except BaseException:
            conn.close()
            self._forget()
            raise

    def _closed(self) -> None:
        self._forget()

    def _read_failed(self, exc: Exception) -> JournalError:
        assert isinstance(exc, sqlite3.Error)
        return journal_error(self.path, "read", exc)

    def _unreadable(self, exc: ValueError | TypeError) -> JournalError:
        return JournalDamagedError(damaged_sentence(self.path, exc))

    def _forget(self) -> None:
        with _OPEN_LOCK:
            left = _OPEN.get(self._key, 0) - 1
            if left > 0:
                _OPEN[self._key] = left
            else:
                _OPEN.pop(self._key, None)

    def _check(self, conn: sqlite3.Connection, before: Leftover) -> str | None:
        problems = find_damage(conn, self.path, before)
        if not problems:
            return None
        damage = "; ".join(problems)
        log.warning(
            "journal_damaged",
            path=str(self.path),
            damage=damage,
            note="a run resumed from this journal looks in Airbyte for a job of every sync the "
            "journal cannot account for before triggering it",
        )
        return damage
