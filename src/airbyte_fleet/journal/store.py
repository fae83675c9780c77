"""The run store: what the runner, the CLI and the worker may ask of wherever runs are kept.

:class:`RunStore` is the seam both backends implement: :class:`~airbyte_fleet.journal.Journal`
(SQLite, one file in the state dir) and :class:`~airbyte_fleet.journal.PostgresStore` (one
database shared by several processes and machines). Everything above the store speaks only
of events in and :class:`RunRecord` / events out, never of SQL.

What a store promises its writers (the write-ahead promise: nothing is triggered that is not
journaled): ``run_started``, ``syncs_planned`` (a later part of the run's plan), every
``sync_triggering`` (the intent) and ``run_finished`` are durable before the call returns, so they
survive the process being killed at any moment; a trigger the store cannot record raises, and the
engine then does not send it. ``append`` makes a whole batch
durable (one transaction for a few hundred intents) or raises. Every other sync event
(``sync_triggered``, ``sync_adopted``, status changes, retries, final outcomes) may wait and be
made durable with the next intent or ``run_finished``, by a timer (about a second), and always by
``flush()`` and ``close()``; events are kept in the order they came. A crash can therefore lose a
tail of those, and a resumer learns each again from Airbyte: a sync whose last durable event is
its intent is an ``intent`` (:attr:`SyncRecord.state`), whose job the resumer looks for in the
connection's jobs; a job in flight is read. A batched write that fails is kept and tried again,
and the failure reaches the caller of the next write, ``flush()`` or ``run_finished``.

A run may be *fenced* (:meth:`RunStore.fence`) to the process that holds its lease: from then
on nothing of it is written unless, in the same transaction, the lease is still that process's;
otherwise the write raises :class:`LeaseLostError` and the process must stop the run (another one
carries it on).

An event that states again what the store holds (a resumer re-reporting a final outcome, a start
or finish written twice) is not recorded twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Self

from airbyte_fleet.engine.events import Event, PlannedSync, RunTakenOverError
from airbyte_fleet.engine.outcome import SkipCause
from airbyte_fleet.engine.resume import SyncState

__all__ = [
    "JournalDamagedError",
    "JournalError",
    "LeaseLostError",
    "NoJournalError",
    "RunRecord",
    "RunStore",
    "SyncRecord",
]


class JournalError(sqlite3.Error):
    """The store could not be read or written (the cause is chained).

    A :class:`sqlite3.Error`, so code that already handles database errors handles this one too.
    """


class JournalDamagedError(JournalError):
    """What the store holds cannot be read: the file is damaged, or is not a journal at all.

    Its message is one sentence naming the file and what to do.
    """


class NoJournalError(JournalError):
    """There is no journal where one was to be read (and reading never creates one)."""


class LeaseLostError(JournalError, RunTakenOverError):
    """A fenced run's lease is not this process's any more: nothing of the write was recorded,
    and nothing more of the run will be. ``run_id`` names the run. The engine lets such a run go
    (a :class:`~airbyte_fleet.engine.events.RunTakenOverError`): its jobs are the new holder's."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is now held by another process; this one stops")
        self.run_id = run_id


@dataclass(frozen=True)
class SyncRecord:
    """One connection's sync in a run, as far as the store knows.

    ``intent_at`` is when the current attempt's trigger was first recorded (a new attempt's intent
    replaces it), so a resumer knows since when a job could be ours; ``triggered_at`` is when the
    sync's first job was triggered or adopted, so a resumed run can count the sync's timeout from
    it, as the first process did. ``cause`` says why a skipped sync was skipped (None for other
    outcomes, and for skips recorded before causes existed).
    """

    connection_id: str
    connection_name: str = ""
    workspace_id: str = ""
    attempt: int = 0
    job_id: int | None = None
    status: str | None = None
    outcome: str | None = None
    error: str | None = None
    cause: SkipCause | None = None
    intent_at: datetime | None = None
    triggered_at: datetime | None = None
    finished_at: datetime | None = None
    rows_synced: int | None = None
    bytes_synced: int | None = None

    @property
    def state(self) -> SyncState:
        """``intent`` means a ``POST /jobs`` may have been sent whose answer was never recorded
        (or was, in an event a crash lost before it was committed): the resumer must look for
        that job in Airbyte, never trigger blindly."""
        if self.outcome is not None:
            return "final"
        if self.job_id is not None:
            return "in_flight"
        if self.intent_at is not None:
            return "intent"
        return "untouched"


