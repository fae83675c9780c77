"""Fan out: trigger every planned sync under a concurrency limit, follow each job to its end.

Each connection gets one task. A task holds a slot of the capacity limiter from its trigger until its
job ends (or, with ``wait=False``, until the trigger is answered), so the next connection is triggered
the moment a slot frees. All the engine knows is the client, the plan, the options and an event bus.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import anyio
import structlog

from airbyte_fleet.api import (
    AirbyteClient,
    AirbyteError,
    AlreadyRunningError,
    InactiveConnectionError,
    Job,
    JobStatus,
    NotFoundError,
    TransportError,
    TriggerOutcomeUnknownError,
)
from airbyte_fleet.engine.events import (
    EventBus,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncCancelled,
    SyncDetached,
    SyncEvent,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTimedOut,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.hooks import Adopt, ClaimError, NoHook, Skip, TriggerHook
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.outcome import final_outcome, run_outcome, unsettled_outcome
from airbyte_fleet.engine.plan import Plan
from airbyte_fleet.engine.watch import BatchedWatcher, JobWatcher, PerJobWatcher, jittered

__all__ = [
    "INTERRUPTED_BEFORE_TRIGGER",
    "Engine",
    "ResumePoint",
    "StopMode",
    "new_run_id",
]

log = structlog.get_logger("airbyte_fleet.engine")

StopMode = Literal["cancel", "detach"]

# How many times a trigger is tried again when Airbyte's answer leaves us unsure (and no job shows
# up when we look), or when it says "already running" but no running job can be found.
TRIGGER_TRIES = 4
# Jobs created this long before our trigger still count as "ours" when reconciling: server and
# local clocks are rarely further apart than this.
CLOCK_SKEW = timedelta(seconds=60)
MAX_BACKOFF = 600.0
# A credential that keeps being refused will not heal by itself within a sync's timeout.
MAX_AUTH_FAILURES = 5
# With this many syncs or fewer, one GET per job costs no more than one list per workspace.
AUTO_BATCH_ABOVE = 5


# The reason a sync that was never triggered carries when its run is interrupted: a resumed run
# triggers such syncs after all.
INTERRUPTED_BEFORE_TRIGGER = "run interrupted before trigger"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class ResumePoint:
    """Where a connection's sync stood when an earlier process running this run stopped."""

    state: Literal["untouched", "intent", "in_flight", "final"]
    attempt: int = 0
    job_id: int | None = None
    outcome: str | None = None
    intent_at: datetime | None = None
    triggered_at: datetime | None = None


@dataclass
class _Sync:
    item: PlannedSync
    attempt: int = 0
    first_trigger: float | None = None
    status: str | None = None
    unknown_logged: set[str] = field(default_factory=set)
    # Jobs this run followed for the connection: the hook never hands one of them back.
    seen: set[int] = field(default_factory=set)

    @property
    def connection_id(self) -> str:
        return self.item.connection_id


