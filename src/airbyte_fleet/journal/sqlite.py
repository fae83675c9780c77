"""The SQLite run store: one file in the state dir, shared safely by several processes."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

import structlog

from airbyte_fleet.engine.events import Event
from airbyte_fleet.journal import queries
from airbyte_fleet.journal.codec import EventDecodeError, UnknownEventKind
from airbyte_fleet.journal.schema import FILE_NAME, connect
from airbyte_fleet.journal.store import JournalError, RunRecord
from airbyte_fleet.journal.writer import Fsync, Writer

__all__ = ["Journal"]

log = structlog.get_logger("airbyte_fleet.journal")


class Journal:
    """A :class:`~airbyte_fleet.journal.RunStore` backed by SQLite (stdlib ``sqlite3``).

    Calls are serialised by a lock, so one instance may serve the event loop and a reader thread.
    Writes raise :class:`JournalError`; the caller decides whether to carry on without a journal.

    *fsync* chooses what survives a power cut (every mode survives a killed process): ``"always"``
    every durable commit, ``"triggers"`` (default) every trigger intent and all before it,
    ``"never"`` whatever the OS had written out.
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        fsync: Fsync = "triggers",
        busy_timeout: float = 10.0,
        batch_interval: float = 1.0,
    ) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path, busy_timeout=busy_timeout)
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
            raise
        # Stored events this instance skipped and already warned about: a follower polling the
        # tail of a run would otherwise repeat the warning at every poll.
        self._skips_told: set[tuple[str, int]] = set()

    # ----------------------------------------------------------------- writing

    def __call__(self, event: Event) -> None:
        self._writer.write(event)

    def append(self, events: Iterable[Event]) -> None:
        self._writer.append(events)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- reading

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._writer.lock:
            # A reader on this instance sees what it was told, batched or not.
            self._writer.flush()
            try:
                yield self._writer.conn
            except JournalError:
                raise
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal at {self.path}: {exc}") from exc

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
