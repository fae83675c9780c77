"""The one aggregate result of a run, built only from events (it is a sink like any other).

While a run goes, :class:`ResultBuilder` keeps one slotted record per sync (a few hundred bytes);
the pydantic :class:`RunResult` is made from them only when asked for. The JSON document comes one
sync at a time (:meth:`RunResult.iter_json`, :meth:`ResultBuilder.iter_json`), never as one string
of the whole run: at 10,000 syncs that string is 8 million characters, 2 bytes each once a name
is not Latin-1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_core import to_json

from airbyte_fleet._redact import redact
from airbyte_fleet.engine.events import (
    Event,
    GroupFinished,
    GroupStarted,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncDetached,
    SyncEvent,
    SyncRetrying,
    SyncSkipped,
    SyncsPlanned,
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
from airbyte_fleet.engine.stages import Stage

__all__ = ["AttemptRecord", "GroupResult", "ResultBuilder", "RunResult", "SyncResult", "Totals"]

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


class GroupResult(BaseModel):
    """One group of a staged run (groups that wait for other groups): how it ended, its syncs
    by outcome, when it started and finished, and the groups it waited for."""

    group: str
    outcome: Literal["succeeded", "failed", "skipped", "interrupted"] | None = Field(
        default=None,
        description="succeeded, failed, skipped (a group it comes after did not succeed) or "
        "interrupted; None while it runs or waits",
    )
    after: list[str] = Field(default_factory=list, description="the groups it started after")
    on_upstream_failure: Literal["skip", "run"] = "skip"
    counts: dict[str, int] = Field(
        default_factory=dict,
        description="every connection it needs (its own and those it waited for) by outcome",
    )
    started_at: datetime | None = None
    finished_at: datetime | None = None
    skip_reason: str | None = Field(default=None, description="why it was skipped")


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
    groups: list[GroupResult] = Field(
        default_factory=list,
        description="a staged run's groups, in stage order (empty when no group waits for another)",
    )
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

    def iter_json(self) -> Iterator[str]:
        """``model_dump_json(indent=2) + "\\n"``, the ``--output json`` document, in pieces: the
        run's fields with the first sync, then one piece per sync, then the end."""
        head = self.model_copy(update={"syncs": []})
        return _document(head, (_SYNC_SERIALIZER.to_json(s, indent=2) for s in self.syncs))


_SYNC_SERIALIZER = SyncResult.__pydantic_serializer__
# Where the run's own fields leave room for the syncs, in the document of a result without any.
# Unique: inside a JSON string every quote is escaped, so `"syncs": [` can only be the key.
_SYNCS_KEY = '"syncs": []'
# A sync sits two levels deep in the document (the run's object, its list of syncs).
_SYNC_INDENT = "    "


def _document(head: RunResult, syncs: Iterable[bytes]) -> Iterator[str]:
    """The document of *head* (a result without its syncs) with *syncs* (each one's JSON at
    indent 2) in its list: byte for byte ``model_dump_json(indent=2) + "\\n"`` of the whole."""
    text = head.model_dump_json(indent=2)
    before, key, after = text.partition(_SYNCS_KEY)
    if not key:
        raise RuntimeError("the result's document has no list of syncs")
    opening = before + '"syncs": ['
    separator = "\n"
    for sync in syncs:
        # JSON escapes every line break inside a string: each one here is between two values.
        yield opening + separator + _SYNC_INDENT + sync.decode().replace("\n", "\n" + _SYNC_INDENT)
        opening, separator = "", ",\n"
    yield (opening + "]" if opening else "\n  ]") + after + "\n"


# Every field of a result the builder makes is set, and the set is never changed by pydantic
# (assigning a field adds a name that is already there), so one set serves them all: a set of
# each model's own costs more than the rest of it.
_SYNC_FIELDS = set(SyncResult.model_fields)
_ATTEMPT_FIELDS = set(AttemptRecord.model_fields)
_RUN_FIELDS = set(RunResult.model_fields)


@dataclass(slots=True)
class _Attempt:
    """What the builder keeps of one job of a sync: an :class:`AttemptRecord`'s fields."""

    attempt: int
    job_id: int | None = None
    adopted: bool = False
    status: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None

    def model(self) -> AttemptRecord:
        return AttemptRecord.model_construct(_ATTEMPT_FIELDS, **self.data())

    def data(self) -> dict[str, Any]:
        # In AttemptRecord's field order: the JSON document is the model's, key for key.
        return {
            "attempt": self.attempt,
            "job_id": self.job_id,
            "adopted": self.adopted,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }


