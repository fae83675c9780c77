"""Typed events: what the engine says happened, and nothing about who listens.

Every event carries the run id, the time, and the seconds since the run started; sync events carry the
connection, job and attempt, and rows/bytes/error when known. Sinks (log, progress, result, journal,
metrics) subscribe to an :class:`EventBus`; the engine only calls :meth:`EventBus.emit`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.outcome import SkipCause
from airbyte_fleet.engine.stages import Stage
from airbyte_fleet.errors import FleetError

__all__ = [
    "Event",
    "EventBus",
    "EventSink",
    "GroupFinished",
    "GroupStarted",
    "PlannedSync",
    "RunFinished",
    "RunStarted",
    "RunTakenOverError",
    "StoreFailedError",
    "SyncAdopted",
    "SyncCancelled",
    "SyncDetached",
    "SyncEvent",
    "SyncFailed",
    "SyncRetrying",
    "SyncSkipped",
    "SyncStatusChanged",
    "SyncSucceeded",
    "SyncTimedOut",
    "SyncTriggered",
    "SyncTriggering",
    "SyncsPlanned",
]

log = get_logger("airbyte_fleet.events")


@dataclass(frozen=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"

    run_id: str
    at: datetime
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready mapping, ``event`` first, unknown values left out."""
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            if not f.metadata.get("log", True):
                continue
            value = getattr(self, f.name)
            if value is None or value == ():
                continue
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, float):
                value = round(value, 3)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class PlannedSync:
    """One selected connection, as the run needs it: only the fields the engine, the journal and
    ``--dry-run`` read (a full connection model per sync would cost memory for nothing). Pure data,
    like every event: the plan (``engine/plan.py``) makes it from Airbyte's connection."""

    connection_id: str
    connection_name: str = ""
    workspace_id: str = ""
    status: str = "active"
    tags: tuple[str, ...] = ()
    skip_reason: str | None = None
    # Which part of the selection picked it: "selection" or "group NAME" (shown by --dry-run).
    selected_by: str = "selection"

    @property
    def runnable(self) -> bool:
        return self.skip_reason is None


