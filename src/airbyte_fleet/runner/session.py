"""A run's one home: from a plan (or a journal to carry on) to the result.

The CLI, the worker and the Python API each hold a :class:`RunSession` and nothing else of a run's
machinery. The session wires the event bus (the store as the critical sink, so nothing is triggered
that could not be recorded first; the result builder; whatever sinks the caller adds), builds the
engine with the caller's trigger hook, and offers the three ways a run can be stopped: *interrupt*
(cancel or detach its jobs by policy, then finish), *abort* (a second signal: stop waiting for
cancels) and *let go* (drop it as a crash would, for a later process to resume).

A store that fails (a full disk, a lock held past its timeout) makes the engine stop the run as an
interrupt would, by the caller's ``on_interrupt`` policy (:class:`StoreFailedError`): nothing more
is triggered, every sync still gets its outcome in the result, whose ``error`` says why, and
:meth:`RunSession.run` returns it with :attr:`RunSession.store_error` set. The store is not written
again after its first failure (a store that fails slowly, a lock timeout per write, would stretch
the stop far past its grace period), so it keeps the run unfinished, as far as it got, which is
what a later resume reads correctly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal

from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteClient
from airbyte_fleet.engine.events import (
    Event,
    EventBus,
    EventSink,
    RunFinished,
    RunStarted,
    RunTakenOverError,
    StoreFailedError,
    SyncsPlanned,
)
from airbyte_fleet.engine.hooks import TriggerHook
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, PlanParts, build_plan, is_staged, stream_plan
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.resume import ResumePoint
from airbyte_fleet.engine.run import Engine, StopMode, new_run_id
from airbyte_fleet.errors import FleetError
from airbyte_fleet.journal import RunRecord, RunStore
from airbyte_fleet.runner.replay import replay_into
from airbyte_fleet.runner.resume import resume_plan, stored_stages

__all__ = ["RunSession", "SessionState"]

log = get_logger("airbyte_fleet.runner")

# Until it runs, a session waits (in the worker's queue, or for its caller to run it).
SessionState = Literal["queued", "running", "finished"]


class RunSession:
    """One run. Build it with :meth:`planned` or :meth:`resumed`, then ``await run()``."""

    def __init__(
        self,
        client: AirbyteClient,
        plan: Plan,
        options: RunOptions,
        *,
        store: RunStore | None = None,
        run_id: str | None = None,
        selection: Selection | None = None,
        resume: Mapping[str, ResumePoint] | None = None,
        builder: ResultBuilder | None = None,
        hook: TriggerHook | None = None,
        sinks: Sequence[EventSink] = (),
        grace: float | None = None,
        on_interrupt: StopMode | None = None,
        more: PlanParts | None = None,
    ) -> None:
        """*plan*: the whole plan, or its first part when *more* brings the rest while the run
        goes on (see :meth:`planned`)."""
        self.run_id = run_id or new_run_id()
        self.plan = plan
        self.more = more
        self.options = options
        self.selection = selection
        self.resume_points = dict(resume) if resume is not None else None
        self.builder = builder or ResultBuilder()
        self.created_at = datetime.now(UTC)
        self.state: SessionState = "queued"
        # run_started has reached every sink (the store lists the run from then on).
        self.started = False
        # run_finished has reached every sink: the run is over for every later process too.
        self.finished = False
        self._let_go = False
        # The store is critical: a trigger it cannot record is a trigger not sent (and the
        # engine stops the run at the store's first failure, then leaves it out).
        self.bus = EventBus(
            [self.builder, self._observe, *sinks], critical=[store] if store is not None else []
        )
        self.engine = Engine(
            client,
            options,
            self.bus,
            run_id=self.run_id,
            grace=options.grace if grace is None else grace,
            hook=hook,
            on_interrupt=options.on_interrupt if on_interrupt is None else on_interrupt,
        )

    # ----------------------------------------------------------------- making one

    @classmethod
    async def planned(
        cls,
        client: AirbyteClient,
        selection: Selection,
        options: RunOptions,
        *,
        groups: Mapping[str, Selection] | None = None,
        store: RunStore | None = None,
        run_id: str | None = None,
        hook: TriggerHook | None = None,
        sinks: Sequence[EventSink] = (),
        grace: float | None = None,
        on_interrupt: StopMode | None = None,
        streamed: bool = False,
    ) -> RunSession:
        """Plan *selection* against Airbyte (raises :class:`~airbyte_fleet.engine.plan.PlanError`
        before anything is triggered) and return the session that runs it.

        *streamed*: return as soon as the plan's first part holding a sync is known, and read
        the rest while the run goes on (``stream_plan``'s order, sorted page by page); the
        :attr:`plan` is then that first part. "Nothing matched" still raises here: it is known
        only once the list is read, and then no part held a sync."""
        more: PlanParts | None = None
        # A staged run is planned whole: its groups need the whole graph before any starts.
        if streamed and not is_staged(selection, groups or {}):
            plan, more = await _first_part(
                stream_plan(
                    client,
                    selection,
                    groups=groups or {},
                    include_inactive=options.include_inactive,
                )
            )
        else:
            plan = await build_plan(
                client, selection, groups=groups or {}, include_inactive=options.include_inactive
            )
        for warning in plan.warnings:
            log.warning("selection_warning", message=warning)
        return cls(
            client,
            plan,
            options,
            selection=selection,
            store=store,
            run_id=run_id,
            hook=hook,
            sinks=sinks,
            grace=grace,
            on_interrupt=on_interrupt,
            more=more,
        )

    @classmethod
    def resumed(
        cls,
        client: AirbyteClient,
        store: RunStore,
        record: RunRecord,
        options: RunOptions,
        *,
        groups: Mapping[str, Selection] | None = None,
        hook: TriggerHook | None = None,
        sinks: Sequence[EventSink] = (),
        grace: float | None = None,
        on_interrupt: StopMode | None = None,
    ) -> RunSession:
        """Carry on *record* where an earlier process left it: finished syncs stay finished, jobs
        in flight are followed again, and nothing journaled as triggered is triggered again. The
        result covers the whole run: what the earlier process saw, then what this one sees.

        From a store that found itself damaged, every sync it shows as never triggered is looked
        for in Airbyte first: a job created since the run began is followed, not duplicated.

        A run whose plan was not read to its end (stopped, or Airbyte out of reach, while it was
        read) has its stored selection planned again (its groups from *groups*, as they are now)
        while it goes on: the connections the record does not hold are added to it."""
        plan, points = resume_plan(
            record, damaged=store.damage is not None, stages=stored_stages(store, record.run_id)
        )
        more: PlanParts | None = None
        if not record.planning_complete and record.selection is not None:
            more = stream_plan(
                client,
                Selection.model_validate(record.selection),
                groups=groups or {},
                include_inactive=options.include_inactive,
            )
        builder = ResultBuilder()
        replay_into(builder, store, record.run_id)
        session = cls(
            client,
            plan,
            options,
            store=store,
            run_id=record.run_id,
            resume=points,
            builder=builder,
            hook=hook,
            sinks=sinks,
            grace=grace,
            on_interrupt=on_interrupt,
            more=more,
        )
        # The journal keeps the selection the run started with; none is sent again.
        session.started = True
        return session

    # ----------------------------------------------------------------- running

    async def run(self) -> RunResult:
        """Run to the end (or until let go) and return the result so far, also when the store
        failed and the run was stopped for it (:attr:`store_error`)."""
        await self.execute()
        return self.builder.result

    async def execute(self) -> None:
        """:meth:`run` without making the result's model: a caller that writes the result out
        streams it from :attr:`builder` (one sync at a time, no model per sync)."""
        self.state = "running"
        log.info("run_executing", run_id=self.run_id, resumed=self.resume_points is not None)
        try:
            more, self.more = self.more, None
            await self.engine.run(
                self.plan, selection=self.selection, resume=self.resume_points or None, more=more
            )
        except StoreFailedError:
            pass  # the result is complete and says why; store_error tells the caller
        finally:
            if self.taken_over:
                self._let_go = True
            if not self._let_go:
                self.state = "finished"

    @property
    def taken_over(self) -> bool:
        """Whether the store said another process holds the run now (its lease passed on): the
        session let it go, as :meth:`let_go` would, and the run is the new holder's."""
        failure = self.engine.failure
        return failure is not None and isinstance(failure.cause, RunTakenOverError)

    @property
    def store_error(self) -> FleetError | None:
        """Why the store failed the run (None: it did not): the run was stopped for it, or, when
        only its end could not be recorded, finished first. The store holds the run only as far
        as it got: unfinished, for a later resume."""
        failure = self.engine.failure
        if failure is None:
            return None
        if failure.event_kind != RunFinished.kind:
            return failure
        return FleetError(
            f"the run's journal could not record its end ({failure.cause}); every "
            "sync had ended and the result is complete, and once the state directory can "
            f"be written again 'airbyte-fleet run --resume {self.run_id}' records it"
        )

    def interrupt(self, mode: StopMode | None = None) -> None:
        """Trigger nothing more; cancel (or leave running) every job in flight, by *mode* or the
        session's ``on_interrupt`` policy, then finish."""
        self.engine.stop(mode)

    def abort(self) -> None:
        """Stop waiting for cancels: jobs not cancelled yet are reported as left running."""
        self.engine.abort()

    def let_go(self) -> None:
        """Drop the run as a crash would: jobs keep running, the store keeps the run unfinished,
        and a later process resumes it."""
        self._let_go = True
        self.engine.let_go()

    @property
    def stopping(self) -> bool:
        return self.engine.stopping

    def snapshot(self) -> RunResult | None:
        """The result so far (every planned sync listed), or None before ``run_started``."""
        if not self.started:
            return None
        try:
            return self.builder.snapshot()
        except RuntimeError:
            return None

    def _observe(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.started = True
        elif isinstance(event, SyncsPlanned):
            for warning in event.warnings:
                log.warning("selection_warning", message=warning)
        elif isinstance(event, RunFinished):
            self.finished = True
            self.state = "finished"


async def _first_part(parts: PlanParts) -> tuple[Plan, PlanParts | None]:
    """The plan's first part that holds a sync (or its final one), and the parts still to come
    (None: none). Nothing is triggered before this returns, so an error here is the whole answer."""
    try:
        while True:
            part = await anext(parts)
            if part.items or part.final:
                break
    except BaseException:
        await parts.aclose()
        raise
    plan = Plan(
        items=part.items, warnings=part.warnings, connections_listed=part.connections_listed
    )
    if part.final:
        await parts.aclose()
        return plan, None
    return plan, parts
