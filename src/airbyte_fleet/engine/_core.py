"""What every part of the engine shares: one sync's state, the run's clocks and the one way an event
is emitted. :class:`EngineCore` declares the state that :class:`~airbyte_fleet.engine.run.Engine`
sets up; the trigger and follow steps (``trigger.py``, ``follow.py``) are written against it, so each
concept of a run lives in its own file while one object carries the run.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from airbyte_fleet._caller import option, resume_hint
from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteClient, Job
from airbyte_fleet.engine.events import (
    Event,
    EventBus,
    PlannedSync,
    RunTakenOverError,
    StoreFailedError,
    SyncAdopted,
    SyncDetached,
    SyncEvent,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.hooks import TriggerHook
from airbyte_fleet.engine.options import RunOptions, StopMode
from airbyte_fleet.engine.outcome import final_outcome
from airbyte_fleet.engine.resume import ResumePoint
from airbyte_fleet.engine.watch import JobWatcher, jittered

__all__ = ["INTERRUPTED_BEFORE_TRIGGER", "EngineCore", "StopMode", "follows_again", "new_run_id"]


log = get_logger("airbyte_fleet.engine")

# How many times a trigger is tried again when Airbyte's answer leaves us unsure (and no job shows
# up when we look), or when it says "already running" but no running job can be found.
TRIGGER_TRIES = 4
# Jobs created this long before our trigger still count as "ours" when reconciling: server and
# local clocks are rarely further apart than this.
CLOCK_SKEW = timedelta(seconds=60)
MAX_BACKOFF = 600.0
# A credential that keeps being refused will not heal by itself within a sync's timeout.
MAX_AUTH_FAILURES = 5

# The reason shown for a sync the run was interrupted before triggering (its cause is
# ``interrupted``, which is what a resume reads).
INTERRUPTED_BEFORE_TRIGGER = "run interrupted before trigger"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


def follows_again(run_id: str, *, looks: bool = False) -> str:
    """How a job left running is followed again (said wherever one is): a resume of this run,
    or, for a caller that keeps no journal, a later run that adopts the job. *looks*: the job's
    id is unknown, so the resume first looks for it."""
    hint = resume_hint(run_id)
    if hint is None:
        return f"a later run with {option('if_running', 'adopt')} adopts it"
    return f"{hint} {'looks for it and follows it' if looks else 'follows it again'}"


@dataclass(eq=False, slots=True)
class Sync:
    """One connection's sync as the engine drives it: a small record, not a task. It waits for its
    concurrency slot in the feeder's queue and for its job in the watcher's table; a task exists for
    it only while a step runs (a trigger, a cancel, a retry's pause). Identity, not value, is what
    makes two of them equal: the concurrency limiter holds its slot on the record's behalf."""

    item: PlannedSync
    attempt: int = 0
    first_trigger: float | None = None
    status: str | None = None
    # Statuses outside the spec already logged for this sync (None: none yet).
    unknown_logged: set[str] | None = None
    # Jobs this run followed for the connection: the hook never hands one of them back.
    seen: tuple[int, ...] = ()
    # What a stop that cuts the sync's task short must report (kept by EngineCore._emit): the
    # job it follows while that job is not known to have ended, or an intent whose trigger is
    # unanswered (a job may exist).
    job_id: int | None = None
    triggering: bool = False
    # The current job was adopted (Airbyte's 409, the hook, a resume) rather than triggered,
    # and whether the trigger hook handed it over (another run of this tool follows it).
    adopted: bool = False
    via_hook: bool = False
    # The current job was running before this tool triggered anything for it (Airbyte's 409:
    # its scheduler, the UI, an earlier --no-wait): it is cancelled only with cancel_adopted.
    started_elsewhere: bool = False
    # A SyncDetached said the job is left running: nothing more to report for it.
    left_running: bool = False
    # The sync has ended by itself (not cut short by an abort).
    done: bool = False
    # The job the watcher follows for it (None while no job is followed).
    followed: Job | None = None
    # A staged run's sync: the run's elapsed seconds when its group started (see SyncTriggering).
    ready_s: float | None = None

    @property
    def connection_id(self) -> str:
        return self.item.connection_id


class Settled(Exception):
    """The sync's final event is already emitted; unwind to the task's end."""


def now() -> datetime:
    return datetime.now(UTC)


class EngineCore:
    """The state of one run and the helpers every step uses."""

    client: AirbyteClient
    options: RunOptions
    bus: EventBus
    run_id: str
    _hook: TriggerHook
    _clock: Callable[[], float]
    _rng: random.Random
    _stop: anyio.Event
    _stop_mode: StopMode
    _grace: float
    _watcher: JobWatcher
    _trigger_slots: anyio.CapacityLimiter
    _started: float
    _run_deadline: float | None
    _interrupted: bool
    _letting_go: bool
    _stoppable: set[anyio.CancelScope]
    _on_interrupt: StopMode
    failure: StoreFailedError | None
    _outcomes: dict[str, str]
    _with_job: set[str]
    _resume: dict[str, ResumePoint]

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self._letting_go

    def _begin_stop(self, mode: StopMode) -> None:
        self._stop_mode = mode
        self._interrupted = True
        self._stop.set()
        for scope in self._stoppable:
            scope.cancel()

    @contextlib.contextmanager
    def _cut_on_stop(self) -> Iterator[anyio.CancelScope]:
        """A wait on Airbyte (a status read and its retries) that a stop cancels at once."""
        with anyio.CancelScope() as scope:
            self._stoppable.add(scope)
            if self.stopping:
                scope.cancel()
            try:
                yield scope
            finally:
                self._stoppable.discard(scope)

    def _sync_deadline(self, sync: Sync) -> float:
        start = sync.first_trigger if sync.first_trigger is not None else self._clock()
        deadline = start + self.options.timeout
        if self._run_deadline is not None:
            deadline = min(deadline, self._run_deadline)
        return deadline

    def _until(self, deadline: float | None) -> float:
        return float("inf") if deadline is None else max(0.0, deadline - self._clock())

    def _backoff(self, attempt: int) -> float:
        base = self.options.retry_backoff * (2 ** max(0, attempt - 1))
        return jittered(min(base, MAX_BACKOFF), self._rng, spread=0.1)

    async def _pause(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._stop.wait()

    def _elapsed(self) -> float:
        return self._clock() - self._started

    def _emit(
        self,
        kind: type[SyncEvent],
        sync: Sync,
        *,
        job: Job | None = None,
        job_id: int | None = None,
        best_effort: bool = False,
        **extra: Any,
    ) -> None:
        """Emit a sync event. *job_id* names a job known only by its id (no fresh read of it)."""
        if self._letting_go:
            return
        event = self._sync_event(kind, sync, job=job, job_id=job_id, **extra)
        final = final_outcome(event)
        if final is not None:
            self._outcomes[sync.connection_id] = final
        if event.job_id is not None:
            self._with_job.add(sync.connection_id)
        self._publish(event, best_effort=best_effort)

    def _sync_event(
        self,
        kind: type[SyncEvent],
        sync: Sync,
        *,
        job: Job | None = None,
        job_id: int | None = None,
        **extra: Any,
    ) -> SyncEvent:
        """The event, with the sync's state updated for it (what a cut-short stop reports)."""
        conn = sync.item
        if job is not None:
            sync.status = job.status
            job_id = job.job_id
        event = kind(
            run_id=self.run_id,
            at=now(),
            elapsed_s=self._elapsed(),
            connection_id=conn.connection_id,
            connection_name=conn.connection_name,
            workspace_id=conn.workspace_id,
            job_type=self.options.job_type,
            job_id=job_id,
            attempt=max(sync.attempt, 1),
            status=job.status if job is not None else None,
            rows_synced=job.rows_synced if job is not None else None,
            bytes_synced=job.bytes_synced if job is not None else None,
            **extra,
        )
        self._track(sync, event, job)
        return event

    @staticmethod
    def _track(sync: Sync, event: SyncEvent, job: Job | None) -> None:
        if isinstance(event, SyncTriggering):
            sync.triggering, sync.job_id, sync.adopted = True, None, False
        elif isinstance(event, SyncDetached):
            sync.left_running = True
        if job is not None:
            sync.triggering = False
            sync.job_id = None if job.is_terminal else job.job_id
            if isinstance(event, SyncTriggered | SyncAdopted):
                sync.adopted = isinstance(event, SyncAdopted)

    def _publish(self, event: Event, *, best_effort: bool = False) -> None:
        """Hand *event* to every sink. The store (the critical sink) refusing it stops the run
        (:meth:`_store_failed`); only a refused intent is raised to the emitter, so that its
        trigger is never sent. From then on the store is left out (see StoreFailedError) while
        the result and the log still hear how the run ends."""
        gate = isinstance(event, SyncTriggering)
        if self.failure is not None:
            if gate:
                raise self.failure
            self.bus.emit(event, critical=False)
            return
        try:
            self.bus.emit(event, best_effort=best_effort)
        except Exception as exc:
            self._store_failed(exc, event.kind)
            if gate:
                raise

    def _publish_many(self, events: list[Event]) -> None:
        """Several intents at once: the store records them together (one transaction, durable
        before this returns) or refuses them all, and then none of their triggers is sent."""
        if self.failure is not None:
            raise self.failure
        try:
            self.bus.emit_many(events)
        except Exception as exc:
            self._store_failed(exc, events[0].kind)
            raise

    def _store_failed(self, exc: Exception, kind: str) -> None:
        if self.failure is not None:
            return
        taken_over = isinstance(exc, RunTakenOverError)
        action: StopMode = "detach" if taken_over else self._on_interrupt
        self.failure = StoreFailedError(self.run_id, kind, exc, action)
        self.failure.__cause__ = exc
        log.error(
            "store_failed", run_id=self.run_id, event_kind=kind, error=str(exc), action=action
        )
        if taken_over:
            # The jobs and the record are the new holder's: cancelling or reporting anything
            # more would fight it.
            self.let_go()
        else:
            self._begin_stop(action)

    def let_go(self) -> None:
        raise NotImplementedError
