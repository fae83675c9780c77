"""The SQLite run store: one file in the state dir, shared safely by several processes."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.events import Event
from airbyte_fleet.journal import queries
from airbyte_fleet.journal.codec import EventDecodeError, UnknownEventKind
from airbyte_fleet.journal.damage import Leftover, find_damage, leftover
from airbyte_fleet.journal.schema import FILE_NAME, connect, damaged_sentence, journal_error
from airbyte_fleet.journal.store import JournalDamagedError, JournalError, NoJournalError, RunRecord
from airbyte_fleet.journal.writer import Fsync, Writer

__all__ = ["Journal"]

log = get_logger("airbyte_fleet.journal")

# The journal files this process has open, by path, with how many instances hold each.
_OPEN: dict[Path, int] = {}
_OPEN_LOCK = threading.Lock()


class Journal:
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
            self._writer = Writer(
                conn,
                threading.RLock(),
                path=self.path,
                fsync=fsync,
                batch_interval=batch_interval,
            )
        except BaseException:
            conn.close()
            self._forget()
            raise
        # Stored events this instance skipped and already warned about: a follower polling the
        # tail of a run would otherwise repeat the warning at every poll.
        self._skips_told: set[tuple[str, int]] = set()
        self._flush_failing = False

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

    # ----------------------------------------------------------------- writing

    def __call__(self, event: Event) -> None:
        self._writer.write(event)

    def append(self, events: Iterable[Event]) -> None:
        self._writer.append(events)

    def flush(self) -> None:
        self._writer.flush()

    def check(self) -> None:
        self._writer.check()

    def close(self) -> None:
        if self._writer.closed:
            return
        try:
            self._writer.close()
        finally:
            self._forget()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- reading

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._writer.lock:
            self._writer.check_open()
            # A reader on this instance sees what it was told, batched or not; but a disk that
            # refuses the batch must not take the reads down with it.
            try:
                self._writer.flush()
            except JournalError as exc:
                if not self._flush_failing:
                    log.warning("journal_flush_failed", error=str(exc), note="reading on")
                self._flush_failing = True
            else:
                self._flush_failing = False
            try:
                yield self._writer.conn
            except JournalError:
                raise
            except sqlite3.Error as exc:
                raise journal_error(self.path, "read", exc) from exc
            except (ValueError, TypeError) as exc:
                # A stored value that is not what this version wrote (bad JSON, a timestamp
                # that is not one): the file was changed behind the journal's back.
                raise JournalDamagedError(damaged_sentence(self.path, exc)) from exc

    def runs(self, *, limit: int = 20, offset: int = 0) -> list[RunRecord]:
        with self._reading() as conn:
            return queries.runs(conn, limit=limit, offset=offset)

    def run(self, run_id: str) -> RunRecord | None:
        with self._reading() as conn:
            return queries.run(conn, run_id)

    def last_run_id(self) -> str | None:
        with self._reading() as conn:
            return queries.last_run_id(conn)

    def unfinished_runs(self) -> list[str]:
        with self._reading() as conn:
            return queries.unfinished_runs(conn)

    def events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[tuple[int, Event]]:
        def skipped(seq: int, kind: str, why: EventDecodeError) -> None:
            if (run_id, seq) in self._skips_told:
                return
            self._skips_told.add((run_id, seq))
            if isinstance(why, UnknownEventKind):
                log.warning("journal_event_kind_unknown", run_id=run_id, seq=seq, kind=kind)
            else:
                log.warning("journal_event_unreadable", run_id=run_id, seq=seq, error=str(why))

        with self._reading() as conn:
            return queries.events(conn, run_id, after=after, limit=limit, on_skip=skipped)