class Engine:
    """Runs one plan once. Create a new Engine per run."""

    def __init__(
        self,
        client: AirbyteClient,
        options: RunOptions,
        bus: EventBus,
        *,
        run_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        watcher: Callable[[anyio.Event], JobWatcher] | None = None,
        grace: float = 30.0,
        hook: TriggerHook | None = None,
    ) -> None:
        self.client = client
        self._hook: TriggerHook = hook or NoHook()
        self.options = options
        self.bus = bus
        self.run_id = run_id or new_run_id()
        self._clock = clock
        self._rng = rng or random.Random()
        self._stop = anyio.Event()
        self._stop_mode: StopMode = "cancel"
        self._grace = grace
        self._make_watcher = watcher
        self._watcher: JobWatcher = PerJobWatcher(
            client, options.poll_interval, stop=self._stop, rng=self._rng
        )
        self._limiter = anyio.CapacityLimiter(options.max_concurrency)
        # Triggers beyond what the connection pool can carry would only queue inside aiohttp,
        # each holding a request and its retry state: 10,000 of them cost memory for nothing.
        self._trigger_slots = anyio.CapacityLimiter(
            min(options.max_concurrency, max(1, client.max_connections))
        )
        self._started = 0.0
        self._run_deadline: float | None = None
        self._interrupted = False
        self._scope: anyio.CancelScope | None = None
        self._outcomes: dict[str, str] = {}
        # Waits that a stop must cut short (a claim blocked behind another run's trigger).
        self._stoppable: set[anyio.CancelScope] = set()
        self._letting_go = False
        self._with_job: set[str] = set()
        self._resume: dict[str, ResumePoint] = {}

    # ----------------------------------------------------------------- control

    def stop(self, mode: StopMode = "cancel") -> None:
        """Stop triggering; then cancel (or leave running) every job in flight. Safe from a signal
        handler running in the event loop."""
        self._stop_mode = mode
        self._interrupted = True
        self._stop.set()
        for scope in self._stoppable:
            scope.cancel()

    def _choose_watcher(self, syncs: int) -> JobWatcher:
        mode = self.options.poll_mode
        if mode == "auto":
            mode = "batched" if syncs > AUTO_BATCH_ABOVE else "per-job"
        log.info("poll_mode", mode=mode, interval_s=self.options.poll_interval)
        if mode == "batched":
            return BatchedWatcher(
                self.client, self.options.poll_interval, stop=self._stop, rng=self._rng
            )
        return PerJobWatcher(
            self.client, self.options.poll_interval, stop=self._stop, rng=self._rng
        )

    def abort(self) -> None:
        """A second signal: give up waiting for cancels now. Jobs not yet cancelled are reported."""
        self._interrupted = True
        self._stop.set()
        if self._scope is not None:
            self._scope.cancel()

    def let_go(self) -> None:
        """Drop the run as a crash would, without a word more: nothing else is triggered or
        emitted (the journal above all stays exactly as far as it got), jobs keep running in
        Airbyte, and no ``run_finished`` is sent. A later process resumes the run."""
        # The stop event is left alone on purpose: setting it would wake syncs that then start
        # cancelling their jobs before the scope's cancellation reaches them.
        self._letting_go = True
        if self._scope is not None:
            self._scope.cancel()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self._letting_go

    # ----------------------------------------------------------------- run

    async def run(
        self,
        plan: Plan,
        *,
        selection: Selection | None = None,
        resume: Mapping[str, ResumePoint] | None = None,
    ) -> None:
        """Run every planned sync. With *resume*, carry on a run an earlier process started: finished
        syncs are left alone, jobs in flight are followed again, and nothing is triggered twice."""
        self._resume = dict(resume or {})
        self._started = self._clock()
        if self.options.deadline is not None:
            self._run_deadline = self._started + self.options.deadline
        self.bus.emit(
            RunStarted(
                run_id=self.run_id,
                at=_now(),
                elapsed_s=0.0,
                total=len(plan.items),
                job_type=self.options.job_type,
                max_concurrency=self.options.max_concurrency,
                wait=self.options.wait,
                resumed=bool(resume),
                options=self.options.model_dump(mode="json"),
                selection=selection.model_dump(mode="json") if selection is not None else None,
                planned=plan.items,
            )
        )
        for item in plan.items:
            point = self._resume.get(item.connection_id)
            if point is not None and point.state == "final":
                # Settled by the earlier process; its events are already in every sink.
                self._outcomes[item.connection_id] = point.outcome or "error"
            elif item.skip_reason is not None:
                self._emit(
                    SyncSkipped,
                    _Sync(item),
                    reason=item.skip_reason,
                    error=item.skip_reason,
                    cause="inactive",
                )
        self._watcher = (
            self._make_watcher(self._stop)
            if self._make_watcher is not None
            else self._choose_watcher(len(plan.runnable))
        )
        try:
            async with anyio.create_task_group() as outer:
                self._scope = outer.cancel_scope
                if self._letting_go:
                    outer.cancel_scope.cancel()
                outer.start_soon(self._watcher.run)
                async with anyio.create_task_group() as tg:
                    for item in plan.runnable:
                        point = self._resume.get(item.connection_id)
                        if point is None or point.state != "final":
                            tg.start_soon(self._run_sync, _Sync(item))
                # Every sync has settled: the watcher has nothing left to watch.
                outer.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._hook.run_ended(self.run_id)
            if not self._letting_go:
                self._finish(plan)

    def _finish(self, plan: Plan) -> None:
        """Even when aborted, the run ends with one ``run_finished``: sinks settle every sync."""
        counts: dict[str, int] = {}
        for item in plan.items:
            outcome = self._outcomes.get(item.connection_id) or unsettled_outcome(
                has_job=item.connection_id in self._with_job, wait=self.options.wait
            )
            counts[outcome] = counts.get(outcome, 0) + 1
        self.bus.emit(
            RunFinished(
                run_id=self.run_id,
                at=_now(),
                elapsed_s=self._elapsed(),
                outcome=run_outcome(counts, interrupted=self._interrupted),
                counts=counts,
                interrupted=self._interrupted,
            )
        )

    async def _run_sync(self, sync: _Sync) -> None:
        acquired = False
        with anyio.move_on_after(self._until(self._run_deadline)):
            await self._limiter.acquire()
            acquired = True
        try:
            if not acquired:
                self._emit(
                    SyncTimedOut,
                    sync,
                    error="the run deadline passed before this sync could be triggered",
                )
                return
            await self._sync_loop(sync)
        except _Settled:
            pass
        except Exception as exc:  # a bug must not take every other sync down with it
            log.exception("sync_crashed", connection_id=sync.connection_id)
            self._emit(SyncFailed, sync, outcome="error", error=f"internal error: {exc!r}")
        finally:
            await self._hook.released(self.run_id, sync.connection_id)
            if acquired:
                self._limiter.release()

    async def _sync_loop(self, sync: _Sync) -> None:
        job = await self._resume_job(sync)
        while True:
            if job is None:
                if self.stopping:
                    self._emit(
                        SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted"
                    )
                    return
                sync.attempt += 1
                job = await self._start_job(sync)
                if job is None:
                    return
            sync.seen.add(job.job_id)
            await self._hook.following(self.run_id, sync.connection_id, job.job_id)
            if not self.options.wait:
                return
            final = await self._follow(sync, job)
            job = None
            # Whatever comes next (a final event, a retry), this run no longer follows that job.
            await self._hook.released(self.run_id, sync.connection_id)
            if final is None:
                return
            if final.status == JobStatus.SUCCEEDED:
                self._emit(SyncSucceeded, sync, job=final)
                return
            if final.status == JobStatus.CANCELLED:
                self._emit(SyncCancelled, sync, job=final, error="the job was cancelled in Airbyte")
                return
            error = f"Airbyte job {final.job_id} failed"
            if sync.attempt <= self.options.retries and not self.stopping:
                wait = self._backoff(sync.attempt)
                self._emit(SyncRetrying, sync, job=final, error=error, wait_s=wait)
                await self._pause(wait)
                continue
            self._emit(SyncFailed, sync, job=final, error=error)
            return

    async def _resume_job(self, sync: _Sync) -> Job | None:
        """The job an earlier process left this sync with, if any; never sends ``POST /jobs``."""
        point = self._resume.get(sync.connection_id)
        if point is None or point.state == "untouched":
            return None
        sync.attempt = max(point.attempt, 1)
        since = point.triggered_at or point.intent_at
        if since is not None:
            # The sync's timeout counts from its first trigger, in whichever process that was.
            sync.first_trigger = self._clock() - max(0.0, (_now() - since).total_seconds())
        if point.state == "in_flight" and point.job_id is not None:
            job = await self._read_job_until_known(sync, point.job_id)
            self._emit(
                SyncAdopted, sync, job=job, reason=f"resumed: following job {job.job_id} again"
            )
            return job
        # A trigger was about to be sent when the earlier process stopped: did it create a job?
        began = point.intent_at or _now()
        known, found = await self._reconcile_until_known(sync, began)
        if found is not None:
            self._emit(
                SyncAdopted,
                sync,
                job=found,
                reason=f"resumed: job {found.job_id} came from the interrupted trigger",
            )
            return found
        if not known:
            self._emit(
                SyncFailed,
                sync,
                outcome="error",
                error="could not read the connection's jobs to finish an interrupted trigger",
            )
            raise _Settled
        sync.attempt -= 1  # the interrupted attempt never reached Airbyte: this one replaces it
        return None

    async def _read_job_until_known(
        self, sync: _Sync, job_id: int, *, why: str = "again after the restart"
    ) -> Job:
        attempt = 0
        while not self.stopping and self._clock() < self._sync_deadline(sync):
            attempt += 1
            try:
                return await self.client.get_job(job_id)
            except AirbyteError as exc:
                log.warning("job_read_failed", job_id=job_id, error=exc.message)
                await self._pause(
                    min(self._backoff(attempt), self._until(self._sync_deadline(sync)))
                )
        self._emit(
            SyncFailed,
            sync,
            outcome="error",
            error=f"could not read job {job_id} {why}; it may still be running",
        )
        raise _Settled

    # ----------------------------------------------------------------- trigger

    async def _claim(self, sync: _Sync) -> Adopt | bool:
        """Ask the hook before triggering: True to trigger, an :class:`Adopt` to follow another
        run's job, False when the sync has been settled here (skipped, failed)."""
        with anyio.CancelScope() as scope:
            self._stoppable.add(scope)
            if self.stopping:
                scope.cancel()
            try:
                claim = await self._hook.claim(
                    self.run_id, sync.connection_id, seen=frozenset(sync.seen)
                )
            except ClaimError as exc:
                self._emit(SyncFailed, sync, outcome="error", error=f"not triggered: {exc.message}")
                return False
            finally:
                self._stoppable.discard(scope)
        if scope.cancelled_caught:
            self._emit(SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted")
            return False
        if isinstance(claim, Skip):
            self._emit(SyncSkipped, sync, reason=claim.reason, cause="claimed")
            return False
        if isinstance(claim, Adopt):
            return claim
        return True

    async def _start_job(self, sync: _Sync) -> Job | None:
        cid = sync.connection_id
        if self.stopping:
            self._emit(SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted")
            return None
        claim = await self._claim(sync)
        if claim is False:
            return None
        if isinstance(claim, Adopt):
            job = await self._read_job_until_known(
                sync, claim.job_id, why=f"that {claim.owner} is following"
            )
            return self._already_running(sync, job, f"{claim.owner} is following job {job.job_id}")
        last_problem = "Airbyte lists no job from them"
        for _ in range(TRIGGER_TRIES):
            if self.stopping:
                self._emit(
                    SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted"
                )
                return None
            began = _now()
            if sync.first_trigger is None:
                sync.first_trigger = self._clock()
            try:
                self._emit(SyncTriggering, sync)
            except Exception as exc:
                # The journal could not record the intent: triggering now could not be undone
                # safely after a crash, so do not trigger at all.
                self._emit(
                    SyncFailed,
                    sync,
                    outcome="error",
                    error=f"not triggered: the journal could not record it ({exc})",
                    best_effort=True,
                )
                return None
            try:
                async with self._trigger_slots:
                    job = await self.client.create_job(cid, self.options.job_type)
            except AlreadyRunningError:
                if self.options.if_running == "fail":
                    self._emit(SyncFailed, sync, outcome="error", error="a sync is already running")
                    return None
                running = await self._find_running(cid)
                if running is not None or self.options.if_running == "skip":
                    return self._already_running(sync, running, None)
                # Airbyte said "already running" but lists no running job (its stale-state
                # case): wait a little and trigger again, through the journal like any trigger.
                last_problem = "Airbyte says a sync is already running but shows no running job"
                log.warning("already_running_without_job", connection_id=cid)
                await self._pause(self._backoff(1))
                continue
            except TriggerOutcomeUnknownError as exc:
                log.warning("trigger_unclear", connection_id=cid, error=exc.message)
                known, found = await self._reconcile_until_known(sync, began)
                if not known:
                    self._emit(
                        SyncFailed,
                        sync,
                        outcome="error",
                        error="Airbyte's answer to the trigger was lost and its job list stayed "
                        "unreadable; check the connection in Airbyte before triggering it again",
                    )
                    return None
                if found is not None:
                    self._emit(SyncTriggered, sync, job=found)
                    return found
                # Airbyte lists no job from that attempt: triggering again cannot duplicate one.
                await self._pause(self._backoff(1))
                continue
            except (InactiveConnectionError, NotFoundError) as exc:
                reason = (
                    "the connection no longer exists"
                    if isinstance(exc, NotFoundError)
                    else exc.message
                )
                self._emit(SyncFailed, sync, outcome="error", error=reason)
                return None
            except TransportError as exc:
                # The request never reached Airbyte (refused, DNS): nothing to reconcile.
                log.warning("trigger_not_sent", connection_id=cid, error=exc.message)
                last_problem = exc.message
                await self._pause(self._backoff(1))
                continue
            except AirbyteError as exc:
                self._emit(SyncFailed, sync, outcome="error", error=exc.message)
                return None
            self._emit(SyncTriggered, sync, job=job)
            return job
        self._emit(
            SyncFailed,
            sync,
            outcome="error",
            error=f"could not trigger after {TRIGGER_TRIES} tries: {last_problem}",
        )
        return None

    def _already_running(self, sync: _Sync, job: Job | None, who: str | None) -> Job | None:
        """A job is already running for the connection (Airbyte's 409, or another run of this
        process): the run's ``if_running`` policy says whether to follow it."""
        policy = self.options.if_running
        shown = f" (job {job.job_id})" if job is not None else ""
        if who is not None:
            shown = f" ({who})"
        if policy == "fail":
            self._emit(
                SyncFailed,
                sync,
                job=job,
                outcome="error",
                error="a sync is already running" + shown,
            )
            return None
        if policy == "skip":
            self._emit(
                SyncSkipped,
                sync,
                reason="a sync is already running" + shown,
                job=job,
                cause="already_running",
            )
            return None
        assert job is not None
        reason = f"{who}; following it too" if who else "a sync was already running; following it"
        self._emit(SyncAdopted, sync, job=job, reason=reason)
        return job

    async def _reconcile_until_known(self, sync: _Sync, began: datetime) -> tuple[bool, Job | None]:
        """Look for the job an unclear trigger may have created, until Airbyte can tell us.

        Returns ``(False, None)`` only if the sync's deadline passes or the run stops first.
        """
        attempt = 0
        while not self.stopping and self._clock() < self._sync_deadline(sync):
            attempt += 1
            try:
                page = await self.client.list_jobs_page(
                    connection_id=sync.connection_id, order_by="createdAt|DESC", limit=10
                )
            except AirbyteError as exc:
                log.warning("reconcile_failed", connection_id=sync.connection_id, error=exc.message)
                await self._pause(
                    min(self._backoff(attempt), self._until(self._sync_deadline(sync)))
                )
                continue
            return True, self._ours(page.data, began)
        return False, None

    def _ours(self, jobs: tuple[Job, ...], began: datetime) -> Job | None:
        for job in jobs:
            if job.job_type != self.options.job_type:
                continue
            # Only one job per connection can be running, so a running one is the one to follow.
            if not job.is_terminal:
                return job
            if job.start_time is not None and job.start_time >= began - CLOCK_SKEW:
                return job
        return None

    async def _recent_jobs(self, connection_id: str, why: str) -> tuple[Job, ...]:
        try:
            page = await self.client.list_jobs_page(
                connection_id=connection_id, order_by="createdAt|DESC", limit=10
            )
        except AirbyteError as exc:
            log.warning(f"{why}_failed", connection_id=connection_id, error=exc.message)
            return ()
        return page.data

    async def _find_running(self, connection_id: str) -> Job | None:
        jobs = await self._recent_jobs(connection_id, "find_running")
        return next((job for job in jobs if not job.is_terminal), None)

    # ----------------------------------------------------------------- follow

    async def _follow(self, sync: _Sync, job: Job) -> Job | None:
        sync.status = job.status
        self._note_unknown(sync, job)
        while not job.is_terminal:
            deadline = self._sync_deadline(sync)
            if self.stopping:
                await self._on_stop(sync, job)
                return None
            remaining = deadline - self._clock()
            if remaining <= 0:
                await self._on_timeout(sync, job)
                return None
            fresh = await self._watcher.wait(job, remaining, workspace_id=sync.item.workspace_id)
            if fresh is None:
                if self._watcher.consecutive_auth_failures >= MAX_AUTH_FAILURES:
                    self._emit(
                        SyncFailed,
                        sync,
                        job=job,
                        outcome="error",
                        error=f"Airbyte keeps refusing our credentials; job {job.job_id} may still be running",
                    )
                    return None
                continue
            if fresh.status != job.status:
                self._emit(SyncStatusChanged, sync, job=fresh, old_status=job.status)
                self._note_unknown(sync, fresh)
            job = fresh
        return job

    def _note_unknown(self, sync: _Sync, job: Job) -> None:
        if not job.is_known_status and job.status not in sync.unknown_logged:
            sync.unknown_logged.add(job.status)
            log.warning(
                "unknown_job_status",
                connection_id=sync.connection_id,
                job_id=job.job_id,
                status=job.status,
                note="not a final status we know; still waiting",
            )

    async def _on_timeout(self, sync: _Sync, job: Job) -> None:
        limit = self.options.timeout
        by_run = (
            self._run_deadline is not None
            and sync.first_trigger is not None
            and self._run_deadline < sync.first_trigger + limit
        )
        why = "the run deadline passed" if by_run else f"it ran longer than {limit:g} s"
        if not self.options.cancel_on_timeout:
            self._emit(
                SyncTimedOut,
                sync,
                job=job,
                error=f"{why}; job {job.job_id} was left running (--no-cancel-on-timeout)",
            )
            return
        cancelled, final, note = await self._cancel(sync, job)
        self._emit(
            SyncTimedOut,
            sync,
            job=final,
            cancelled=cancelled,
            error=f"{why}; {note}",
        )

    async def _on_stop(self, sync: _Sync, job: Job) -> None:
        if self._stop_mode == "detach":
            self._emit(
                SyncDetached,
                sync,
                job=job,
                error=f"run interrupted; job {job.job_id} left running in Airbyte (detach)",
            )
            return
        with anyio.move_on_after(self._grace):
            cancelled, final, note = await self._cancel(sync, job)
            if cancelled:
                self._emit(SyncCancelled, sync, job=final, error=f"run interrupted; {note}")
            else:
                self._emit(
                    SyncFailed, sync, job=final, outcome="error", error=f"run interrupted; {note}"
                )
            return
        self._emit(
            SyncFailed,
            sync,
            job=job,
            outcome="error",
            error=f"run interrupted; cancelling job {job.job_id} took longer than the grace period",
        )

    async def _cancel(self, sync: _Sync, job: Job) -> tuple[bool, Job, str]:
        """Cancel and verify by reading the status back; a failed cancel is reported, not hidden."""
        if self._letting_go:
            return False, job, f"job {job.job_id} was left running: the run was let go"
        keep = await self._hook.may_cancel(self.run_id, sync.connection_id, job.job_id)
        if keep is not None:
            return False, job, f"job {job.job_id} was left running: {keep}"
        try:
            after = await self.client.cancel_job(job.job_id)
            if after.status != JobStatus.CANCELLED and not after.is_terminal:
                after = await self.client.get_job(job.job_id)
        except AirbyteError as exc:
            return False, job, f"cancelling job {job.job_id} failed: {exc.message}"
        if after.status == JobStatus.CANCELLED:
            return True, after, f"job {job.job_id} was cancelled"
        if after.is_terminal:
            return False, after, f"job {job.job_id} had already ended as {after.status}"
        return False, after, f"job {job.job_id} is still {after.status} after the cancel request"

    # ----------------------------------------------------------------- helpers

    def _sync_deadline(self, sync: _Sync) -> float:
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
        sync: _Sync,
        *,
        job: Job | None = None,
        best_effort: bool = False,
        **extra: Any,
    ) -> None:
        if self._letting_go:
            return
        conn = sync.item
        if job is not None:
            sync.status = job.status
        event = kind(
            run_id=self.run_id,
            at=_now(),
            elapsed_s=self._elapsed(),
            connection_id=conn.connection_id,
            connection_name=conn.connection_name,
            workspace_id=conn.workspace_id,
            job_type=self.options.job_type,
            job_id=job.job_id if job is not None else None,
            attempt=max(sync.attempt, 1),
            status=job.status if job is not None else None,
            rows_synced=job.rows_synced if job is not None else None,
            bytes_synced=job.bytes_synced if job is not None else None,
            **extra,
        )
        final = final_outcome(event)
        if final is not None:
            self._outcomes[conn.connection_id] = final
        if job is not None:
            self._with_job.add(conn.connection_id)
        self.bus.emit(event, best_effort=best_effort)


class _Settled(Exception):
    """The sync's final event is already emitted; unwind to the task's end."""


def _now() -> datetime:
    return datetime.now(UTC)
