"""What the engine is told about a run an earlier process started (pure data). The planning that
produces it from a store's record is the runner's (``runner/resume.py``); the journal records the same
states, so the Literal is defined once, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["ResumePoint", "SyncState"]

# How far a sync got before the earlier process stopped: never touched, trigger journaled but its
# answer unknown, following a job, or settled.
SyncState = Literal["untouched", "intent", "in_flight", "final"]


@dataclass(frozen=True)
class ResumePoint:
    """Where a connection's sync stood when an earlier process running this run stopped."""

    state: SyncState
    attempt: int = 0
    job_id: int | None = None
    outcome: str | None = None
    intent_at: datetime | None = None
    triggered_at: datetime | None = None
