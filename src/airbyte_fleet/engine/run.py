"""Fan out: trigger every planned sync under a concurrency limit, follow each job to its end.

A sync is a record, not a task (at 10,000 syncs, tasks were most of the memory). One feeder takes
the syncs in plan order: each holds a slot of the capacity limiter from its trigger until its job
ends (or, with ``wait=False``, until the trigger is answered), so the next connection is triggered the
moment a slot frees. A sync has a task only while a step runs: its start (claim, journal the intent,
``POST /jobs``; a bounded number at once, whose intents the journal records in one transaction), and
after its job is followed (the outcome, a cancel, a retry's pause). In between, the watcher follows its
job and one timer keeps every deadline. All the engine knows is the client, the plan, the options, an
event bus and a trigger hook. This file is the run as a whole (start, feed, steps, stop, the end);
getting a job is ``trigger.py``, following it ``follow.py``, the shared state ``_core.py``.

A plan may arrive in parts (``engine/plan.py``'s ``stream_plan``): the run starts with the first
part (``run_started`` with ``planning``), and each later part is announced (``syncs_planned``) and
queued for the feeder as it comes, so the first syncs are triggered while the connection list is
still being read. The run ends once the last part is in and every sync has ended. A stop ends the
planning too (the syncs it never planned are the plan's rest, which a resume plans again); a plan
that cannot be read to its end (Airbyte out of reach past its retries) ends planning, the syncs
planned so far run, and the run fails with an error that says so.

A staged run's plan carries its groups (``engine/stages.py``): a group's syncs are held out of the
feeder's queue until every group it comes after has finished, then queued (or skipped, cause
``upstream_failed``); they count as open meanwhile, so the run ends only once every group has.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup

from airbyte_fleet._caller import resume_hint
from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteClient, Job, JobStatus
from airbyte_fleet.engine._core import (
    INTERRUPTED_BEFORE_TRIGGER,
    Settled,
    StopMode,
    Sync,
    follows_again,
    new_run_id,
    now,
)
from airbyte_fleet.engine.events import (
    EventBus,
    GroupFinished,
    GroupStarted,
    PlannedSync,
    RunFinished,
    RunStarted,
    StoreFailedError,
    SyncAdopted,
    SyncCancelled,
    SyncDetached,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncsPlanned,
    SyncSucceeded,
    SyncTimedOut,
)
from airbyte_fleet.engine.follow import FollowSteps
from airbyte_fleet.engine.hooks import Adopt, NoHook, TriggerHook
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.outcome import run_outcome, unsettled_outcome
from airbyte_fleet.engine.plan import Plan, PlanParts
from airbyte_fleet.engine.resume import ResumePoint
from airbyte_fleet.engine.stages import StageBook
from airbyte_fleet.engine.trigger import IntentBatch, TriggerSteps
from airbyte_fleet.engine.watch import BatchedWatcher, JobWatcher, PerJobWatcher

__all__ = ["Engine", "StopMode", "StoreFailedError", "new_run_id"]

log = get_logger("airbyte_fleet.engine")

# With this many syncs or fewer, one GET per job costs no more than one list per workspace.
AUTO_BATCH_ABOVE = 5
# How often the store is asked whether its events that wait are still fine (see _watch_store).
STORE_CHECK_S = 1.0
# However late a run is resumed, Airbyte gets at least this long to answer for a sync's job: one
# that outlived its timeout is read, then timed out and cancelled by policy, never dropped unread.
RESUME_READ_WINDOW = 60.0


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
        on_interrupt: StopMode = "cancel",
    ) -> None:
        """*grace*: how long a stop may take, cancels included, before whatever is still open is
        left as it is and reported. *on_interrupt*: what a stop does with jobs in flight when
        ``stop()`` is given no mode, and when the engine stops the run itself (its store failed)."""
        self.client = client
        self._hook: TriggerHook = hook or NoHook()
        self.options = options
        self.bus = bus
        self.run_id = run_id or new_run_id()
        self._clock = clock
        self._rng = rng or random.Random()
        self._stop = anyio.Event()
        self._stop_mode: StopMode = on_interrupt
        self._on_interrupt: StopMode = on_interrupt
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
        # Why the run was cut short without waiting for every sync: "abort" or "grace".
        self._cut: str | None = None
        self._with_job: set[str] = set()
        self._resume: dict[str, ResumePoint] = {}
        self._syncs: dict[str, Sync] = {}
        # Syncs followed by the watcher (no task of their own), and one heap of their deadlines.
        self._following: dict[str, Sync] = {}
        self._deadlines: list[tuple[float, int, str, int]] = []
        self._deadline_seq = 0
        self._deadline_woken = anyio.Event()
        # The task group every step runs in, and how many syncs have not ended yet.
        self._steps: TaskGroup | None = None
        self._open = 0
        self._all_ended = anyio.Event()
        # The plan so far, in order; the syncs planned and not yet taken by the feeder; whether
        # more parts may come (and the feeder, having none, waits for them); why planning
        # ended before the plan was complete.
        self._planned: list[PlannedSync] = []
        self._queue: deque[Sync] = deque()
        self._planning = False
        self._more = anyio.Event()
        self._plan_error: str | None = None
        # A staged run's groups, and the syncs held until their group may start (they count as
        # open: the run is not over while any waits).
        self._book = StageBook(())
        self._held: dict[str, Sync] = {}
        # Syncs starting at once (claim, intent, trigger): enough to keep the connection pool busy
        # and to fill an intent batch, few enough that 10,000 syncs never mean 10,000 tasks.
        self._start_slots = 2 * min(options.max_concurrency, max(1, client.max_connections))
        self._intents: IntentBatch | None = None
        self.failure: StoreFailedError | None = None
        """Set when the store (the bus's critical sink) refused an event and the engine stopped
        the run because of it, by ``on_interrupt``; the run still settles and ``run()`` returns
        normally, its ``run_finished`` saying ``failed`` with this error (StoreFailedError)."""

    def stop(self, mode: StopMode | None = None) -> None:
        """Stop triggering; then cancel (or leave running) every job in flight, by *mode* or else
        the run's ``on_interrupt`` policy. Waits on Airbyte (status reads and their retries) are
        cut short at once, and the whole stop takes at most the grace period: what is still open
        then is left as it is and reported. Safe from a signal handler running in the loop."""
        self._begin_stop(mode or self._on_interrupt)

    def _choose_watcher(self, syncs: int | None) -> JobWatcher:
        """*syncs*: how many the run has; None while its plan is still being read (a plan read
        in parts is most often a long list, where one GET per job would cost the most)."""
        mode = self.options.poll_mode
        if mode == "auto":
            mode = "batched" if syncs is None or syncs > AUTO_BATCH_ABOVE else "per-job"
        log.info("poll_mode", mode=mode, interval_s=self.options.poll_interval)
        if mode == "batched":
            return BatchedWatcher(
                self.client, self.options.poll_interval, stop=self._stop, rng=self._rng
            )
        return PerJobWatcher(
            self.client, self.options.poll_interval, stop=self._stop, rng=self._rng
        )

    def abort(self) -> None:
        """A second signal: give up waiting for cancels now. Every job not cancelled yet is
        reported as left running, with the ``--resume`` that follows it again."""
        self._cut_short("abort")

    def _cut_short(self, why: str) -> None:
        self._cut = self._cut or why
        self._interrupted = True
        self._stop.set()
        if self._scope is not None:
            self._scope.cancel()

    async def _bound_the_stop(self) -> None:
        """The grace period is a hard bound on a stop, cancels included."""
        await self._stop.wait()
        await anyio.sleep(self._grace)
        log.warning("grace_expired", run_id=self.run_id, grace_s=self._grace)
        self._cut_short("grace")

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
        more: PlanParts | None = None,
    ) -> None:
        """Run every planned sync. With *resume*, carry on a run an earlier process started: finished
        syncs are left alone, jobs in flight are followed again, and nothing is triggered twice.
        *more*: the plan's later parts (*plan* is its first), read while the run goes on; syncs in
        them that *plan* already holds are left out (a resume plans a run's selection again)."""
        self._resume = dict(resume or {})
        self._started = self._clock()
        if self.options.deadline is not None:
            self._run_deadline = self._started + self.options.deadline
        self._planning = more is not None
        self._publish(
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
                planning=self._planning,
                stages=plan.stages,
            )
        )
        self._book = StageBook(plan.stages)
        self._admit(plan.items)
        self._advance_stages()
        self._watcher = (
            self._make_watcher(self._stop)
            if self._make_watcher is not None
            else self._choose_watcher(None if self._planning else len(plan.runnable))
        )
        try:
            async with anyio.create_task_group() as outer:
                self._scope = outer.cancel_scope
                if self._letting_go or self._cut is not None:
                    outer.cancel_scope.cancel()
                outer.start_soon(self._watcher.run)
                outer.start_soon(self._bound_the_stop)
                outer.start_soon(self._watch_deadlines)
                outer.start_soon(self._watch_store)
                async with anyio.create_task_group() as steps:
                    self._steps = steps
                    steps.start_soon(self._feed)
                    if more is not None:
                        steps.start_soon(self._plan_rest, more)
                    if self._open or self._planning:
                        await self._all_ended.wait()
                # Every sync has settled: the watcher has nothing left to watch.
                outer.cancel_scope.cancel()
        finally:
            self._steps = None
            with anyio.CancelScope(shield=True):
                if more is not None:
                    await more.aclose()
                await self._hook.run_ended(self.run_id)
            if not self._letting_go:
                self._report_cut_short()
                self._finish()

    def _admit(self, items: Sequence[PlannedSync]) -> None:
        """Take *items* into the run: settled ones (a resume) are counted, skipped ones reported,
        the rest queued for the feeder in plan order."""
        self._planned.extend(items)
        for item in items:
            point = self._resume.get(item.connection_id)
            sync = Sync(item)
            if item.runnable:
                self._syncs[item.connection_id] = sync
            if point is not None and point.state == "final":
                # Settled by the earlier process; its events are already in every sink.
                outcome = point.outcome or "error"
                self._outcomes[item.connection_id] = outcome
                self._book.settled(item.connection_id, outcome, earlier=True)
            elif item.skip_reason is not None:
                self._emit(
                    SyncSkipped,
                    sync,
                    reason=item.skip_reason,
                    error=item.skip_reason,
                    cause="inactive",
                )
                self._book.settled(item.connection_id, "skipped")
            elif self._book.holds(item.connection_id):
                self._held[item.connection_id] = sync
                self._open += 1
            else:
                self._queue.append(sync)
                self._open += 1
        self._more.set()

    def _advance_stages(self) -> None:
        """Start every group whose upstream has finished (queue its held syncs, or skip them when
        an upstream did not succeed), and announce every group whose syncs have all ended; again
        until nothing changes (a skipped group may let its own downstream go at once)."""
        if not self._book:
            return
        while True:
            moved = False
            for start in self._book.startable():
                moved = True
                syncs = [self._held.pop(cid) for cid in start.syncs if cid in self._held]
                ready = self._elapsed()
                if not start.carried:
                    self._publish(
                        GroupStarted(
                            run_id=self.run_id,
                            at=now(),
                            elapsed_s=ready,
                            group=start.group,
                            after=self._book_after(start.group),
                            syncs=len(syncs),
                            skip_reason=start.skip_reason,
                        )
                    )
                for sync in syncs:
                    if start.skip_reason is None:
                        sync.ready_s = ready
                        self._queue.append(sync)
                        continue
                    self._emit(SyncSkipped, sync, reason=start.skip_reason, cause="upstream_failed")
                    # Never claimed and holding no slot: nothing to give back, unlike _end.
                    sync.done = True
                    self._open -= 1
                    self._book.settled(sync.connection_id, "skipped")
            finished = self._book.finishable(stopping=self.stopping)
            for stage, outcome, counts, reason, carried in finished:
                moved = True
                if carried:
                    # Finished in an earlier process, which said so (the result builder
                    # settles it from its syncs should that word have been lost).
                    continue
                self._publish(
                    GroupFinished(
                        run_id=self.run_id,
                        at=now(),
                        elapsed_s=self._elapsed(),
                        group=stage.group,
                        outcome=outcome,
                        counts=counts,
                        skip_reason=reason,
                    )
                )
            if not moved:
                break
        self._more.set()
        if self._open <= 0 and not self._planning:
            self._all_ended.set()

    def _book_after(self, group: str) -> tuple[str, ...]:
        return next((s.after for s in self._book.stages if s.group == group), ())

    async def _plan_rest(self, more: PlanParts) -> None:
        """Take the plan's later parts as they come; a stop ends the planning."""
        known = {item.connection_id for item in self._planned}
        try:
            with self._cut_on_stop():
                async for part in more:
                    items = tuple(i for i in part.items if i.connection_id not in known)
                    known.update(item.connection_id for item in items)
                    if not items and not part.final:
                        continue
                    self._publish(
                        SyncsPlanned(
                            run_id=self.run_id,
                            at=now(),
                            elapsed_s=self._elapsed(),
                            planned=items,
                            total=len(self._planned) + len(items),
                            final=part.final,
                            warnings=part.warnings,
                        )
                    )
                    self._admit(items)
        except Exception as exc:
            # Airbyte out of reach past the client's retries, a list that does not advance, a
            # selection a resume can no longer plan: what is planned runs, the rest is not known.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            hint = resume_hint(self.run_id)
            self._plan_error = (
                f"the plan could not be completed ({reason}), so only the {len(self._planned)} "
                "syncs planned before that were run"
                + (f"; {hint} plans the rest and runs it" if hint else "")
            )
            log.error("planning_failed", run_id=self.run_id, error=reason)
            self._publish(
                SyncsPlanned(
                    run_id=self.run_id,
                    at=now(),
                    elapsed_s=self._elapsed(),
                    total=len(self._planned),
                    final=True,
                    error=self._plan_error,
                )
            )
        finally:
            self._planning = False
            self._more.set()
            if self._open <= 0:
                self._all_ended.set()

    async def _watch_store(self) -> None:
        """A store holds events back (all but intents, start and end) and commits them on a
        timer; when that fails with nothing more to write (every job long), only asking tells."""
        while self.failure is None:
            await anyio.sleep(STORE_CHECK_S)
            try:
                self.bus.check()
            except Exception as exc:
                self._store_failed(exc, "its waiting events")

    def _report_cut_short(self) -> None:
        """Every sync whose task was cut short (an abort, the grace period) gets its last word:
        a job left running (a later ``--resume`` follows it again), a trigger left unanswered (a
        ``--resume`` looks for its job), or a sync never triggered (a ``--resume`` runs it)."""
        left: list[int] = []
        for cid, sync in self._syncs.items():
            if sync.done or sync.left_running or cid in self._outcomes:
                continue
            if sync.job_id is not None:
                left.append(sync.job_id)
                why = (
                    f"the stop's {self._grace:g} s grace period ran out before job "
                    f"{sync.job_id} was cancelled"
                    if self._cut == "grace"
                    else f"the run was aborted before job {sync.job_id} ended"
                )
                self._emit(
                    SyncDetached,
                    sync,
                    job_id=sync.job_id,
                    best_effort=True,
                    error=f"{why}; it is left running in Airbyte, and {follows_again(self.run_id)}",
                )
            elif sync.triggering:
                self._emit(
                    SyncDetached,
                    sync,
                    best_effort=True,
                    error="the run stopped while its trigger was unanswered, so a job may be "
                    f"running in Airbyte; {follows_again(self.run_id, looks=True)}",
                )
            else:
                self._emit(
                    SyncSkipped,
                    sync,
                    best_effort=True,
                    reason=INTERRUPTED_BEFORE_TRIGGER,
                    cause="interrupted",
                )
        if left:
            log.warning(
                "jobs_left_running",
                run_id=self.run_id,
                job_ids=left,
                resume=follows_again(self.run_id),
            )

    def _finish(self) -> None:
        """Even when aborted, the run ends with one ``run_finished``: sinks settle every sync. A
        store that refuses it (the run is settled already) sets :attr:`failure` all the same,
        so the caller can say the store holds the run unfinished."""
        for stage, counts_of in self._book.unfinished():
            self._publish(
                GroupFinished(
                    run_id=self.run_id,
                    at=now(),
                    elapsed_s=self._elapsed(),
                    group=stage.group,
                    outcome="interrupted",
                    counts=counts_of,
                )
            )
        counts: dict[str, int] = {}
        for item in self._planned:
            outcome = self._outcomes.get(item.connection_id) or unsettled_outcome(
                has_job=item.connection_id in self._with_job, wait=self.options.wait
            )
            counts[outcome] = counts.get(outcome, 0) + 1
        self._publish(
            RunFinished(
                run_id=self.run_id,
                at=now(),
                elapsed_s=self._elapsed(),
                outcome=run_outcome(
                    counts,
                    interrupted=self._interrupted,
                    failed=self.failure is not None or self._plan_error is not None,
                ),
                counts=counts,
                interrupted=self._interrupted,
                error=self.failure.message if self.failure is not None else self._plan_error,
            ),
        )

    def _begin_stop(self, mode: StopMode) -> None:
        super()._begin_stop(mode)
        # Jobs followed have no task to notice the stop: each gets its stop step now.
        self._stop_following()
        # Syncs held for their group go to the feeder, which reports each as not triggered (a
        # resume runs them once their group may start).
        self._book.release_all()
        self._queue.extend(self._held.values())
        self._held.clear()
        self._more.set()

    # ----------------------------------------------------------------- a sync's steps

    async def _feed(self) -> None:
        """Start the syncs in plan order, each once a concurrency slot is free for it; while the
        plan is still being read, wait for its next part."""
        starting = anyio.Semaphore(self._start_slots)
        while True:
            if not self._queue:
                if not self._planning and not self._held:
                    return
                self._more = anyio.Event()
                await self._more.wait()
                continue
            sync = self._queue.popleft()
            if not await self._take_slot(sync):
                await self._never_started(sync)
                continue
            try:
                starting.acquire_nowait()
            except anyio.WouldBlock:
                await starting.acquire()
            self._spawn(self._begin, sync, starting)

    async def _take_slot(self, sync: Sync) -> bool:
        """A concurrency slot for *sync*; False when the run stopped or its deadline passed first.
        Without waiting when one is free: no timer and cancel scope for each of 10,000 syncs."""
        if self.stopping or self._until(self._run_deadline) <= 0:
            return False
        try:
            self._limiter.acquire_on_behalf_of_nowait(sync)
            return True
        except anyio.WouldBlock:
            pass
        with self._cut_on_stop(), anyio.move_on_after(self._until(self._run_deadline)):
            await self._limiter.acquire_on_behalf_of(sync)
            return True
        return False

    async def _never_started(self, sync: Sync) -> None:
        """The run stopped, or its deadline passed, before *sync* had a slot."""
        if self.stopping:
            self._emit(SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted")
        else:
            self._emit(
                SyncTimedOut,
                sync,
                error="the run deadline passed before this sync could be triggered",
            )
        await self._end(sync, holds_slot=False)

    def _spawn(self, step: Callable[..., Awaitable[None]], sync: Sync, *args: Any) -> None:
        """Run one step of *sync* (``step(sync, *args)``) in a task of the run."""
        assert self._steps is not None
        self._steps.start_soon(self._guarded, step, sync, *args)

    async def _guarded(self, step: Callable[..., Awaitable[None]], sync: Sync, *args: Any) -> None:
        try:
            await step(sync, *args)
        except Settled:
            await self._end(sync)
        except Exception as exc:  # a bug must not take every other sync down with it
            log.exception("sync_crashed", connection_id=sync.connection_id)
            self._unfollow(sync)
            self._emit(SyncFailed, sync, outcome="error", error=f"internal error: {exc!r}")
            await self._end(sync)

    async def _begin(self, sync: Sync, starting: anyio.Semaphore) -> None:
        try:
            job = await self._next_job(sync, await self._resume_job(sync))
        finally:
            starting.release()
        if job is None:
            await self._end(sync)
        else:
            self._follow(sync, job)

    def _start_step(self, sync: Sync, job: Job | None) -> None:
        self._spawn(self._after_follow, sync, job)

    def _spawn_writer(self, batch: IntentBatch) -> None:
        assert self._steps is not None
        self._steps.start_soon(self._write_intents, batch)

    async def _end(self, sync: Sync, *, holds_slot: bool = True) -> None:
        """The sync is over: give its slot to the next one (once, whatever called this)."""
        if sync.done:
            return
        # Not reached when an abort cancels its step: then _report_cut_short speaks for it.
        sync.done = True
        try:
            await self._hook.released(self.run_id, sync.connection_id)
        finally:
            if holds_slot:
                self._limiter.release_on_behalf_of(sync)
            self._open -= 1
            if self._book:
                cid = sync.connection_id
                outcome = self._outcomes.get(cid) or unsettled_outcome(
                    has_job=cid in self._with_job, wait=self.options.wait
                )
                self._book.settled(cid, outcome)
                self._advance_stages()
            if self._open <= 0 and not self._planning:
                self._all_ended.set()

    async def _claim(self, sync: Sync) -> Adopt | bool:
        claim = await super()._claim(sync)
        # A job the hook hands over is another run's of this tool, not one started elsewhere.
        sync.via_hook = isinstance(claim, Adopt)
        return claim

    async def _next_job(self, sync: Sync, job: Job | None) -> Job | None:
        """The job to follow next (*job*, or a new one triggered), or None when the sync has
        ended here (not triggered, skipped, failed, or triggered without waiting)."""
        if job is None:
            if self.stopping:
                self._emit(
                    SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted"
                )
                return None
            sync.attempt += 1
            job = await self._start_job(sync)
            if job is None:
                return None
            # Adopted from Airbyte's 409: a job this tool did not start (see cancel_adopted).
            sync.started_elsewhere = sync.adopted and not sync.via_hook
            if sync.first_trigger is None:
                # A job the hook handed over (no trigger sent) is timed from its adoption.
                sync.first_trigger = self._clock()
        sync.seen = (*sync.seen, job.job_id)
        await self._hook.following(self.run_id, sync.connection_id, job.job_id)
        if not self.options.wait:
            return None
        return job

    async def _after_follow(self, sync: Sync, job: Job | None) -> None:
        """The step after following: the outcome of the job, or a retry (then follow again)."""
        final = await self._followed(sync, job)
        # Whatever comes next (a final event, a retry), this run no longer follows that job.
        await self._hook.released(self.run_id, sync.connection_id)
        if final is None:
            await self._end(sync)
            return
        if final.status == JobStatus.SUCCEEDED:
            self._emit(SyncSucceeded, sync, job=final)
        elif final.status == JobStatus.CANCELLED:
            self._emit(SyncCancelled, sync, job=final, error="the job was cancelled in Airbyte")
        else:
            error = f"Airbyte job {final.job_id} failed"
            if sync.attempt <= self.options.retries and not self.stopping:
                wait = self._backoff(sync.attempt)
                self._emit(SyncRetrying, sync, job=final, error=error, wait_s=wait)
                await self._pause(wait)
                again = await self._next_job(sync, None)
                if again is not None:
                    self._follow(sync, again)
                    return
            else:
                self._emit(SyncFailed, sync, job=final, error=error)
        await self._end(sync)

    async def _resume_job(self, sync: Sync) -> Job | None:
        """The job an earlier process left this sync with, if any; never sends ``POST /jobs``.

        Airbyte is read first, however late the resume: a job still running past the sync's
        timeout is then timed out and cancelled by policy (``_follow``), an interrupted trigger
        that made no job is not sent again once the timeout has passed.
        """
        point = self._resume.get(sync.connection_id)
        if point is None or point.state == "untouched":
            return None
        sync.attempt = max(point.attempt, 1)
        since = point.triggered_at or point.intent_at
        # The sync's timeout counts from its first trigger, in whichever process that was...
        counted_from = self._clock() - max(0.0, (now() - (since or now())).total_seconds())
        # ...but the reads below get at least RESUME_READ_WINDOW to learn what became of its job.
        sync.first_trigger = max(
            counted_from, self._clock() - self.options.timeout + RESUME_READ_WINDOW
        )
        if point.state == "in_flight" and point.job_id is not None:
            sync.job_id = point.job_id
            job = await self._read_job_until_known(sync, point.job_id)
            sync.first_trigger = counted_from
            self._emit(
                SyncAdopted, sync, job=job, reason=f"resumed: following job {job.job_id} again"
            )
            return job
        # A trigger was about to be sent when the earlier process stopped: did it create a job?
        sync.triggering = True
        began = point.intent_at or now()
        known, found = await self._reconcile_until_known(sync, began)
        sync.first_trigger = counted_from
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
        if self._clock() >= self._sync_deadline(sync):
            self._emit(
                SyncTimedOut,
                sync,
                error="the run was resumed after this sync's timeout had passed; its "
                "interrupted trigger made no job in Airbyte, and it was not triggered again",
            )
            raise Settled
        sync.attempt -= 1  # the interrupted attempt never reached Airbyte: this one replaces it
        return None
