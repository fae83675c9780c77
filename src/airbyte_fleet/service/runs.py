"""The worker's runs: accept, queue, execute, cancel, resume after a restart, stop.

Each run is one :class:`~airbyte_fleet.engine.run.Engine` on its own event bus, with the journal
as critical sink, exactly as ``airbyte-fleet run`` wires it. What the worker adds:

* a queue: at most ``max_runs`` engines at once, the rest wait in submission order;
* one shared client seen through a :class:`RunClient` per run, so that runs selecting the same
  connection share one trigger (see :mod:`airbyte_fleet.service.registry`);
* a ledger of accepted runs, so a queued run survives a restart, and a resume of every run the
  worker had not finished when it stopped;
* two ways to stop: *cancel* (the engine cancels its jobs, the run ends ``interrupted``) and
  *detach* (the engine is dropped mid-flight and its journal is left exactly as a crash would
  leave it, so the next worker resumes the run and follows the same jobs to their end).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, cast

import structlog

from airbyte_fleet.api import AirbyteClient
from airbyte_fleet.engine.events import (
    Event,
    EventBus,
    EventSink,
    RunFinished,
    RunStarted,
    SyncTriggering,
)
from airbyte_fleet.engine.journal import (
    Journal,
    RunRecord,
    RunSummary,
    reconstruct_event,
    resume_plan,
)
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, PlanError, build_plan
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.run import Engine, ResumePoint, new_run_id
from airbyte_fleet.service.ledger import Ledger, LedgerEntry, PlanItem
from airbyte_fleet.service.options import ShutdownMode
from airbyte_fleet.service.registry import RunClient, TriggerRegistry
from airbyte_fleet.sinks import LogSink

__all__ = [
    "RunConflictError",
    "RunHandle",
    "RunNotFoundError",
    "RunState",
    "RunView",
    "ShuttingDownError",
    "Worker",
]

log = structlog.get_logger("airbyte_fleet.service")

RunState = Literal["queued", "running", "finished"]

# After the cancel grace, how long engines get to report before they are aborted, then dropped.
SETTLE_SECONDS = 5.0


class RunNotFoundError(LookupError):
    pass


class RunConflictError(Exception):
    """The run exists but cannot do what was asked (it finished, or is not this worker's)."""


class ShuttingDownError(Exception):
    pass


class _RunBus(EventBus):
    """A run's bus, which the worker can mute when it lets the run go without finishing it.

    Muted, nothing more reaches any sink, the journal above all: the run stays exactly as far as
    it got, for the next worker to resume. A trigger is refused outright, because a trigger the
    journal has not recorded could be sent twice.
    """

    muted = False

    def emit(self, event: Event, *, best_effort: bool = False) -> None:
        if self.muted:
            if isinstance(event, SyncTriggering) and not best_effort:
                raise RuntimeError("the worker is letting this run go; nothing more is triggered")
            return
        super().emit(event, best_effort=best_effort)


@dataclass(eq=False)
class RunHandle:
    """A run this worker accepted and has not seen end."""

    run_id: str
    plan: Plan
    options: RunOptions
    selection: Selection | None
    submitted_at: datetime
    resume: dict[str, ResumePoint] | None = None
    builder: ResultBuilder = field(default_factory=ResultBuilder)
    state: RunState = "queued"
    # run_started is in the journal: from then on the journal lists the run.
    journaled: bool = False
    # run_finished is in the journal: the run is over for every later worker too.
    finished: bool = False
    cancel_requested: bool = False
    engine: Engine | None = None
    bus: _RunBus | None = None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.plan.warnings


@dataclass(frozen=True)
class RunView:
    """What the API shows of a run, wherever it is known from."""

    run_id: str
    state: RunState
    result: RunResult | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: str | None = None
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "result": self.result.model_dump(mode="json") if self.result is not None else None,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "outcome": self.outcome,
            "total": self.total,
            "counts": dict(self.counts),
        }


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
    ) -> None:
        self.client = client
        self.journal = journal
        self.ledger = ledger
        self.registry = TriggerRegistry()
        self.base_options = base_options or RunOptions()
        self.groups = dict(groups or {})
        self.default_selection = default_selection or Selection()
        self.max_runs = max_runs
        self.grace = grace
        self._sinks = tuple(sinks)
        self._handles: dict[str, RunHandle] = {}
        self._queue: deque[RunHandle] = deque()
        self._active: dict[str, RunHandle] = {}
        self._waiters: dict[str, asyncio.Event] = {}
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
        """Take up every run the ledger holds: unfinished runs resume, queued ones queue again."""
        for entry in self.ledger.entries():
            record = self.journal.run(entry.run_id)
            if record is not None and record.finished_at is not None:
                self.ledger.remove(entry.run_id)
                continue
            handle = self._restore(entry, record)
            self._handles[handle.run_id] = handle
            self._queue.append(handle)
            log.info(
                "run_restored",
                run_id=handle.run_id,
                state="resuming" if handle.journaled else "queued",
            )
        for run_id in self.journal.unfinished_runs():
            if run_id not in self._handles:
                log.warning(
                    "run_not_resumed",
                    run_id=run_id,
                    note="not started by this worker; carry it on with "
                    f"'airbyte-fleet run --resume {run_id}'",
                )
        self._pump()

    def _restore(self, entry: LedgerEntry, record: RunRecord | None) -> RunHandle:
        selection = Selection.model_validate(entry.selection) if entry.selection else None
        if record is None:
            return RunHandle(
                run_id=entry.run_id,
                plan=entry.to_plan(),
                options=RunOptions.model_validate(entry.options),
                selection=selection,
                submitted_at=entry.submitted_at,
            )
        plan, points = resume_plan(record)
        builder = ResultBuilder()
        # The result covers the whole run: what the earlier worker saw, then what this one sees.
        for _, data in self.journal.events(record.run_id):
            with contextlib.suppress(ValueError):
                builder(reconstruct_event(data))
        try:
            options = RunOptions.model_validate(record.options)
        except ValueError:
            options = RunOptions.model_validate(entry.options)
        return RunHandle(
            run_id=record.run_id,
            plan=plan,
            options=options,
            # The journal keeps the selection the run started with; none is sent again.
            selection=None,
            submitted_at=entry.submitted_at,
            resume=points,
            builder=builder,
            journaled=True,
        )

    async def shutdown(self, mode: ShutdownMode, grace: float | None = None) -> None:
        """Stop every run by *mode*; queued runs stay in the ledger for the next start."""
        self._closing = True
        grace = self.grace if grace is None else grace
        active = list(self._active.values())
        log.info("worker_stopping", mode=mode, runs=len(active), queued=len(self._queue))
        if mode == "cancel" and active:
            for handle in active:
                self._stop_engine(handle)
            pending = await _settle(active, grace + SETTLE_SECONDS)
            if pending:
                for handle in pending:
                    if handle.engine is not None:
                        handle.engine.abort()
                await _settle(pending, SETTLE_SECONDS)
        await self.detach()

    def abort(self) -> None:
        """Stop waiting for cancels: each engine reports what it has not cancelled and ends."""
        for handle in self._active.values():
            if handle.engine is not None:
                handle.stop.set()
                handle.engine.abort()

    async def detach(self) -> None:
        """Let every active run go as a crash would: jobs stay running in Airbyte, the journal
        stays unfinished, and the next worker resumes the runs."""
        self._closing = True
        dropped = [h for h in self._active.values() if h.task is not None and not h.task.done()]
        for handle in dropped:
            if handle.bus is not None:
                handle.bus.muted = True
            handle.stop.set()
            assert handle.task is not None
            handle.task.cancel()
            log.info("run_detached", run_id=handle.run_id, note="resumed at the next start")
        for handle in await _settle(dropped, SETTLE_SECONDS):
            log.error("run_not_stopped", run_id=handle.run_id, note="its task ignored the cancel")
        self._stopped = True
        self._notify_all()

    # ----------------------------------------------------------------- submitting

    def options_from(self, overrides: Mapping[str, Any]) -> RunOptions:
        """*overrides* (a request's options) over the worker's options; raises ValidationError."""
        return RunOptions.model_validate({**self.base_options.model_dump(), **overrides})

    async def plan(self, selection: Selection, options: RunOptions) -> Plan:
        """Raises :class:`~airbyte_fleet.engine.plan.PlanError` for a selection that cannot run,
        and Airbyte's auth and transport errors unchanged."""
        chosen = self.default_selection if selection.empty else selection
        if chosen.empty:
            raise PlanError(
                "Nothing selected; give the selection connections, names, tags, workspaces, "
                "groups or all: true (or a [selection] in the worker's config file)."
            )
        return await build_plan(
            self.client, chosen, groups=self.groups, include_inactive=options.include_inactive
        )

    async def submit(
        self, selection: Selection, options: RunOptions, *, plan: Plan | None = None
    ) -> RunHandle:
        """Plan the run, record it, queue it; returns once it is safe to report its id."""
        if self._closing:
            raise ShuttingDownError("the worker is shutting down")
        chosen = self.default_selection if selection.empty else selection
        plan = plan if plan is not None else await self.plan(selection, options)
        if self._closing:
            raise ShuttingDownError("the worker is shutting down")
        for warning in plan.warnings:
            log.warning("selection_warning", message=warning)
        handle = RunHandle(
            run_id=new_run_id(),
            plan=plan,
            options=options,
            selection=chosen,
            submitted_at=datetime.now(UTC),
        )
        self.ledger.add(
            LedgerEntry(
                run_id=handle.run_id,
                submitted_at=handle.submitted_at,
                options=options.model_dump(mode="json"),
                selection=chosen.model_dump(mode="json"),
                plan=[PlanItem.of(item) for item in plan.items],
                warnings=list(plan.warnings),
            )
        )
        self._handles[handle.run_id] = handle
        self._queue.append(handle)
        log.info("run_accepted", run_id=handle.run_id, syncs=len(plan.items))
        self._pump()
        return handle

    def cancel(self, run_id: str) -> RunHandle:
        """Cancel the run's jobs (a queued run ends at once, nothing triggered)."""
        handle = self._handles.get(run_id)
        if handle is None or handle.state == "finished":
            record = self.journal.run(run_id)
            if handle is None and record is None:
                raise RunNotFoundError(run_id)
            if handle is not None or (record is not None and record.finished_at is not None):
                raise RunConflictError(f"Run {run_id} has already finished; nothing to cancel.")
            raise RunConflictError(
                f"Run {run_id} is not run by this worker; stop the process running it instead."
            )
        handle.cancel_requested = True
        if handle.state == "queued":
            with contextlib.suppress(ValueError):
                self._queue.remove(handle)
            # Run it with its engine already stopped: every sync is skipped, nothing is sent, and
            # the run still ends with a journaled result like any other.
            self._launch(handle, stopped=True)
        else:
            self._stop_engine(handle)
        log.info("run_cancel_requested", run_id=run_id)
        return handle

    def is_running(self, run_id: str) -> bool:
        """Whether the run is queued or running here (a scheduler's ``is_running``)."""
        handle = self._handles.get(run_id)
        return handle is not None and handle.state != "finished"

    # ----------------------------------------------------------------- reading

    def view(self, run_id: str) -> RunView | None:
        handle = self._handles.get(run_id)
        if handle is not None:
            return self._handle_view(handle)
        record = self.journal.run(run_id)
        if record is None:
            return None
        finished = record.finished_at is not None
        return RunView(
            run_id=run_id,
            state="finished" if finished else "running",
            result=self.journal.rebuild_result(run_id) if finished else None,
            started_at=record.started_at,
            finished_at=record.finished_at,
            outcome=record.outcome if finished else None,
            total=record.total,
            counts=record.counts,
        )

    def _handle_view(self, handle: RunHandle) -> RunView:
        result: RunResult | None = None
        started: datetime | None = None
        if handle.journaled or handle.finished:
            with contextlib.suppress(RuntimeError):
                snapshot = handle.builder.snapshot()
                started = snapshot.started_at
                if handle.state == "finished":
                    result = snapshot
        return RunView(
            run_id=handle.run_id,
            state=handle.state,
            result=result,
            submitted_at=handle.submitted_at,
            started_at=started,
            finished_at=result.finished_at if result is not None else None,
            outcome=result.outcome if result is not None else None,
            total=len(handle.plan.items),
            counts=dict(result.counts) if result is not None else {},
        )

    def list(self, *, limit: int = 20, offset: int = 0) -> list[RunView]:
        """Newest first: runs not in the journal yet (queued), then the journal's runs."""
        fresh = sorted(
            (h for h in self._handles.values() if not h.journaled),
            key=lambda h: h.submitted_at,
            reverse=True,
        )
        out = [self._handle_view(h) for h in fresh[offset : offset + limit]]
        rest = limit - len(out)
        if rest > 0:
            skip = max(0, offset - len(fresh))
            out.extend(self._summary_view(s) for s in self.journal.runs(limit=rest, offset=skip))
        return out

    def _summary_view(self, summary: RunSummary) -> RunView:
        handle = self._handles.get(summary.run_id)
        finished = summary.finished_at is not None and (handle is None or handle.finished)
        return RunView(
            run_id=summary.run_id,
            state="finished" if finished else "running",
            started_at=summary.started_at,
            finished_at=summary.finished_at if finished else None,
            outcome=summary.outcome if finished else None,
            total=summary.total,
            counts=dict(summary.counts),
        )

    def knows(self, run_id: str) -> bool:
        return run_id in self._handles or self.journal.run(run_id) is not None

    def is_live(self, run_id: str) -> bool:
        """Whether this worker will announce the run's next events (else: poll the journal)."""
        handle = self._handles.get(run_id)
        return handle is not None and handle.state != "finished"

    def waiter(self, run_id: str) -> asyncio.Event:
        """Set at the run's next event or state change (or when the worker stops); take it
        before reading the journal, so nothing written in between is missed. For a run this
        worker does not drive, nothing will set it: poll."""
        if self._stopped:
            done = asyncio.Event()
            done.set()
            return done
        if run_id not in self._handles:
            return asyncio.Event()
        event = self._waiters.get(run_id)
        if event is None:
            event = self._waiters[run_id] = asyncio.Event()
        return event

    # ----------------------------------------------------------------- running

    def _pump(self) -> None:
        while not self._closing and self._queue and len(self._active) < self.max_runs:
            self._launch(self._queue.popleft())

    def _launch(self, handle: RunHandle, *, stopped: bool = False) -> None:
        bus = _RunBus(
            [
                handle.builder,
                self.registry.sink(handle.run_id),
                lambda event: self._observe(handle, event),
                LogSink(),
                *self._sinks,
            ],
            critical=[self.journal],
        )
        client = RunClient(self.client, self.registry, handle.run_id, handle.stop)
        # RunClient stands in for the shared client: every method the engine calls is either
        # its own (the trigger gate) or the shared client's, reached through __getattr__.
        engine = Engine(
            cast(AirbyteClient, client), handle.options, bus, run_id=handle.run_id, grace=self.grace
        )
        if stopped:
            engine.stop("cancel")
            handle.stop.set()
        handle.bus, handle.engine, handle.state = bus, engine, "running"
        self._active[handle.run_id] = handle
        handle.task = asyncio.create_task(self._execute(handle), name=f"run {handle.run_id}")
        self._notify(handle.run_id)

    async def _execute(self, handle: RunHandle) -> None:
        assert handle.engine is not None
        log.info("run_executing", run_id=handle.run_id, resumed=handle.resume is not None)
        try:
            await handle.engine.run(
                handle.plan, selection=handle.selection, resume=handle.resume or None
            )
        except Exception as exc:
            # A journal that refused run_finished, or a bug: the run is over here either way,
            # and the ledger keeps it for the next start to settle from the journal.
            log.error("run_crashed", run_id=handle.run_id, error=repr(exc))
        finally:
            self.registry.forget_run(handle.run_id)
            self._active.pop(handle.run_id, None)
            muted = handle.bus is not None and handle.bus.muted
            if not muted:
                handle.state = "finished"
                if handle.finished:
                    try:
                        self.ledger.remove(handle.run_id)
                    except OSError as exc:
                        log.warning("ledger_remove_failed", run_id=handle.run_id, error=str(exc))
                    # The journal has all of it now; reads go there.
                    self._handles.pop(handle.run_id, None)
            self._notify(handle.run_id)
            self._pump()

    def _observe(self, handle: RunHandle, event: Event) -> None:
        if isinstance(event, RunStarted):
            handle.journaled = True
        elif isinstance(event, RunFinished):
            handle.finished = True
            handle.state = "finished"
        self._notify(handle.run_id)

    def _stop_engine(self, handle: RunHandle) -> None:
        handle.stop.set()
        if handle.engine is not None:
            handle.engine.stop("cancel")

    def _notify(self, run_id: str) -> None:
        event = self._waiters.pop(run_id, None)
        if event is not None:
            event.set()

    def _notify_all(self) -> None:
        for run_id in list(self._waiters):
            self._notify(run_id)


async def _settle(handles: Sequence[RunHandle], seconds: float | None) -> list[RunHandle]:
    """Wait up to *seconds* (None: for ever) for the handles' tasks; returns those still going."""
    tasks = {h.task: h for h in handles if h.task is not None and not h.task.done()}
    if not tasks:
        return []
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    return [tasks[t] for t in pending]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
