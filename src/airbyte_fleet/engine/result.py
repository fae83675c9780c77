"""The one aggregate result of a run, built only from events (it is a sink like any other)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from airbyte_fleet._redact import redact
from airbyte_fleet.engine.events import (
    Event,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncDetached,
    SyncEvent,
    SyncRetrying,
    SyncSkipped,
    SyncStatusChanged,
    SyncTriggered,
)
from airbyte_fleet.engine.outcome import (
    OK_OUTCOMES,
    OUTCOMES,
    Outcome,
    final_outcome,
    run_outcome,
    unsettled_outcome,
)

__all__ = ["AttemptRecord", "ResultBuilder", "RunResult", "SyncResult", "Totals"]

# A summary names this many failed syncs, then counts the rest: it must stay one readable line.
_FAILURES_SHOWN = 3


class AttemptRecord(BaseModel):
    """One job we triggered or adopted for a connection (``--retries`` makes several)."""

    attempt: int
    job_id: int | None = None
    adopted: bool = False
    status: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None


class SyncResult(BaseModel):
    """One connection's part of a run: its last job and how it ended (``history`` has each job
    when retries or an adopted job made several)."""

    connection_id: str
    connection_name: str = ""
    workspace_id: str = ""
    job_id: int | None = None
    job_type: str = "sync"
    attempts: int = 0
    outcome: Outcome | None = None
    status: str | None = Field(default=None, description="Airbyte's last reported job status")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    rows_synced: int | None = None
    bytes_synced: int | None = None
    error: str | None = None
    history: list[AttemptRecord] = Field(default_factory=list)


class Totals(BaseModel):
    """Rows and bytes over every sync of the run, as Airbyte reported them."""

    rows_synced: int = 0
    bytes_synced: int = 0


class RunResult(BaseModel):
    """What a run did, once: its outcome, counts by sync outcome, totals, and one
    :class:`SyncResult` per selected connection. ``outcome`` is ``succeeded`` when every sync
    succeeded, was skipped by policy or (without waiting) was triggered; ``failed`` when any
    failed, was cancelled, timed out or could not be run; ``interrupted`` when the run was
    stopped first. Failed syncs never raise: they are here."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    duration_s: float | None = None
    job_type: str = "sync"
    outcome: Literal["succeeded", "failed", "interrupted", "running"] = "running"
    counts: dict[str, int] = Field(default_factory=dict)
    totals: Totals = Field(default_factory=Totals)
    syncs: list[SyncResult] = Field(default_factory=list)
    error: str | None = Field(
        default=None,
        description="why the run stopped by itself (its journal refused a write); None otherwise",
    )

    @property
    def ok(self) -> bool:
        """The run succeeded: every sync ended as asked (see ``outcome``)."""
        return self.outcome == "succeeded"

    @property
    def failures(self) -> list[SyncResult]:
        """The syncs that did not end as asked (failed, cancelled, timed out, error, or still
        open when the run was interrupted)."""
        return [s for s in self.syncs if s.outcome not in OK_OUTCOMES]

    @property
    def summary(self) -> str:
        """One sentence for a log line or an orchestrator's failure message: the counts, then
        the first failures by name with their error."""
        counts = ", ".join(f"{n} {outcome}" for outcome, n in self.counts.items() if n)
        total = len(self.syncs)
        text = f"Run {self.run_id} {self.outcome}: {total} sync{'' if total == 1 else 's'}"
        text += f" ({counts})" if counts else ""
        failures = self.failures
        if failures:
            shown = "; ".join(
                f"{s.connection_name or s.connection_id}: {s.error or s.outcome or 'no outcome'}"
                for s in failures[:_FAILURES_SHOWN]
            )
            more = len(failures) - _FAILURES_SHOWN
            text += f"; {shown}" + (f"; and {more} more" if more > 0 else "")
        return text + "."