@dataclass(slots=True)
class _Sync:
    """What the builder keeps of one sync: a :class:`SyncResult`'s fields. ``jobs`` is its
    ``history``: one attempt as itself (most syncs have one job), several as a tuple, none as
    ``()`` (a sync skipped before any job); ``attempts`` is their number."""

    connection_id: str
    connection_name: str = ""
    workspace_id: str = ""
    job_id: int | None = None
    job_type: str = "sync"
    outcome: Outcome | None = None
    status: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    rows_synced: int | None = None
    bytes_synced: int | None = None
    error: str | None = None
    jobs: _Attempt | tuple[_Attempt, ...] = ()

    @property
    def history(self) -> tuple[_Attempt, ...]:
        jobs = self.jobs
        return (jobs,) if isinstance(jobs, _Attempt) else jobs

    def model(self) -> SyncResult:
        fields = self._fields()
        fields["history"] = [a.model() for a in self.history]
        return SyncResult.model_construct(_SYNC_FIELDS, **fields)

    def json(self) -> bytes:
        """The sync's JSON at indent 2, as :class:`SyncResult` writes it (no model made: pydantic
        writes a dict's datetimes, floats and texts exactly as it writes the model's fields)."""
        fields = self._fields()
        fields["history"] = [a.data() for a in self.history]
        return to_json(fields, indent=2)

    def _fields(self) -> dict[str, Any]:
        # In SyncResult's field order: the JSON document is the model's, key for key.
        return {
            "connection_id": self.connection_id,
            "connection_name": self.connection_name,
            "workspace_id": self.workspace_id,
            "job_id": self.job_id,
            "job_type": self.job_type,
            "attempts": len(self.history),
            "outcome": self.outcome,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "rows_synced": self.rows_synced,
            "bytes_synced": self.bytes_synced,
            "error": self.error,
        }


@dataclass(slots=True)
class _Run:
    """The run's own fields of a :class:`RunResult`."""

    run_id: str
    started_at: datetime
    job_type: str
    finished_at: datetime | None = None
    duration_s: float | None = None
    outcome: Literal["succeeded", "failed", "interrupted", "running"] = "running"
    counts: dict[str, int] = field(default_factory=dict)
    rows_synced: int = 0
    bytes_synced: int = 0
    error: str | None = None
    groups: dict[str, GroupResult] = field(default_factory=dict)

    def model(self, syncs: list[SyncResult]) -> RunResult:
        return RunResult.model_construct(
            set(_RUN_FIELDS),
            run_id=self.run_id,
            started_at=self.started_at,
            finished_at=self.finished_at,
            duration_s=self.duration_s,
            job_type=self.job_type,
            outcome=self.outcome,
            counts=dict(self.counts),
            totals=Totals(rows_synced=self.rows_synced, bytes_synced=self.bytes_synced),
            groups=[group.model_copy() for group in self.groups.values()],
            syncs=syncs,
            error=self.error,
        )


