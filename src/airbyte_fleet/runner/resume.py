"""Where to carry on a stored run: the plan and each sync's resume point, used by ``run --resume``
and by the worker after a restart."""

from __future__ import annotations

from airbyte_fleet.engine.events import RunStarted
from airbyte_fleet.engine.plan import Plan
from airbyte_fleet.engine.resume import ResumePoint, SyncState
from airbyte_fleet.engine.stages import Stage
from airbyte_fleet.journal import RunRecord, RunStore, SyncRecord

__all__ = ["resume_plan", "stored_stages"]


def _resume_state(rec: SyncRecord) -> SyncState:
    # Skipped only because the run was interrupted before its turn: resuming means running it.
    if rec.state == "final" and rec.cause == "interrupted" and rec.job_id is None:
        return "untouched"
    return rec.state


def _point(rec: SyncRecord, record: RunRecord, *, damaged: bool) -> ResumePoint:
    state = _resume_state(rec)
    if damaged and state == "untouched":
        # A damaged store may have lost this sync's trigger: look for a job created since the
        # run began (the engine adopts it) before triggering one.
        return ResumePoint(state="intent", attempt=max(rec.attempt, 1), intent_at=record.started_at)
    return ResumePoint(
        state=state,
        attempt=rec.attempt,
        job_id=rec.job_id,
        outcome=rec.outcome,
        intent_at=rec.intent_at,
        triggered_at=rec.triggered_at,
    )


def resume_plan(
    record: RunRecord, *, damaged: bool = False, stages: tuple[Stage, ...] = ()
) -> tuple[Plan, dict[str, ResumePoint]]:
    """The plan and resume points that carry on *record* where it stopped.

    *damaged*: the store found itself damaged, so what it shows as never triggered may have been
    triggered in a part it lost; each such sync is reconciled with Airbyte first (an intent).
    *stages*: a staged run's groups as it started (:func:`stored_stages`): groups whose syncs
    all ended stay finished, and a group that was waiting starts once its upstream is done.
    """
    points = {cid: _point(rec, record, damaged=damaged) for cid, rec in record.syncs.items()}
    return Plan(items=tuple(record.planned), stages=stages), points


def stored_stages(store: RunStore, run_id: str) -> tuple[Stage, ...]:
    """The groups a staged run started with, as its first ``run_started`` keeps them (the run's
    record has no room for them); () for a run that had none, or whose start cannot be read
    (it is then carried on without stages: its held syncs start at once)."""
    first = store.events(run_id, limit=1)
    if first and isinstance(first[0][1], RunStarted):
        return first[0][1].stages
    return ()
