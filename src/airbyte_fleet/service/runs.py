"""The worker's runs: accept, queue, execute, cancel, resume after a restart, stop.

Each run is a :class:`~airbyte_fleet.runner.RunSession`, the same home ``airbyte-fleet run`` uses,
with the journal as its store. What the worker adds:

* a queue: at most ``max_runs`` sessions at once, the rest wait in submission order;
* one shared client, and one :class:`~airbyte_fleet.service.claims.WorkerClaims` as every session's
  trigger hook, so that runs selecting the same connection share one trigger;
* a ledger of accepted runs, so a queued run survives a restart, and a resume of every run the
  worker had not finished when it stopped;
* two ways to stop: *cancel* (the session cancels its jobs, the run ends ``interrupted``) and
  *detach* (the session is let go mid-flight and its journal is left exactly as a crash would
  leave it, so the next worker resumes the run and follows the same jobs to their end).

A run whose journal fails (a full disk) is stopped by ``on_store_failure`` (cancel: no job is left
that no process follows) and shown from memory as finished, with the error; its ledger entry stays,
so the next start carries it on from the journal as after a crash. A run whose ledger entry is
damaged is carried on from the journal; one that never started is listed as failed, with why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from airbyte_fleet._caller import calling_as, context_for
from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteClient
from airbyte_fleet.engine.events import Event, EventSink
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, PlanError
from airbyte_fleet.engine.run import StopMode, new_run_id
from airbyte_fleet.journal import Journal, JournalError, RunRecord
from airbyte_fleet.resolve import run_options_over
from airbyte_fleet.runner import RunSession
from airbyte_fleet.service.claims import WorkerClaims
from airbyte_fleet.service.ledger import DamagedEntry, Ledger, LedgerEntry
from airbyte_fleet.service.options import ShutdownMode
from airbyte_fleet.service.views import RunView, listed_view, session_view, stored_view
from airbyte_fleet.sinks import LogSink

__all__ = [
    "RunConflictError",
    "RunNotFoundError",
    "RunView",
    "ShuttingDownError",
    "Worker",
]

log = get_logger("airbyte_fleet.service")

# After the cancel grace, how long sessions get to report before they are aborted, then dropped.
SETTLE_SECONDS = 5.0


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
        journal: Journal,
        ledger: Ledger,
        *,
        base_options: RunOptions | None = None,
        groups: Mapping[str, Selection] | None = None,
        default_selection: Selection | None = None,
        max_runs: int = 4,
        grace: float = 30.0,
        sinks: Sequence[EventSink] = (),
        on_store_failure: StopMode = "cancel",
    ) -> None:
        self.client = client
        self.journal = journal
        self.ledger = ledger
        self.claims = WorkerClaims()
        self.base_options = base_options or RunOptions()
        self.groups = dict(groups or {})
        self.default_selection = default_selection or Selection()
        self.max_runs = max_runs
        self.grace = grace
        self.on_store_failure: StopMode = on_store_failure
        self._sinks = tuple(sinks)
        self._sessions: dict[str, RunSession] = {}
        self._queue: deque[RunSession] = deque()
        self._active: dict[str, RunSession] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        # Accepted runs nothing is left to run from (a damaged ledger entry, never started),
        # with when they were set aside: listed as failed so that none vanishes.
        self._lost: dict[str, tuple[datetime, RunView]] = {}
        self._closing = False
        self._stopped = False

    # ----------------------------------------------------------------- lifecycle

    @property
    def closing(self) -> bool:
        """No new runs are accepted (the worker is shutting down)."""
        return self._closing

    @property
    def stopped(self) -> bool:
        """Every run has ended or been let go: nothing more will happen here."""
        return self._stopped

    async def start(self) -> None:
        """Take up every run the ledger holds: unfinished runs resume, queued ones queue again;
        a run whose entry is damaged is carried on from the journal, or listed as failed."""
        for entry in self.ledger.entries():
            try:
                record = self.journal.run(entry.run_id)
                if record is not None and record.finished_at is not None:
                    self.ledger.remove(entry.run_id)
                    continue
                session = self._restore(entry, record)
            except JournalError as exc:
                # Kept in the ledger: a journal repaired or replaced lets the next start try again.
                self._lose(
                    entry.run_id,
                    f"the journal cannot give its record ({exc}); the next start tries again",
                )
                continue
            self._take_up(session)
        for damaged in self.ledger.damaged():
            self._take_up_damaged(damaged)
        try:
            unfinished = self.journal.unfinished_runs()
        except JournalError as exc:
            log.error("journal_unreadable", error=str(exc))
            unfinished = []
        for run_id in unfinished:
            if run_id not in self._sessions:
                log.warning(
                    "run_not_resumed",
                    run_id=run_id,
                    note="not started by this worker; carry it on with "
                    f"'airbyte-fleet run --resume {run_id}'",
                )
        self._pump()

    def _take_up(self, session: RunSession) -> None:
        self._sessions[session.run_id] = session
        self._queue.append(session)
        log.info(
            "run_restored",
            run_id=session.run_id,
            state="resuming" if session.started else "queued",
        )

    def _take_up_damaged(self, damaged: DamagedEntry) -> None:
        """A run whose ledger entry cannot be read: what the journal holds of it is enough to
        carry it on (or to know it finished); a run that never started is lost, and said so."""
        try:
            record = self.journal.run(damaged.run_id)
        except JournalError as exc:
            record, reason = None, f"{damaged.reason}; the journal cannot give its record: {exc}"
        else:
            reason = damaged.reason
        if record is not None and record.finished_at is not None:
            self.ledger.remove(damaged.run_id)
            return
        if record is not None:
            entry = LedgerEntry(
                run_id=record.run_id,
                submitted_at=record.started_at,
                options=record.options,
                selection=record.selection,
                plan=list(record.planned),
            )
            try:
                session = self._restore(entry, record)
            except (JournalError, ValueError) as exc:
                self._lose(damaged.run_id, f"{reason}; nor can the journal carry it on: {exc}")
                return
            self.ledger.add(entry)
            with contextlib.suppress(OSError):
                damaged.path.unlink()
            log.warning("ledger_entry_rebuilt", run_id=record.run_id, path=str(damaged.path))
            self._take_up(session)
            return
        self._lose(
            damaged.run_id,
            f"the worker's record of this run ({damaged.path}) cannot be read ({reason}) and "
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
        """Stop every run by *mode*; queued runs stay in the ledger for the next start."""
        self._closing = True
        grace = self.grace if grace is None else grace
        active = list(self._active.values())
        log.info("worker_stopping", mode=mode, runs=len(active), queued=len(self._queue))
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
        """Let every active run go as a crash would: jobs stay running in Airbyte, the journal
        stays unfinished, and the next worker resumes the runs."""
        self._closing = True
        dropped = [s for s in self._active.values() if not self._tasks[s.run_id].done()]
        for session in dropped:
            session.let_go()
            log.info("run_detached", run_id=session.run_id, note="resumed at the next start")
        for session in await self._settle(dropped, SETTLE_SECONDS):
            log.error("run_not_stopped", run_id=session.run_id, note="its task ignored the stop")
            self._tasks[session.run_id].cancel()
        self._stopped = True
        self._notify_all()

    # ----------------------------------------------------------------- submitting

    def options_from(self, overrides: Mapping[str, Any]) -> RunOptions:
        """*overrides* (a schedule's options) over the worker's options; raises ValidationError."""
        return RunOptions.model_validate(run_options_over(self.base_options, overrides))

    async def submit(self, selection: Selection, options: RunOptions) -> RunSession:
        """Plan the run, record it, queue it; returns once it is safe to report its id.

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
        self.ledger.add(
            LedgerEntry(
                run_id=session.run_id,
                submitted_at=session.created_at,
                options=options.model_dump(mode="json"),
                selection=chosen.model_dump(mode="json"),
                plan=list(session.plan.items),
                warnings=list(session.plan.warnings),
            )
        )
        self._sessions[session.run_id] = session
        self._queue.append(session)
        log.info("run_accepted", run_id=session.run_id, syncs=len(session.plan.items))
        self._pump()
        return session

    def cancel(self, run_id: str) -> RunSession:
        """Cancel the run's jobs (a queued run ends at once, nothing triggered)."""
        if run_id in self._lost:
            raise RunConflictError(f"Run {run_id} never started; nothing to cancel.")
        session = self._sessions.get(run_id)
        if session is None or session.state == "finished":
            record = self.journal.run(run_id)
            if session is None and record is None:
                raise RunNotFoundError(run_id)
            if session is not None or (record is not None and record.finished_at is not None):
                raise RunConflictError(f"Run {run_id} has already finished; nothing to cancel.")
            raise RunConflictError(
                f"Run {run_id} is not run by this worker; stop the process running it instead."
            )
        # Stopped before it starts, a queued run skips every sync, sends nothing, and still ends
        # with a journaled result like any other.
        session.interrupt("cancel")
        if session.state == "queued":
            with contextlib.suppress(ValueError):
                self._queue.remove(session)
            self._launch(session)
        log.info("run_cancel_requested", run_id=run_id)
        return session

    def unrecorded(self, run_id: str) -> bool:
        """Whether the run ended here without its journal recording the end (the journal failed):
        a reader of its journal has nothing more to wait for."""
        session = self._sessions.get(run_id)
        return (
            session is not None and session.state == "finished" and session.store_error is not None
        )

    def is_live(self, run_id: str) -> bool:
        """Whether the run is queued or running here: this worker will announce its next events
        (else: poll the journal), and a schedule's previous run is still going."""
        session = self._sessions.get(run_id)
        return session is not None and session.state != "finished"

    # ----------------------------------------------------------------- reading

    def view(self, run_id: str) -> RunView | None:
        if run_id in self._lost:
            return self._lost[run_id][1]
        session = self._sessions.get(run_id)
        if session is not None:
            return session_view(session)
        record = self.journal.run(run_id)
        return stored_view(self.journal, record) if record is not None else None

    def recent(self, *, limit: int = 20, offset: int = 0) -> list[RunView]:
        """Newest first: runs not in the journal (queued, lost, or whose start it could not
        record), then the journal's runs."""
        fresh = sorted(
            [
                *(
                    (s.created_at, session_view(s))
                    for s in self._sessions.values()
                    if self._fresh(s)
                ),
                *self._lost.values(),
            ],
            key=lambda pair: pair[0],
            reverse=True,
        )
        out = [view for _, view in fresh[offset : offset + limit]]
        rest = limit - len(out)
        if rest > 0:
            skip = max(0, offset - len(fresh))
            out.extend(
                listed_view(r, self._sessions.get(r.run_id))
                for r in self.journal.runs(limit=rest, offset=skip)
            )
        return out

    def _fresh(self, session: RunSession) -> bool:
        if not session.started:
            return True
        # A store that failed at the run's start holds nothing of it: this worker lists it.
        return session.store_error is not None and self.journal.run(session.run_id) is None

    def knows(self, run_id: str) -> bool:
        return run_id in self._sessions or self.journal.run(run_id) is not None

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

    def _pump(self) -> None:
        while not self._closing and self._queue and len(self._active) < self.max_runs:
            self._launch(self._queue.popleft())

    def _launch(self, session: RunSession) -> None:
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
            # A bug: the run is over here, and the ledger keeps it for the next start to settle
            # from the journal.
            log.error("run_crashed", run_id=run_id, error=repr(exc))
        finally:
            self._active.pop(run_id, None)
            if session.store_error is not None:
                # Shown from memory (finished, with the error); the journal holds the run
                # unfinished and the ledger keeps it, so the next start carries it on.
                log.error(
                    "run_store_failed",
                    run_id=run_id,
                    error=session.store_error.message,
                    note="the worker's next start carries the run on",
                )
            elif session.state == "finished" and session.finished:
                try:
                    self.ledger.remove(run_id)
                except OSError as exc:
                    log.warning("ledger_remove_failed", run_id=run_id, error=str(exc))
                # The journal has all of it now; reads go there.
                self._sessions.pop(run_id, None)
                self._tasks.pop(run_id, None)
            self._notify(run_id)
            self._pump()

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