class ResultBuilder:
    """Subscribe it to the bus; :attr:`result` is complete once ``run_finished`` has passed.

    It keeps one slotted record per sync and makes the pydantic :class:`RunResult` when asked
    (:attr:`result`, kept until the next event; :meth:`snapshot`, a new one each time);
    :meth:`iter_json` writes the document from the records without making it.
    """

    def __init__(self) -> None:
        self._run: _Run | None = None
        self._syncs: dict[str, _Sync] = {}
        # How many syncs (the first ones) the result lists: all those known at the last
        # run_finished; None before it, when the result lists none (snapshot() lists them all).
        self._listed: int | None = None
        self._wait = True
        self._built: RunResult | None = None
        # Texts that repeat from sync to sync (statuses, workspaces, job types) are kept once.
        self._texts: dict[str, str] = {}
        self._stages: tuple[Stage, ...] = ()

    @property
    def result(self) -> RunResult:
        if self._built is None:
            self._built = self._model(self._listed or 0)
        return self._built

    def snapshot(self) -> RunResult:
        """The result so far, every planned sync listed (outcome None while it is still open)."""
        return self._model(len(self._syncs) if self._listed is None else self._listed)

    @property
    def outcome(self) -> str:
        """The run's outcome so far (``running`` until ``run_finished``), without a result made."""
        return self._started().outcome

    @property
    def started_at(self) -> datetime:
        """When the run started, without a result made."""
        return self._started().started_at

    def iter_json(self) -> Iterator[str]:
        """``self.result.model_dump_json(indent=2) + "\\n"``, one sync at a time, from the
        records: no model of a sync is made, and no text of the whole run."""
        run = self._started()
        listed = self._listed or 0
        syncs = (sync for _, sync in zip(range(listed), self._syncs.values(), strict=False))
        return _document(run.model([]), (sync.json() for sync in syncs))

    def _started(self) -> _Run:
        if self._run is None:
            raise RuntimeError("no run has started")
        return self._run

    def _model(self, listed: int) -> RunResult:
        run = self._started()
        syncs = [sync.model() for _, sync in zip(range(listed), self._syncs.values(), strict=False)]
        return run.model(syncs)

    def __call__(self, event: Event) -> None:
        self._built = None
        if isinstance(event, SyncEvent):
            self._sync(event)
        elif isinstance(event, RunStarted):
            self._start(event)
        elif isinstance(event, SyncsPlanned):
            self._add(event)
        elif isinstance(event, RunFinished):
            self._finish(event)
        elif isinstance(event, GroupStarted | GroupFinished):
            self._group(event)

    def _group(self, event: GroupStarted | GroupFinished) -> None:
        group = self._started().groups.get(event.group)
        if group is None:
            group = GroupResult(group=event.group)
            self._started().groups[event.group] = group
        if isinstance(event, GroupStarted):
            # A resumed run starts a group the earlier process left waiting: its end is to come.
            if group.started_at is None:
                group.started_at = event.at
            group.outcome = None
            group.finished_at = None
            group.skip_reason = event.skip_reason
            return
        group.outcome = event.outcome  # type: ignore[assignment]
        group.counts = dict(event.counts)
        group.finished_at = event.at
        group.skip_reason = event.skip_reason

    def _text(self, text: str) -> str:
        return self._texts.setdefault(text, text)

    def _start(self, event: RunStarted) -> None:
        self._wait = event.wait
        if event.resumed and self._run is not None and self._run.run_id == event.run_id:
            # Carrying on a run whose earlier events were replayed into us: keep what they said.
            return
        job_type = self._text(event.job_type)
        self._syncs = {
            p.connection_id: _Sync(
                p.connection_id,
                p.connection_name,
                self._text(p.workspace_id),
                job_type=job_type,
            )
            for p in event.planned
        }
        self._run = _Run(run_id=event.run_id, started_at=event.at, job_type=job_type)
        self._stages = event.stages
        self._run.groups = {
            stage.group: GroupResult(
                group=stage.group,
                after=list(stage.after),
                on_upstream_failure=stage.on_upstream_failure,
            )
            for stage in event.stages
        }
        self._listed = None

    def _add(self, event: SyncsPlanned) -> None:
        """A later part of the plan: its syncs go after the ones planned so far."""
        job_type = self._text(self._started().job_type)
        for p in event.planned:
            if p.connection_id not in self._syncs:
                self._syncs[p.connection_id] = _Sync(
                    p.connection_id,
                    p.connection_name,
                    self._text(p.workspace_id),
                    job_type=job_type,
                )

    def _sync(self, event: SyncEvent) -> None:
        # Every error text reaches the result (and stdout) through here: one secret filter for all.
        error = redact(event.error) if event.error else None
        sync = self._syncs.get(event.connection_id)
        if sync is None:
            sync = _Sync(event.connection_id, job_type=self._text(event.job_type))
            self._syncs[event.connection_id] = sync
        if event.connection_name:
            sync.connection_name = event.connection_name
        if event.workspace_id:
            sync.workspace_id = self._text(event.workspace_id)
        status = None if event.status is None else self._text(event.status)
        if event.job_id is not None and event.job_id != sync.job_id:
            # Each event brings its own int of the same id: keep one.
            sync.job_id = event.job_id
        if status is not None:
            sync.status = status
        if event.rows_synced is not None:
            sync.rows_synced = event.rows_synced
        if event.bytes_synced is not None:
            sync.bytes_synced = event.bytes_synced
        record = self._attempt(sync, event)
        if status is not None:
            record.status = status
        if isinstance(event, SyncTriggered | SyncAdopted):
            record.job_id = event.job_id if event.job_id is None else sync.job_id
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

    def _settle_groups(self, run: _Run, *, interrupted: bool) -> None:
        """A group with no final word (a resumed run's group that finished in a process whose
        last events were lost) is settled from its syncs, by the engine's rule."""
        for stage in self._stages:
            group = run.groups.get(stage.group)
            if group is None or group.outcome is not None:
                continue
            counts: dict[str, int] = {}
            for cid in (*stage.syncs, *stage.waits_for):
                sync = self._syncs.get(cid)
                outcome = (sync.outcome if sync is not None else None) or "error"
                counts[outcome] = counts.get(outcome, 0) + 1
            group.counts = {o: counts[o] for o in OUTCOMES if o in counts}
            ok = all(o in OK_OUTCOMES for o in counts)
            group.outcome = "succeeded" if ok else "interrupted" if interrupted else "failed"

    @staticmethod
    def _attempt(sync: _Sync, event: SyncEvent) -> _Attempt:
        jobs = sync.jobs
        last = jobs if isinstance(jobs, _Attempt) else jobs[-1] if jobs else None
        if last is not None and last.attempt == event.attempt:
            return last
        record = _Attempt(event.attempt)
        if isinstance(event, SyncSkipped) and event.job_id is None:
            # Skipped before any job: no attempt to record.
            return record
        sync.jobs = record if last is None else (*sync.history, record)
        return record

    def _finish(self, event: RunFinished) -> None:
        run = self._started()
        counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        rows = size = 0
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
            counts[sync.outcome] += 1
            rows += sync.rows_synced or 0
            size += sync.bytes_synced or 0
        self._listed = len(self._syncs)
        self._settle_groups(run, interrupted=event.interrupted)
        run.counts = counts
        run.rows_synced = rows
        run.bytes_synced = size
        run.finished_at = event.at
        run.duration_s = round((event.at - run.started_at).total_seconds(), 3)
        run.outcome = run_outcome(
            (s.outcome or "error" for s in self._syncs.values()),
            interrupted=event.interrupted,
            failed=event.error is not None,
        )
        run.error = redact(event.error) if event.error else None