@dataclass(frozen=True, kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"

    total: int
    job_type: str
    max_concurrency: int
    wait: bool = True
    resumed: bool = False
    # Every selected connection, in plan order: sinks that must account for each one read it here.
    planned: tuple[PlannedSync, ...] = field(default=(), metadata={"log": False})
    # What a resumed run needs to carry on exactly as it started (the journal keeps them).
    options: dict[str, Any] = field(default_factory=dict, metadata={"log": False})
    selection: dict[str, Any] | None = field(default=None, metadata={"log": False})
    # The plan is still being read: more syncs follow, each part in a SyncsPlanned.
    planning: bool = False
    # A staged run's groups, each after the groups it waits for (engine/stages.py); a resume
    # reads them back from here.
    stages: tuple[Stage, ...] = field(default=(), metadata={"log": False})


@dataclass(frozen=True, kw_only=True)
class GroupStarted(Event):
    """A group of a staged run may start: every group it comes after has finished. With
    ``skip_reason`` its syncs are skipped instead (an upstream group did not succeed)."""

    kind: ClassVar[str] = "group_started"

    group: str
    after: tuple[str, ...] = ()
    # How many of its syncs it starts (or skips) now.
    syncs: int = 0
    skip_reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class GroupFinished(Event):
    """Every connection a group needs has a final state (or the run stopped first)."""

    kind: ClassVar[str] = "group_finished"

    group: str
    # succeeded, failed, skipped (its upstream did not succeed) or interrupted.
    outcome: str
    counts: dict[str, int] = field(default_factory=dict)
    skip_reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class SyncsPlanned(Event):
    """More of the run's plan (the run started with ``planning``): syncs after the ones already
    planned, in plan order. The last one has ``final``; its ``error`` says, when set, that the
    plan could not be read to its end (the run holds only the syncs planned so far)."""

    kind: ClassVar[str] = "syncs_planned"

    planned: tuple[PlannedSync, ...] = field(default=(), metadata={"log": False})
    # The run's number of syncs with these.
    total: int = 0
    final: bool = False
    # Parts of the selection that contributed nothing, known once the plan is complete.
    warnings: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"

    outcome: str
    counts: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    # Why the run stopped by itself, when it did (its store refused an event).
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class SyncEvent(Event):
    """Something that happened to one connection's sync."""

    connection_id: str
    connection_name: str = ""
    workspace_id: str = ""
    job_type: str = "sync"
    job_id: int | None = None
    attempt: int = 1
    status: str | None = None
    rows_synced: int | None = None
    bytes_synced: int | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class SyncTriggering(SyncEvent):
    """About to send ``POST /jobs``: journaled first, so a crash right after is never a blind spot."""

    kind: ClassVar[str] = "sync_triggering"

    # A staged run's sync: when its group started (the run's elapsed seconds). Until then it
    # waited for its upstream groups, from then on for a concurrency slot: a timeline draws only
    # the second as time the limiter held it back.
    ready_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class SyncTriggered(SyncEvent):
    kind: ClassVar[str] = "sync_triggered"


@dataclass(frozen=True, kw_only=True)
class SyncAdopted(SyncEvent):
    """The connection was already running a job, and we follow that one instead of starting another."""

    kind: ClassVar[str] = "sync_adopted"
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class SyncStatusChanged(SyncEvent):
    kind: ClassVar[str] = "sync_status_changed"

    old_status: str | None = None


@dataclass(frozen=True, kw_only=True)
class SyncRetrying(SyncEvent):
    """A finished-but-failed sync will be triggered again (``--retries``)."""

    kind: ClassVar[str] = "sync_retrying"
    wait_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SyncDetached(SyncEvent):
    """The run stopped and left this job running in Airbyte (``--on-interrupt detach``).

    Not final: a resumed run follows the job again."""

    kind: ClassVar[str] = "sync_detached"


@dataclass(frozen=True, kw_only=True)
class SyncSucceeded(SyncEvent):
    kind: ClassVar[str] = "sync_succeeded"


@dataclass(frozen=True, kw_only=True)
class SyncFailed(SyncEvent):
    """Airbyte reported failure, or we could not run the sync at all (``outcome`` says which)."""

    kind: ClassVar[str] = "sync_failed"
    outcome: str = "failed"


@dataclass(frozen=True, kw_only=True)
class SyncTimedOut(SyncEvent):
    kind: ClassVar[str] = "sync_timed_out"

    cancelled: bool = False


@dataclass(frozen=True, kw_only=True)
class SyncCancelled(SyncEvent):
    kind: ClassVar[str] = "sync_cancelled"


@dataclass(frozen=True, kw_only=True)
class SyncSkipped(SyncEvent):
    kind: ClassVar[str] = "sync_skipped"

    reason: str = ""
    outcome: str = "skipped"
    # Why it was skipped; None only in journals written before causes existed.
    cause: SkipCause | None = None


EventSink = Callable[[Event], None]


class StoreFailedError(FleetError):
    """The run's store (the bus's critical sink) refused an event, so the engine stopped the run.

    What happened then: nothing more was triggered (an intent the store did not record is never
    sent), jobs in flight were cancelled or left running by the run's interrupt policy
    (*action*), and the run's remaining events, ``run_finished`` last, reached every other sink
    (the result, the log) but not the store: a store that failed once may fail slowly (a lock
    timeout per write), and what it holds, the run as far as it got, unfinished, is what a later
    ``--resume`` reads correctly. So the result is complete, its outcome is ``failed`` and its
    ``error`` is this message. ``Engine.failure`` holds it once raised; ``Engine.run`` returns
    normally. *cause* is the store's own exception.
    """

    def __init__(self, run_id: str, event_kind: str, cause: Exception, action: str) -> None:
        self.run_id = run_id
        self.event_kind = event_kind
        self.cause = cause
        jobs = "cancelled" if action == "cancel" else "left running"
        super().__init__(
            f"the run's journal could not record {event_kind} ({cause}), so run {run_id} was "
            f"stopped: nothing more was triggered and jobs in flight were {jobs}, as the "
            f"result shows for each; fix the state directory (disk space, permissions, a lock "
            f"held by another process), then resume it with 'airbyte-fleet run --resume {run_id}'"
        )


class RunTakenOverError(FleetError):
    """The store says another process holds the run now (its lease passed on while this one
    was not looking): this process must stop at once without touching the run's jobs or its
    record, which are the new holder's. A store's fence raises it (a subclass of it)."""


class EventBus:
    """Delivers each event to every subscribed sink, in order.

    A failing sink never stops the run, except a *critical* one (the journal): once every other
    sink has had the event, its failure reaches the emitter, so that nothing is triggered that
    could not be written down first.
    """

    def __init__(
        self, sinks: list[EventSink] | None = None, *, critical: list[EventSink] | None = None
    ) -> None:
        self._sinks: list[tuple[EventSink, bool]] = [(s, True) for s in critical or []]
        self._sinks += [(s, False) for s in sinks or []]

    def subscribe(self, sink: EventSink, *, critical: bool = False) -> None:
        self._sinks.append((sink, critical))

    def emit(self, event: Event, *, best_effort: bool = False, critical: bool = True) -> None:
        """*best_effort*: report a critical sink's failure in the log instead of raising it.
        *critical* False: leave the critical sinks out (one of them failed the run already)."""
        refused: Exception | None = None
        for sink, is_critical in self._sinks:
            if is_critical and not critical:
                continue
            try:
                sink(event)
            except Exception as exc:
                if is_critical and not best_effort:
                    refused = refused or exc
                    continue
                log.error("sink_failed", sink=repr(sink), error=repr(exc), event_kind=event.kind)
        if refused is not None:
            raise refused

    def check(self) -> None:
        """Raise what a critical sink could not do in the background (a store's batch that its
        timer could not commit): the run may have nothing more to emit for a long while."""
        for sink, is_critical in self._sinks:
            check = getattr(sink, "check", None) if is_critical else None
            if check is not None:
                check()

    def emit_many(self, events: Sequence[Event]) -> None:
        """Several events at once, in order: a critical sink that can take a batch (a store's
        ``append``) records them together, durable before this returns (one transaction for many
        intents instead of one each); every other sink hears them one by one. A critical sink's
        refusal is raised once every other sink has had them."""
        refused: Exception | None = None
        for sink, is_critical in self._sinks:
            batch = getattr(sink, "append", None) if is_critical else None
            try:
                if batch is not None:
                    batch(events)
                else:
                    for event in events:
                        sink(event)
            except Exception as exc:
                if is_critical:
                    refused = refused or exc
                    continue
                log.error("sink_failed", sink=repr(sink), error=repr(exc), event_kind="batch")
        if refused is not None:
            raise refused
