"""A job as a timeline: the status changes it will go through, evaluated at the clock's time.

Job state is never stored as "current status": each job keeps a fixed timeline of status
changes, and every read evaluates it at the clock's time. That way no background task per job
is needed, thousands of jobs cost nothing while idle, and a FakeClock moves all of them at once.

The exception is a job under a slot cap (``max_running``), whose start depends on other jobs:
its timeline is completed lazily by the slot scheduler in ``_slots``, which a read asks to
catch up first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from ._timefmt import java_duration, java_offset_datetime

if TYPE_CHECKING:
    from ._slots import SlotScheduler

__all__ = [
    "JOB_STATUSES",
    "JOB_TYPES",
    "PENDING_FRACTION",
    "TERMINAL_STATUSES",
    "Job",
    "JobFinal",
    "JobScript",
    "Plan",
    "attempt_timeline",
]

JobFinal = Literal["succeeded", "failed", "cancelled"]

JOB_STATUSES = ("pending", "queued", "running", "incomplete", "failed", "succeeded", "cancelled")
TERMINAL_STATUSES = frozenset({"failed", "succeeded", "cancelled"})
JOB_TYPES = ("sync", "reset", "refresh", "clear")

# Share of a job's duration spent pending before the first attempt starts.
PENDING_FRACTION = 0.05
# Within the post-pending time, each running attempt gets this many units per incomplete gap.
_RUNNING_WEIGHT = 3


@dataclass(frozen=True)
class JobScript:
    """How the next job of a connection will play out, instead of the random plan.

    ``seconds`` is creation-to-terminal time; ``pending_seconds`` defaults to 5% of it. (With
    ``max_running``, time spent ``queued`` for a slot comes on top.)

    ``odd_status`` is reported instead of ``running`` during every attempt (e.g.
    ``"paused_by_admin"``), so clients meet a status outside the spec's enum; ``incomplete``
    gaps and the final status stay as scripted. It must not be a status the spec defines.
    """

    seconds: float = 1.0
    incomplete_attempts: int = 0
    final: JobFinal = "succeeded"
    pending_seconds: float | None = None
    odd_status: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError("seconds must be a finite number >= 0")
        if self.incomplete_attempts < 0:
            raise ValueError("incomplete_attempts must be >= 0")
        if self.final not in get_args(JobFinal):
            raise ValueError(f"final must be one of {get_args(JobFinal)}, got {self.final!r}")
        if self.pending_seconds is not None and not 0 <= self.pending_seconds <= self.seconds:
            raise ValueError("pending_seconds must be within 0..seconds")
        if self.odd_status is not None:
            if not isinstance(self.odd_status, str) or not self.odd_status.strip():
                raise ValueError("odd_status must be a non-empty string or None")
            if self.odd_status in JOB_STATUSES:
                raise ValueError(
                    f"odd_status must not be a status the spec defines, got {self.odd_status!r}"
                )


@dataclass(frozen=True)
class Plan:
    """What happens from the first attempt on; ``not_before`` is the earliest terminal time."""

    work: float
    incomplete: int
    final: str
    running: str
    not_before: float


def attempt_timeline(
    start: float, plan: Plan
) -> tuple[list[tuple[float, str]], list[tuple[float, float]]]:
    """Events and running spans of the attempts, the first one starting at ``start``."""
    incomplete = plan.incomplete
    unit = plan.work / (_RUNNING_WEIGHT * (incomplete + 1) + incomplete)
    events: list[tuple[float, str]] = []
    spans: list[tuple[float, float]] = []
    at = start
    for attempt in range(incomplete + 1):
        events.append((at, plan.running))
        end = at + _RUNNING_WEIGHT * unit
        spans.append((at, end))
        at = end
        if attempt < incomplete:
            events.append((at, "incomplete"))
            at += unit
    events.append((max(at, start + plan.work, plan.not_before), plan.final))
    return events, spans


@dataclass(slots=True)
class Job:
    """One job and its planned timeline (absolute clock times, in order).

    Without a slot cap the whole timeline is fixed at creation. With one, ``scheduler``
    appends ``queued`` and the attempts once the job gets a slot; reading the state first lets
    it catch up to ``now``.
    """

    job_id: int
    connection_id: str
    workspace_id: str
    job_type: str
    created_at: float
    events: list[tuple[float, str]]
    running_spans: list[tuple[float, float]]
    rows_total: int
    bytes_total: int
    cancelled_at: float | None = None
    scheduler: SlotScheduler | None = field(default=None, repr=False, compare=False)

    @property
    def created_s(self) -> int:
        # Airbyte stores createdAt as whole epoch seconds; filters and rendering use that.
        return math.floor(self.created_at)

    def state(self, now: float) -> tuple[str, float]:
        """Status at ``now`` and the time of the transition that produced it."""
        if self.scheduler is not None:
            self.scheduler.settle(now)
        if self.cancelled_at is not None and now >= self.cancelled_at:
            return "cancelled", self.cancelled_at
        at, status = self.events[0]
        for when, name in self.events:
            if when > now:
                break
            status, at = name, when
        return status, at

    def is_terminal(self, now: float) -> bool:
        return self.state(now)[0] in TERMINAL_STATUSES

    def _progress(self, now: float, status: str) -> float:
        horizon = now if self.cancelled_at is None else min(now, self.cancelled_at)
        total = sum(end - start for start, end in self.running_spans)
        if total <= 0:
            return 1.0 if status == "succeeded" else 0.0
        done = sum(max(0.0, min(end, horizon) - start) for start, end in self.running_spans)
        return min(1.0, done / total)

    def view(self, now: float) -> dict[str, Any]:
        """The public ``JobResponse`` JSON object at ``now``."""
        status, updated = self.state(now)
        body: dict[str, Any] = {
            "jobId": self.job_id,
            "status": status,
            "jobType": self.job_type,
            "startTime": java_offset_datetime(self.created_s),
            "connectionId": self.connection_id,
        }
        if status in TERMINAL_STATUSES:
            body["lastUpdatedAt"] = java_offset_datetime(math.floor(updated))
        if status != "pending":
            # Airbyte measures to the last status change, not to now, so a running job's
            # duration stands still between transitions.
            body["duration"] = java_duration(max(0, math.floor(updated) - self.created_s))
            progress = self._progress(now, status)
            body["bytesSynced"] = int(self.bytes_total * progress)
            body["rowsSynced"] = int(self.rows_total * progress)
        return body
