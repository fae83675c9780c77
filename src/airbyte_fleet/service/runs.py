"""The worker's runs: accept, queue, execute, cancel, hand over, adopt, stop.

Each run is a :class:`~airbyte_fleet.runner.RunSession`, the same home ``airbyte-fleet run`` uses,
with the store as its journal. Everything the worker keeps is in the store's database (the SQLite
file in the state dir, or PostgreSQL shared by several replicas), through a
:class:`~airbyte_fleet.coordination.Coordinator`:

* accepted runs wait in the database's queue (``worker_runs``) until one replica *takes* one: it
  holds the run's lease, renews it every third of the lease time (:class:`LeaseKeeper`), and is the
  only process that may write the run's events (the store's fence checks the lease in the same
  transaction as each write, so a replica that lost its lease cannot trigger anything);
* at most ``max_runs`` sessions at once per replica; the others stay queued for any replica;
* a replica that dies leaves its leases to expire; then another takes the runs and resumes them from
  the journal (jobs re-attached, intents looked for at Airbyte, nothing triggered twice);
* a replica that stops with ``detach`` (SIGTERM's default) lets its sessions go and releases their
  leases at once, so another replica carries them on without waiting for the lease;
* a cancel reaches the run's holder through the database (the keeper sees the request at its next
  renewal); a queued run nobody holds is taken here and ended at once;
* the trigger hook is the database's (:class:`StoreClaims`): two runs on two replicas never trigger
  one connection twice.

A run whose store fails (a full disk, a database gone) is stopped by ``on_store_failure`` (cancel: no
job is left that no process follows) and shown from memory as finished, with the error; its lease is
let go and its queue entry stays, so a replica (this one at its next start) carries it on from the
journal as after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio

from airbyte_fleet._caller import calling_as, context_for
from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteClient
from airbyte_fleet.coordination import (
    CoordinationError,
    Coordinator,
    LeaseHeldError,
    LeaseKeeper,
    QueuedRun,
    StoreClaims,
)
from airbyte_fleet.engine.events import Event, EventSink
from airbyte_fleet.engine.hooks import TriggerHook
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, PlanError
from airbyte_fleet.engine.run import StopMode, new_run_id
from airbyte_fleet.journal import JournalError, RunRecord, RunStore
from airbyte_fleet.resolve import run_options_over
from airbyte_fleet.runner import RunSession, SessionState
from airbyte_fleet.service.ledger import LedgerEntry, LegacyLedger, first_line
from airbyte_fleet.service.options import ShutdownMode
from airbyte_fleet.service.views import RunView, listed_view, session_view, stored_view
from airbyte_fleet.sinks import LogSink

__all__ = [
    "Accepted",
    "RunConflictError",
    "RunNotFoundError",
    "RunView",
    "ShuttingDownError",
    "Worker",
]

log = get_logger("airbyte_fleet.service")

# After the cancel grace, how long sessions get to report before they are aborted, then dropped.
SETTLE_SECONDS = 5.0
# How often an idle replica looks for queued runs and for runs whose holder's lease expired.
TAKE_EVERY = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class Accepted:
    """A run just accepted: its id, whether it started here at once, what its plan warns of."""

    run_id: str
    state: SessionState
    warnings: tuple[str, ...] = ()


class RunNotFoundError(LookupError):
    pass


class RunConflictError(Exception):
    """The run exists but cannot do what was asked (it finished, or is not this worker's)."""


class ShuttingDownError(Exception):
    pass


class Worker:
    """Everything the HTTP API drives. Use from one event loop; call :meth:`start` once."""

    def __init__(
        self,
        client: AirbyteClient,
        journal: RunStore,
        coordinator: Coordinator,
        *,
        base_options: RunOptions | None = None,
        groups: Mapping[str, Selection] | None = None,
        default_selection: Selection | None = None,
        max_runs: int = 4,
        grace: float = 30.0,
        sinks: Sequence[EventSink] = (),
        on_store_failure: StopMode = "cancel",
        legacy: LegacyLedger | None = None,
        claims: TriggerHook | None = None,
        take_every: float = TAKE_EVERY,
    ) -> None:
        self.client = client
        self.journal = journal
        self.coordinator = coordinator
        self.claims: TriggerHook = claims if claims is not None else StoreClaims(coordinator)
        self.base_options = base_options or RunOptions()
        self.groups = dict(groups or {})
        self.default_selection = default_selection or Selection()
        self.max_runs = max_runs
        self.grace = grace
        self.on_store_failure: StopMode = on_store_failure
        self._legacy = legacy
        self._take_every = take_every
        self._sinks = tuple(sinks)
        # Runs this replica holds (running, or ended here and shown from memory).
        self._sessions: dict[str, RunSession] = {}
        self._active: dict[str, RunSession] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        # Accepted runs nothing is left to run from (a damaged entry, never started), with when
        # they were set aside: listed as failed so that none vanishes.
        self._lost: dict[str, tuple[datetime, RunView]] = {}
        # Runs this replica submitted and is about to start itself: never taken from the queue.
        self._reserved: set[str] = set()
        self._keeper = LeaseKeeper(coordinator, on_lost=self._on_lost, on_cancel=self._on_cancel)
        # The keeper lives in a task of its own: detach() may run in another task (shielded)
        # than start(), and a task group must be left by the task that entered it.
        self._keeping: asyncio.Task[None] | None = None
        self._keeper_up = asyncio.Event()
        self._stop_keeping = asyncio.Event()
        self._taker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._stopped = False

    # ----------------------------------------------------------------- lifecycle

    @property
    def owner(self) -> str:
        """This replica's name in the database (the holder of the runs it executes)."""
        return self.coordinator.owner

    @property
    def closing(self) -> bool:
        """No new runs are accepted (the worker is shutting down)."""
        return self._closing

    @property
    def stopped(self) -> bool:
        """Every run has ended or been let go: nothing more will happen here."""
        return self._stopped

    async def start(self) -> None:
        """Bring in what an older version kept in files, then take queued runs and runs whose
        holder's lease expired (this replica's own, after a crash), now and every second."""
        if self._legacy is not None:
            for damaged in await self._call(self._legacy.import_into, self.coordinator):
                self._take_up_damaged(damaged.run_id, damaged.reason, damaged.path)
        self._keeping = asyncio.create_task(self._keep(), name="renew leases")
        await self._keeper_up.wait()
        try:
            unfinished = self.journal.unfinished_runs()
            queued = {q.run_id for q in await self._call(self.coordinator.queued)}
        except (JournalError, CoordinationError) as exc:
            log.error("store_unreadable", error=str(exc))
            unfinished, queued = [], set()
        for run_id in unfinished:
            if run_id not in queued:
                log.warning(
                    "run_not_resumed",
                    run_id=run_id,
                    note="not started by a worker; carry it on with "
                    f"'airbyte-fleet run --resume {run_id}'",
                )
        await self._take()
        self._taker = asyncio.create_task(self._take_forever(), name="take runs")

    async def _keep(self) -> None:
        async with self._keeper:
            self._keeper_up.set()
            await self._stop_keeping.wait()

    async def _take_forever(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._take_every)
            self._wake.clear()
            try:
                await self._take()
            except Exception as exc:
                # The database is away: the next turn tries again.
                log.warning("take_runs_failed", error=str(exc))

    async def _take(self) -> None:
        """Take queued runs (and runs whose holder's lease expired) while there is room."""
        while not self._closing and len(self._active) < self.max_runs:
            exclude = frozenset(self._sessions) | frozenset(self._lost) | frozenset(self._reserved)
            queued = await self._call(self.coordinator.take_next, exclude=exclude)
            if queued is None:
                return
            if queued.run_id in self._sessions or queued.run_id in self._reserved:
                # Submitted here while the query ran: submit() starts it.
                continue
            if self._closing:
                await self._call(self.coordinator.release, [queued.run_id])
                return
            self._keeper.add(queued.run_id)
            try:
                session = self._from_queue(queued)
            except (JournalError, ValueError) as exc:
                # Kept queued and held: the next start (or another replica) tries again.
                self._lose(queued.run_id, f"the run cannot be carried on ({exc})")
                continue
            if session is None:
                continue
            self._launch(session)

    def _from_queue(self, queued: QueuedRun) -> RunSession | None:
        """The session for a run just taken (None: it had finished, and is settled now)."""
        run_id = queued.run_id
        record = self.journal.run(run_id)
        if record is not None and record.finished_at is not None:
            self._settle_entry(run_id)
            return None
        try:
            entry = LedgerEntry.model_validate_json(queued.entry)
        except ValueError as exc:
            if record is None:
                self._lose(
                    run_id,
                    f"the worker's record of this run cannot be read ({first_line(exc)}) and "
                    "the run never started, so nothing was triggered; submit it again",
                )
                return None
            log.warning("run_entry_rebuilt", run_id=run_id, error=first_line(exc))
            entry = _entry_from(record)
        session = self._restore(entry, record)
        adopted = record is not None
        log.info(
            "run_taken",
            run_id=run_id,
            state="resuming" if adopted else "starting",
            owner=self.owner,
        )
        if queued.cancel_requested:
            session.interrupt("cancel")
        return session

    def _take_up_damaged(self, run_id: str, reason: str, path: Any) -> None:
        """A run whose old ledger file cannot be read: what the journal holds of it is enough to
        carry it on (queued again from it); a run that never started is lost, and said so."""
        try:
            record = self.journal.run(run_id)
        except JournalError as exc:
            record, reason = None, f"{reason}; the journal cannot give its record: {exc}"
        if record is not None and record.finished_at is None:
            entry = _entry_from(record)
            self.coordinator.submit(
                QueuedRun(
                    run_id=run_id, submitted_at=record.started_at, entry=entry.model_dump_json()
                )
            )
            if self._legacy is not None:
                self._legacy.forget(run_id)
            log.warning("ledger_entry_rebuilt", run_id=run_id, path=str(path))
            return
        if record is not None:
            if self._legacy is not None:
                self._legacy.forget(run_id)
            return
        self._lose(
            run_id,
            f"the worker's record of this run ({path}) cannot be read ({reason}) and "
            "the run never started, so nothing was triggered; submit it again, then delete "
            "that file",
        )

    def _lose(self, run_id: str, error: str) -> None:
        log.error("run_lost", run_id=run_id, error=error)
        view = RunView(run_id=run_id, state="finished", outcome="failed", error=error)
        self._lost[run_id] = (datetime.now(UTC), view)

    def _restore(self, entry: LedgerEntry, record: RunRecord | None) -> RunSession:
        if record is None:
            session = self._session(
                entry.to_plan(),
                RunOptions.model_validate(entry.options),
                run_id=entry.run_id,
                selection=Selection.model_validate(entry.selection) if entry.selection else None,
            )
        else:
            try:
                options = RunOptions.model_validate(record.options)
            except ValueError:
                options = RunOptions.model_validate(entry.options)
            self.journal.fence(record.run_id, self.owner)
            session = RunSession.resumed(
                self.client,
                self.journal,
                record,
                options,
                hook=self.claims,
                sinks=self._sinks_for(record.run_id),
                grace=self.grace,
                on_interrupt=self.on_store_failure,
            )
        session.created_at = entry.submitted_at
        return session

    def _session(
        self, plan: Plan, options: RunOptions, *, run_id: str, selection: Selection | None
    ) -> RunSession:
        self.journal.fence(run_id, self.owner)
        return RunSession(
            self.client,
            plan,
            options,
            store=self.journal,
            run_id=run_id,
            selection=selection,
            hook=self.claims,
            sinks=self._sinks_for(run_id),
            grace=self.grace,
            on_interrupt=self.on_store_failure,
        )

    def _sinks_for(self, run_id: str) -> list[EventSink]:
        def notify(event: Event) -> None:
            self._notify(run_id)

        return [notify, LogSink(), *self._sinks]

    async def shutdown(self, mode: ShutdownMode, grace: float | None = None) -> None:
        """Stop every run by *mode*; queued runs stay queued for any replica."""
        self._closing = True
        grace = self.grace if grace is None else grace
        active = list(self._active.values())
        log.info("worker_stopping", mode=mode, runs=len(active))
        if mode == "cancel" and active:
            for session in active:
                session.interrupt("cancel")
            pending = await self._settle(active, grace + SETTLE_SECONDS)
            for session in pending:
                session.abort()
            await self._settle(pending, SETTLE_SECONDS)
        await self.detach()

    def abort(self) -> None:
        """Stop waiting for cancels: each session reports what it has not cancelled and ends."""
        for session in self._active.values():
            session.abort()

    async def detach(self) -> None:
        """Let every active run go as a crash would (jobs stay running in Airbyte, the journal
        stays unfinished) and release their leases, so that another replica, or this worker's
        next start, carries them on at once."""
        self._closing = True
        self._wake.set()
        if self._taker is not None:
            self._taker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._taker
        dropped = [s for s in self._active.values() if not self._tasks[s.run_id].done()]
        for session in dropped:
            session.let_go()
            log.info("run_detached", run_id=session.run_id, note="another replica carries it on")
        for session in await self._settle(dropped, SETTLE_SECONDS):
            log.error("run_not_stopped", run_id=session.run_id, note="its task ignored the stop")
            self._tasks[session.run_id].cancel()
        held = [run_id for run_id in self._keeper.held() if run_id not in self._lost]
        for run_id in held:
            self._keeper.remove(run_id)
        try:
            await self._call(self.coordinator.release, held)
        except CoordinationError as exc:
            log.warning("leases_not_released", runs=len(held), error=str(exc))
        self._stop_keeping.set()
        if self._keeping is not None:
            await self._keeping
        self._stopped = True
        self._notify_all()

    # ----------------------------------------------------------------- submitting

    def options_from(self, overrides: Mapping[str, Any]) -> RunOptions:
        """*overrides* (a schedule's options) over the worker's options; raises ValidationError."""
        return RunOptions.model_validate(run_options_over(self.base_options, overrides))

    async def submit(
        self,
        selection: Selection,
        options: RunOptions,
        *,
        schedule: str | None = None,
        tick: datetime | None = None,
    ) -> Accepted:
        """Plan the run, record it in the queue, start it here when there is room; returns its
        run id once it is safe to report. With *schedule* and *tick*, the tick fires once across
        every replica: the run id returned is the one that fired it, maybe elsewhere.

        Raises :class:`~airbyte_fleet.engine.plan.PlanError` for a selection that cannot run, and
        Airbyte's auth and transport errors unchanged."""
        if self._closing:
            raise ShuttingDownError("the worker is shutting down")
        chosen = self.default_selection if selection.empty else selection
        if chosen.empty:
            raise PlanError(
                "Nothing selected; give the selection connections, names, tags, workspaces, "
                "groups or all: true (or a [selection] in the worker's config file)."
            )
        run_id = new_run_id()
        with calling_as("http"):
            session = await RunSession.planned(
                self.client,
                chosen,
                options,
                groups=self.groups,
                store=self.journal,
                run_id=run_id,
                hook=self.claims,
                sinks=self._sinks_for(run_id),
                grace=self.grace,
                on_interrupt=self.on_store_failure,
            )
        if self._closing:
            raise ShuttingDownError("the worker is shutting down")
        entry = LedgerEntry(
            run_id=run_id,
            submitted_at=session.created_at,
            options=options.model_dump(mode="json"),
            selection=chosen.model_dump(mode="json"),
            plan=list(session.plan.items),
            warnings=list(session.plan.warnings),
            stages=list(session.plan.stages),
        )
        queued = QueuedRun(
            run_id=run_id,
            submitted_at=session.created_at,
            entry=entry.model_dump_json(),
            submitted_by=schedule,
        )
        self._reserved.add(run_id)
        try:
            return await self._enqueue(session, queued, tick)
        finally:
            self._reserved.discard(run_id)

    async def _enqueue(
        self, session: RunSession, queued: QueuedRun, tick: datetime | None
    ) -> Accepted:
        run_id = queued.run_id
        if queued.submitted_by is not None and tick is not None:
            fired = await self._call(self.coordinator.fire_once, queued.submitted_by, tick, queued)
            if fired != run_id:
                log.info("schedule_fired_elsewhere", schedule=queued.submitted_by, run_id=fired)
                return Accepted(fired, "queued")
        else:
            await self._call(self.coordinator.submit, queued)
        log.info("run_accepted", run_id=run_id, syncs=len(session.plan.items))
        accepted = Accepted(run_id, "queued", tuple(session.plan.warnings))
        if self._closing or len(self._active) >= self.max_runs:
            self._wake.set()
            return accepted
        # Started here at once: planned already, and no other replica waits a turn for it.
        try:
            await self._call(self.coordinator.acquire, run_id)
        except LeaseHeldError:
            return accepted  # another replica took it first
        self._keeper.add(run_id)
        self.journal.fence(run_id, self.owner)
        self._launch(session)
        return Accepted(run_id, session.state, accepted.warnings)

    def cancel(self, run_id: str) -> None:
        """Cancel the run's jobs, wherever it runs (a queued run ends at once, nothing
        triggered)."""
        if run_id in self._lost:
            raise RunConflictError(f"Run {run_id} never started; nothing to cancel.")
        session = self._sessions.get(run_id)
        if session is not None and session.state != "finished":
            session.interrupt("cancel")
            log.info("run_cancel_requested", run_id=run_id)
            return
        if session is None and self.coordinator.request_cancel(run_id):
            log.info("run_cancel_requested", run_id=run_id)
            self._end_queued(run_id)
            return
        record = self.journal.run(run_id)
        if session is None and record is None:
            raise RunNotFoundError(run_id)
        if session is not None or (record is not None and record.finished_at is not None):
            raise RunConflictError(f"Run {run_id} has already finished; nothing to cancel.")
        raise RunConflictError(
            f"Run {run_id} is not run by a worker; stop the process running it instead."
        )

    def _end_queued(self, run_id: str) -> None:
        """A cancelled run nobody holds (queued, or its holder died) is taken here and ended at
        once, whatever the room; a held one hears of the request at its holder's next renewal."""
        try:
            self.coordinator.acquire(run_id)
        except LeaseHeldError:
            return
        self._keeper.add(run_id)
        queued = self._queued(run_id)
        try:
            session = self._from_queue(queued) if queued is not None else None
        except (JournalError, ValueError) as exc:
            self._lose(run_id, f"the run cannot be carried on ({exc})")
            return
        if session is None:
            if run_id not in self._lost:
                self._keeper.remove(run_id)
            return
        session.interrupt("cancel")
        self._launch(session)

    def unrecorded(self, run_id: str) -> bool:
        """Whether the run ended here without its journal recording the end (the journal failed):
        a reader of its journal has nothing more to wait for."""
        session = self._sessions.get(run_id)
        return (
            session is not None and session.state == "finished" and session.store_error is not None
        )

    def drives(self, run_id: str) -> bool:
        """Whether this replica executes the run now: it announces the run's next events (else:
        poll the store)."""
        session = self._sessions.get(run_id)
        return session is not None and session.state != "finished"

    def is_live(self, run_id: str) -> bool:
        """Whether the run is queued or running on any replica (a schedule's previous run is
        still going; a reader has more to wait for)."""
        if self.drives(run_id):
            return True
        if run_id in self._sessions or run_id in self._lost:
            return False
        try:
            return self._queued(run_id) is not None
        except CoordinationError:
            return False

    async def check_store(self, *, within: float) -> None:
        """Raise :class:`CoordinationError` when the store does not answer a read in time."""
        try:
            with anyio.fail_after(within):
                # Abandoned, not waited for, when it hangs: a probe must get its answer.
                await anyio.to_thread.run_sync(
                    self.coordinator.holder, "readiness", abandon_on_cancel=True
                )
        except TimeoutError:
            raise CoordinationError(
                f"The worker's store did not answer within {within:g} s; check that the "
                "database is up and reachable."
            ) from None

    # ----------------------------------------------------------------- reading

    def view(self, run_id: str) -> RunView | None:
        if run_id in self._lost:
            return self._lost[run_id][1]
        session = self._sessions.get(run_id)
        if session is not None:
            return session_view(session, owner=self.owner if self.drives(run_id) else None)
        record = self.journal.run(run_id)
        holder = self.coordinator.holder(run_id)
        owner = holder.owner if holder is not None else None
        if record is not None:
            return stored_view(self.journal, record, owner=owner)
        queued = self._queued(run_id)
        return _queued_view(queued, owner) if queued is not None else None

    def recent(self, *, limit: int = 20, offset: int = 0) -> list[RunView]:
        """Newest first: runs not in the journal (queued, lost, or whose start it could not
        record), then the journal's runs."""
        fresh: list[tuple[datetime, RunView]] = [
            (s.created_at, session_view(s)) for s in self._sessions.values() if self._fresh(s)
        ]
        fresh.extend(self._lost.values())
        for queued in self.coordinator.queued():
            if queued.run_id in self._sessions or queued.run_id in self._lost:
                continue
            if self.journal.run(queued.run_id) is None:
                holder = queued.holder.owner if queued.holder is not None else None
                fresh.append((queued.submitted_at, _queued_view(queued, holder)))
        fresh.sort(key=lambda pair: pair[0], reverse=True)
        out = [view for _, view in fresh[offset : offset + limit]]
        rest = limit - len(out)
        if rest > 0:
            skip = max(0, offset - len(fresh))
            out.extend(
                listed_view(r, self._sessions.get(r.run_id))
                for r in self.journal.runs(limit=rest, offset=skip)
            )
        submitters = self.coordinator.submitters(view.run_id for view in out)
        return [dataclasses.replace(v, submitted_by=submitters.get(v.run_id)) for v in out]

    def _fresh(self, session: RunSession) -> bool:
        if not session.started:
            return True
        # A store that failed at the run's start holds nothing of it: this worker lists it.
        return session.store_error is not None and self.journal.run(session.run_id) is None

    def knows(self, run_id: str) -> bool:
        if run_id in self._sessions or run_id in self._lost:
            return True
        if self.journal.run(run_id) is not None:
            return True
        return self._queued(run_id) is not None

    def _queued(self, run_id: str) -> QueuedRun | None:
        """The run's entry in the queue (accepted, unfinished), wherever it runs."""
        return next((q for q in self.coordinator.queued() if q.run_id == run_id), None)

    def waiter(self, run_id: str) -> asyncio.Event:
        """Set at the run's next event or state change (or when the worker stops); take it
        before reading the journal, so nothing written in between is missed. For a run this
        worker does not drive, nothing will set it: poll."""
        if self._stopped:
            done = asyncio.Event()
            done.set()
            return done
        if run_id not in self._sessions:
            return asyncio.Event()
        event = self._waiters.get(run_id)
        if event is None:
            event = self._waiters[run_id] = asyncio.Event()
        return event

    # ----------------------------------------------------------------- running

    def _launch(self, session: RunSession) -> None:
        self._sessions[session.run_id] = session
        self._active[session.run_id] = session
        # The run's messages advise a worker's client (request fields, not flags).
        self._tasks[session.run_id] = asyncio.create_task(
            self._execute(session), name=f"run {session.run_id}", context=context_for("http")
        )
        self._notify(session.run_id)

    async def _execute(self, session: RunSession) -> None:
        run_id = session.run_id
        try:
            await session.run()
        except Exception as exc:
            # A bug: the run is over here; its queue entry stays for a replica to settle it from
            # the journal once the lease is let go.
            log.error("run_crashed", run_id=run_id, error=repr(exc))
        finally:
            self._active.pop(run_id, None)
            if session.taken_over or (session.state != "finished" and not self._closing):
                # Another process holds the run now (the lease was lost): it is its to show.
                log.warning("run_handed_over", run_id=run_id, note="its lease passed on")
                self._forget(run_id)
            elif session.store_error is not None:
                # Shown from memory (finished, with the error); the store holds the run
                # unfinished and its queue entry stays, so a replica carries it on.
                log.error(
                    "run_store_failed",
                    run_id=run_id,
                    error=session.store_error.message,
                    note="a replica carries the run on once the store can be written",
                )
                self._keeper.remove(run_id)
                with contextlib.suppress(CoordinationError):
                    await self._call(self.coordinator.release, [run_id])
            elif session.state == "finished" and session.finished:
                self._settle_entry(run_id)
                # The journal has all of it now; reads go there.
                self._forget(run_id)
            self._notify(run_id)
            self._wake.set()

    def _settle_entry(self, run_id: str) -> None:
        self._keeper.remove(run_id)
        try:
            self.coordinator.finish(run_id)
        except CoordinationError as exc:
            # The entry stays; whoever takes it next finds the run finished and settles it.
            log.warning("run_entry_not_settled", run_id=run_id, error=str(exc))

    def _forget(self, run_id: str) -> None:
        self._keeper.remove(run_id)
        self._sessions.pop(run_id, None)
        self._tasks.pop(run_id, None)

    def _on_lost(self, run_id: str) -> None:
        session = self._active.get(run_id)
        log.error("run_lease_lost", run_id=run_id, note="another replica may hold it now")
        if session is not None:
            session.let_go()

    def _on_cancel(self, run_id: str) -> None:
        session = self._active.get(run_id)
        if session is not None and not session.stopping:
            log.info("run_cancel_requested", run_id=run_id, via="the store")
            session.interrupt("cancel")

    async def _settle(
        self, sessions: Sequence[RunSession], seconds: float | None
    ) -> list[RunSession]:
        """Wait up to *seconds* (None: for ever) for the sessions' tasks; returns those still
        going."""
        tasks = {
            self._tasks[s.run_id]: s
            for s in sessions
            if s.run_id in self._tasks and not self._tasks[s.run_id].done()
        }
        if not tasks:
            return []
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        return [tasks[t] for t in pending]

    def _notify(self, run_id: str) -> None:
        event = self._waiters.pop(run_id, None)
        if event is not None:
            event.set()

    def _notify_all(self) -> None:
        for run_id in list(self._waiters):
            self._notify(run_id)

    @staticmethod
    async def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # Off the loop: a database that is slow to answer must not stall the API or the runs.
        return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))


def _entry_from(record: RunRecord) -> LedgerEntry:
    return LedgerEntry(
        run_id=record.run_id,
        submitted_at=record.started_at,
        options=record.options,
        selection=record.selection,
        plan=list(record.planned),
    )


def _queued_view(queued: QueuedRun, owner: str | None) -> RunView:
    try:
        total = len(LedgerEntry.model_validate_json(queued.entry).plan)
    except ValueError:
        total = 0
    return RunView(run_id=queued.run_id, state="queued", total=total, owner=owner)
