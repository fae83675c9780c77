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


def resume_plan(record: RunRecord) -> tuple[Plan, dict[str, ResumePoint]]:
    """The plan and resume points that carry on *record* where it stopped."""
    points = {
        cid: ResumePoint(
            state=_resume_state(rec),
            attempt=rec.attempt,
            job_id=rec.job_id,
            outcome=rec.outcome,
            intent_at=rec.intent_at,
            triggered_at=rec.triggered_at,
        )
        for cid, rec in record.syncs.items()
    }
    return Plan(items=tuple(record.planned)), points
