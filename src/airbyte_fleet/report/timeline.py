"""A run's timeline: one bar per sync, in seconds since the run started, from its events.

Each bar says when the sync became ready (the run's start, the moment a later part of the plan
named it, or the start of the process that carried an interrupted run on), when its first trigger
intent was journaled (``sync_triggering``: the gap before it is the time the concurrency limiter
held the sync back), when its first job was triggered or adopted, when each retry was decided, and
when and how it ended. :class:`TimelineBuilder` is an event sink like the result builder, so the
CLI feeds it live and the store's readers feed it a journal (:func:`timeline_from_store`).

Events of kinds it does not know (a newer version's, another feature's) are passed over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from airbyte_fleet.engine.events import (
    Event,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncEvent,
    SyncRetrying,
    SyncsPlanned,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.outcome import final_outcome
from airbyte_fleet.journal import RunStore
from airbyte_fleet.runner.replay import replay_into

__all__ = ["Bar", "Timeline", "TimelineBuilder", "timeline", "timeline_from_store"]


@dataclass(slots=True)
class Bar:
    """One sync on the timeline; every time is seconds since the run's first start, None when
    it did not happen (a skipped sync is never triggered, an open one has no end yet)."""

    connection_id: str
    connection_name: str = ""
    # Plan order: the tie-break among syncs triggered at the same moment.
    index: int = 0
    ready_s: float = 0.0
    triggering_s: float | None = None
    started_s: float | None = None
    retries_s: list[float] = field(default_factory=list)
    end_s: float | None = None
    outcome: str | None = None
    adopted: bool = False

    @property
    def queued_s(self) -> float | None:
        """How long the limiter held the sync back before its first trigger."""
        if self.triggering_s is None:
            return None
        return max(0.0, self.triggering_s - self.ready_s)

    @property
    def order(self) -> tuple[float, int]:
        # Never-triggered syncs (skipped) sit where they ended.
        first = self.triggering_s if self.triggering_s is not None else self.end_s
        return (first if first is not None else float("inf"), self.index)


@dataclass(slots=True)
class Timeline:
    """The bars sorted by first trigger; ``span_s`` is how far the run's events reach (its
    finish, or its last event while it is open)."""

    run_id: str
    started_at: datetime | None
    span_s: float
    finished: bool
    bars: list[Bar]


class TimelineBuilder:
    """Subscribe it to a run's bus (or feed it a journal); :meth:`timeline` says what it heard."""

    def __init__(self) -> None:
        self._run_id = ""
        self._t0: datetime | None = None
        self._bars: dict[str, Bar] = {}
        # When the latest process of the run started: a sync first triggered after a resume was
        # not waiting for a slot while no process ran the run.
        self._restart_s = 0.0
        self._last_s = 0.0
        self._finished_s: float | None = None

    def _seconds(self, event: Event) -> float:
        if self._t0 is None:
            self._t0 = event.at
            self._run_id = event.run_id
        at = (event.at - self._t0).total_seconds()
        if at > self._last_s:
            self._last_s = at
        return at

    def _bar(self, connection_id: str, name: str, ready_s: float) -> Bar:
        bar = self._bars.get(connection_id)
        if bar is None:
            bar = Bar(connection_id, name, len(self._bars), ready_s)
            self._bars[connection_id] = bar
        return bar

    def __call__(self, event: Event) -> None:
        at = self._seconds(event)
        if isinstance(event, SyncEvent):
            self._sync(event, at)
        elif isinstance(event, RunStarted | SyncsPlanned):
            if isinstance(event, RunStarted):
                self._restart_s = at
                self._finished_s = None
            for planned in event.planned:
                self._bar(planned.connection_id, planned.connection_name, at)
        elif isinstance(event, RunFinished):
            self._finished_s = at

    def _sync(self, event: SyncEvent, at: float) -> None:
        bar = self._bar(event.connection_id, event.connection_name, self._restart_s)
        if event.connection_name:
            bar.connection_name = event.connection_name
        if isinstance(event, SyncTriggering | SyncTriggered | SyncAdopted):
            if bar.triggering_s is None:
                # First heard of after the run was carried on: it waited from the carrying on.
                bar.ready_s = max(bar.ready_s, self._restart_s)
                ready = event.ready_s if isinstance(event, SyncTriggering) else None
                if ready is not None:
                    # A staged run's sync waited for its upstream groups until its group
                    # started: only the time after that was the limiter's.
                    bar.ready_s = max(bar.ready_s, at - (event.elapsed_s - ready))
                bar.triggering_s = at
            if not isinstance(event, SyncTriggering) and bar.started_s is None:
                bar.started_s = at
                bar.adopted = isinstance(event, SyncAdopted)
            return
        if isinstance(event, SyncRetrying):
            bar.retries_s.append(at)
            return
        outcome = final_outcome(event)
        if outcome is not None:
            bar.end_s = at
            bar.outcome = outcome

    def timeline(self) -> Timeline:
        span = self._finished_s if self._finished_s is not None else self._last_s
        bars = sorted(self._bars.values(), key=lambda b: b.order)
        return Timeline(
            run_id=self._run_id,
            started_at=self._t0,
            span_s=span,
            finished=self._finished_s is not None,
            bars=bars,
        )


def timeline(events: Iterable[Event]) -> Timeline:
    """The timeline of a run's *events*, in the order they happened."""
    builder = TimelineBuilder()
    for event in events:
        builder(event)
    return builder.timeline()


def timeline_from_store(store: RunStore, run_id: str) -> Timeline | None:
    """The timeline of a stored run, read through the one replay path; None when the store has
    no start of it."""
    builder = TimelineBuilder()
    if replay_into(builder, store, run_id) is None:
        return None
    return builder.timeline()
