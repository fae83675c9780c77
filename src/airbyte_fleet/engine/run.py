"""Fan out: trigger every planned sync under a concurrency limit, follow each job to its end.

Each connection gets one task. A task holds a slot of the capacity limiter from its trigger until its
job ends (or, with ``wait=False``, until the trigger is answered), so the next connection is triggered
the moment a slot frees. All the engine knows is the client, the plan, the options, an event bus and
a trigger hook. This file is the run as a whole (start, stop, one task per sync, the end); getting a
job is ``trigger.py``, following it ``follow.py``, the shared state ``_core.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping

import anyio
import structlog

from airbyte_fleet.api import AirbyteClient, Job, JobStatus
from airbyte_fleet.engine._core import (
    INTERRUPTED_BEFORE_TRIGGER,
    Settled,
    StopMode,
    Sync,
    new_run_id,
    now,
)
from airbyte_fleet.engine.events import (
    EventBus,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncCancelled,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncSucceeded,
    SyncTimedOut,
)
from airbyte_fleet.engine.follow import FollowSteps
from airbyte_fleet.engine.hooks import NoHook, TriggerHook
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.outcome import run_outcome, unsettled_outcome
from airbyte_fleet.engine.plan import Plan
from airbyte_fleet.engine.resume import ResumePoint
from airbyte_fleet.engine.trigger import TriggerSteps
from airbyte_fleet.engine.watch import BatchedWatcher, JobWatcher, PerJobWatcher

__all__ = ["Engine", "StopMode", "new_run_id"]

log = structlog.get_logger("airbyte_fleet.engine")

# With this many syncs or fewer, one GET per job costs no more than one list per workspace.
AUTO_BATCH_ABOVE = 5


class Engine(TriggerSteps, FollowSteps):
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
                at=now(),
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
                    Sync(item),
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
                            tg.start_soon(self._run_sync, Sync(item))
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
                at=now(),
                elapsed_s=self._elapsed(),
                outcome=run_outcome(counts, interrupted=self._interrupted),
                counts=counts,
                interrupted=self._interrupted,
            )
        )

    async def _run_sync(self, sync: Sync) -> None:
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
        except Settled:
            pass
        except Exception as exc:  # a bug must not take every other sync down with it
            log.exception("sync_crashed", connection_id=sync.connection_id)
            self._emit(SyncFailed, sync, outcome="error", error=f"internal error: {exc!r}")
        finally:
            await self._hook.released(self.run_id, sync.connection_id)
            if acquired:
                self._limiter.release()

    async def _sync_loop(self, sync: Sync) -> None:
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

    async def _resume_job(self, sync: Sync) -> Job | None:
        """The job an earlier process left this sync with, if any; never sends ``POST /jobs``."""
        point = self._resume.get(sync.connection_id)
        if point is None or point.state == "untouched":
            return None
        sync.attempt = max(point.attempt, 1)
        since = point.triggered_at or point.intent_at
        if since is not None:
            # The sync's timeout counts from its first trigger, in whichever process that was.
            sync.first_trigger = self._clock() - max(0.0, (now() - since).total_seconds())
        if point.state == "in_flight" and point.job_id is not None:
            job = await self._read_job_until_known(sync, point.job_id)
            self._emit(
                SyncAdopted, sync, job=job, reason=f"resumed: following job {job.job_id} again"
            )
            return job
        # A trigger was about to be sent when the earlier process stopped: did it create a job?
        began = point.intent_at or now()
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
            raise Settled
        sync.attempt -= 1  # the interrupted attempt never reached Airbyte: this one replaces it
        return None