@dataclass(frozen=True)
class RunRecord:
    """What the store keeps of one run.

    ``outcome`` is ``"running"`` until the run's last start has a ``run_finished``. ``counts`` has
    every outcome (zero when none), plus ``pending`` for syncs still open in an unfinished run.
    ``planned`` and ``syncs`` are in plan order; a listing (:meth:`RunStore.runs`) leaves both
    empty, :meth:`RunStore.run` fills them.
    """

    run_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    job_type: str
    total: int
    counts: dict[str, int]
    wait: bool = True
    max_concurrency: int | None = None
    interrupted: bool = False
    resumed_at: datetime | None = None
    # What the run started with (the first start's, when resumed): resume carries on with them.
    options: dict[str, Any] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    # Whether the run's plan was read to its end; False: a resume plans its selection again and
    # adds the connections ``planned`` does not hold.
    planning_complete: bool = True
    planned: list[PlannedSync] = field(default_factory=list)
    syncs: dict[str, SyncRecord] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The run as one row of a listing (``airbyte-fleet runs --output json``)."""
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "outcome": self.outcome,
            "counts": dict(self.counts),
            "total": self.total,
            "job_type": self.job_type,
        }


class RunStore(Protocol):
    """Where runs are kept: an event sink for the run's bus, and the reads that list, show,
    follow and resume runs. Calls may come from several threads; failures raise
    :class:`JournalError`, and the caller decides whether to carry on without a store.

    ``damage`` says what the store found wrong with itself when it was opened (None: nothing): a
    damaged store may have lost events it once acknowledged, so a run resumed from it must not
    take a sync it shows as untouched for one that was never triggered.
    """

    damage: str | None

    def __call__(self, event: Event) -> None:
        """Record one event (durable on return for a start, an intent or a finish; see above)."""

    def append(self, events: Iterable[Event]) -> None:
        """Record *events* together: all of them durable before this returns, or none."""

    def flush(self) -> None:
        """Make every batched event durable now."""

    def fence(self, run_id: str, owner: str | None) -> None:
        """From now on write *run_id*'s events only in a transaction that finds *owner* holding
        the run's live lease (``run_leases``); else write none of it and raise
        :class:`LeaseLostError`, then and for every later event of the run. None: no fence."""

    def check(self) -> None:
        """Raise, at once and without waiting for the disk, why events that wait could not be
        made durable in the background (None raised: they are fine, or none wait)."""

    def close(self) -> None:
        """Flush and let go of the store; safe to call twice."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def runs(self, *, limit: int = 20, offset: int = 0) -> list[RunRecord]:
        """Runs newest first (by first start), without their syncs."""

    def run(self, run_id: str) -> RunRecord | None:
        """The run with every sync, read at one moment; None when the store has no such run."""

    def last_run_id(self) -> str | None:
        """The run started most recently (by its first start), finished or not."""

    def unfinished_runs(self) -> list[str]:
        """Runs whose last start has no ``run_finished`` after it, oldest first."""

    def events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[tuple[int, Event]]:
        """``(seq, event)`` pairs with ``seq > after`` in order, at most *limit* of them; fewer
        means nothing more is stored yet. Pass the last seq back as *after* to page, or to follow
        a run still being written. Events of a kind this version does not know, or that cannot be
        decoded, are skipped with a warning."""
