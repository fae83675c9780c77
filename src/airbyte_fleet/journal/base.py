"""What both stores share above their database: the RunStore calls, each read under the writer's
lock after what waits is flushed, and how a reader tells of events it skips."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Self

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.events import Event
from airbyte_fleet.journal import queries
from airbyte_fleet.journal.codec import EventDecodeError, UnknownEventKind
from airbyte_fleet.journal.dialect import Conn
from airbyte_fleet.journal.store import JournalError, RunRecord
from airbyte_fleet.journal.writer import Writer

__all__ = ["StoreBase"]

log = get_logger("airbyte_fleet.journal")


class StoreBase:
    """A :class:`~airbyte_fleet.journal.RunStore` over a :class:`Writer`; a backend says how its
    database's failures read (:meth:`_read_failed`, :meth:`_unreadable`) and what closing adds."""

    damage: str | None = None
    _writer: Writer

    def _start(self, writer: Writer) -> None:
        self._writer = writer
        # Stored events this instance skipped and already warned about: a follower polling the
        # tail of a run would otherwise repeat the warning at every poll.
        self._skips_told: set[tuple[str, int]] = set()
        self._flush_failing = False

    def _read_failed(self, exc: Exception) -> JournalError:
        """The database refused a read."""
        raise NotImplementedError

    def _unreadable(self, exc: ValueError | TypeError) -> JournalError:
        """A stored value is not what this version wrote."""
        raise NotImplementedError

    def _closed(self) -> None:
        """Called once the writer let go."""

    # ----------------------------------------------------------------- writing

    def __call__(self, event: Event) -> None:
        self._writer.write(event)

    def append(self, events: Iterable[Event]) -> None:
        self._writer.append(events)

    def flush(self) -> None:
        self._writer.flush()

    def check(self) -> None:
        self._writer.check()

    def fence(self, run_id: str, owner: str | None) -> None:
        self._writer.fence(run_id, owner)

    def close(self) -> None:
        if self._writer.closed:
            return
        try:
            self._writer.close()
        finally:
            self._closed()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- reading

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Conn]:
        writer = self._writer
        with writer.lock:
            writer.check_open()
            # A reader on this instance sees what it was told, batched or not; but a database
            # that refuses the batch must not take the reads down with it.
            try:
                writer.flush()
            except JournalError as exc:
                if not self._flush_failing:
                    log.warning("journal_flush_failed", error=str(exc), note="reading on")
                self._flush_failing = True
            else:
                self._flush_failing = False
            try:
                yield writer.conn
            except JournalError:
                raise
            except writer.dialect.errors as exc:
                raise self._read_failed(exc) from exc
            except (ValueError, TypeError) as exc:
                # A stored value that is not what this version wrote (bad JSON, a timestamp
                # that is not one): the data was changed behind the store's back.
                raise self._unreadable(exc) from exc

    def runs(self, *, limit: int = 20, offset: int = 0) -> list[RunRecord]:
        with self._reading() as conn:
            return queries.runs(conn, self._writer.dialect, limit=limit, offset=offset)

    def run(self, run_id: str) -> RunRecord | None:
        with self._reading() as conn:
            return queries.run(conn, self._writer.dialect, run_id)

    def last_run_id(self) -> str | None:
        with self._reading() as conn:
            return queries.last_run_id(conn, self._writer.dialect)

    def unfinished_runs(self) -> list[str]:
        with self._reading() as conn:
            return queries.unfinished_runs(conn, self._writer.dialect)

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
            return queries.events(
                conn, self._writer.dialect, run_id, after=after, limit=limit, on_skip=skipped
            )