class ResultBuilder:
    """Subscribe it to the bus; :attr:`result` is complete once ``run_finished`` has passed."""

    def __init__(self) -> None:
        self._result: RunResult | None = None
        self._syncs: dict[str, SyncResult] = {}
        self._wait = True

    @property
    def result(self) -> RunResult:
        if self._result is None:
            raise RuntimeError("no run has started")
        return self._result

    def snapshot(self) -> RunResult:
        """The result so far, every planned sync listed (outcome None while it is still open)."""
        current = self.result.model_copy(deep=True)
        if current.finished_at is None:
            current.syncs = [s.model_copy(deep=True) for s in self._syncs.values()]
        return current

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._start(event)
        elif isinstance(event, RunFinished):
            self._finish(event)
        elif isinstance(event, SyncEvent):
            self._sync(event)

    def _start(self, event: RunStarted) -> None:
        self._wait = event.wait
        if event.resumed and self._result is not None and self._result.run_id == event.run_id:
            # Carrying on a run whose earlier events were replayed into us: keep what they said.
            return
        self._syncs = {
            p.connection_id: SyncResult(
                connection_id=p.connection_id,
                connection_name=p.connection_name,
                workspace_id=p.workspace_id,
                job_type=event.job_type,
            )
            for p in event.planned
        }
        self._result = RunResult(run_id=event.run_id, started_at=event.at, job_type=event.job_type)

    def _sync(self, event: SyncEvent) -> None:
        # Every error text reaches the result (and stdout) through here: one secret filter for all.
        error = redact(event.error) if event.error else None
        sync = self._syncs.get(event.connection_id)
        if sync is None:
            sync = SyncResult(connection_id=event.connection_id, job_type=event.job_type)
            self._syncs[event.connection_id] = sync
        sync.connection_name = event.connection_name or sync.connection_name
        sync.workspace_id = event.workspace_id or sync.workspace_id
        if event.job_id is not None:
            sync.job_id = event.job_id
        if event.status is not None:
            sync.status = event.status
        if event.rows_synced is not None:
            sync.rows_synced = event.rows_synced
        if event.bytes_synced is not None:
            sync.bytes_synced = event.bytes_synced
        record = self._attempt(sync, event)
        if event.status is not None:
            record.status = event.status
        if isinstance(event, SyncTriggered | SyncAdopted):
            record.job_id = event.job_id
            record.adopted = isinstance(event, SyncAdopted)
            record.started_at = event.at
            if sync.started_at is None:
                sync.started_at = event.at
            sync.error = None
        elif isinstance(event, SyncStatusChanged | SyncRetrying | SyncDetached):
            if isinstance(event, SyncRetrying | SyncDetached):
                record.error = error
                sync.error = error
            return
        final = final_outcome(event)
        if final is not None:
            sync.outcome = final
            sync.error = error or (
                redact(event.reason) if isinstance(event, SyncSkipped) and event.reason else None
            )
            record.finished_at = event.at
            record.error = error
            sync.finished_at = event.at
            if sync.started_at is not None:
                sync.duration_s = round((event.at - sync.started_at).total_seconds(), 3)

    @staticmethod
    def _attempt(sync: SyncResult, event: SyncEvent) -> AttemptRecord:
        if not sync.history or sync.history[-1].attempt != event.attempt:
            if isinstance(event, SyncSkipped) and event.job_id is None:
                # Skipped before any job: no attempt to record.
                return AttemptRecord(attempt=event.attempt)
            sync.history.append(AttemptRecord(attempt=event.attempt))
            sync.attempts = len(sync.history)
        return sync.history[-1]

    def _finish(self, event: RunFinished) -> None:
        result = self.result
        for sync in self._syncs.values():
            if sync.outcome is None:
                sync.outcome = unsettled_outcome(has_job=sync.job_id is not None, wait=self._wait)
                if sync.outcome == "error":
                    # Never silently drop a connection: if nothing final was heard, say so.
                    sync.error = sync.error or (
                        "interrupted before the sync finished"
                        if event.interrupted
                        else "the run ended without a final state for this sync"
                    )
        syncs = list(self._syncs.values())
        counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        for sync in syncs:
            counts[sync.outcome or "error"] += 1
        result.syncs = syncs
        result.counts = counts
        result.totals = Totals(
            rows_synced=sum(s.rows_synced or 0 for s in syncs),
            bytes_synced=sum(s.bytes_synced or 0 for s in syncs),
        )
        result.finished_at = event.at
        result.duration_s = round((event.at - result.started_at).total_seconds(), 3)
        result.outcome = run_outcome(
            (s.outcome or "error" for s in syncs),
            interrupted=event.interrupted,
            failed=event.error is not None,
        )
        result.error = redact(event.error) if event.error else None
