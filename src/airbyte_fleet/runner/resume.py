"""Where to carry on a stored run: the plan and each sync's resume point, used by ``run --resume``
and by the worker after a restart."""

from __future__ import annotations

from airbyte_fleet.engine.plan import Plan
from airbyte_fleet.engine.resume import ResumePoint, SyncState
from airbyte_fleet.journal import RunRecord, SyncRecord

__all__ = ["resume_plan"]


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


def resume_plan(record: RunRecord, *, damaged: bool = False) -> tuple[Plan, dict[str, ResumePoint]]:
    """The plan and resume points that carry on *record* where it stopped.

    *damaged*: the store found itself damaged, so what it shows as never triggered may have been
    triggered in a part it lost; each such sync is reconciled with Airbyte first (an intent).
    """
    points = {cid: _point(rec, record, damaged=damaged) for cid, rec in record.syncs.items()}
    return Plan(items=tuple(record.planned)), points
