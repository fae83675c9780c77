"""The slot scheduler behind ``--max-running``: jobs beyond N wait ``queued`` for a slot.

With a cap a job's start depends on the other jobs, so its timeline is only fixed up to its
first attempt. Rather than run a background task, the scheduler replays slot hand-overs
(ends, readiness, cancellations) in clock order whenever a job is read, and appends ``queued``
and the attempts to the timeline at the exact times they happened. Job state thus stays a pure
function of the clock and of what was requested when, as it is without a cap.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._timeline import Job, Plan, attempt_timeline

__all__ = ["SlotScheduler"]


@dataclass
class _Slotted:
    """Scheduler bookkeeping for one job under a slot cap."""

    job: Job
    plan: Plan
    seq: int
    slot_end: float | None = None  # set once the job holds a slot
    released: bool = False


class SlotScheduler:
    """Hands out ``slots`` worker slots, replaying events lazily in clock order.

    A job asks for a slot when its pending time is over. It starts at once if a slot is free,
    otherwise it is ``queued`` and waits in FIFO order (of readiness, then creation). A slot
    frees when its job reaches a terminal status, or at once when the job is cancelled; a
    slot that frees at the moment another job becomes ready goes to the waiting jobs first.
    ``settle(now)`` applies every hand-over due up to ``now``; it is cheap when none is.
    """

    def __init__(
        self,
        slots: int,
        on_events: Callable[[Job, Sequence[tuple[float, str]]], None] | None = None,
    ) -> None:
        """``on_events`` hears of every status change appended to a job's timeline."""
        self._slots = slots
        self._on_events = on_events
        self._busy = 0
        self._seq = itertools.count()
        self._ready: list[tuple[float, int, _Slotted]] = []  # heap of pending jobs
        self._ends: list[tuple[float, int, _Slotted]] = []  # heap of slot releases
        self._waiting: deque[_Slotted] = deque()  # queued jobs, first come first served
        self._records: dict[int, _Slotted] = {}

    def enqueue(self, job: Job, plan: Plan, ready_at: float) -> None:
        record = _Slotted(job, plan, next(self._seq))
        self._records[job.job_id] = record
        heapq.heappush(self._ready, (ready_at, record.seq, record))

    def start_now(self, job: Job, plan: Plan, now: float) -> None:
        """Start at once even if every slot is taken (a job "triggered elsewhere")."""
        self.settle(now)
        record = _Slotted(job, plan, next(self._seq))
        self._records[job.job_id] = record
        self._start(record, now)

    def cancelled(self, job: Job, now: float) -> None:
        """The job was cancelled at ``now``: free its slot now (a waiting job is skipped)."""
        record = self._records.get(job.job_id)
        if record is not None and record.slot_end is not None and not record.released:
            record.slot_end = now
            heapq.heappush(self._ends, (now, record.seq, record))
        self.settle(now)

    def settle(self, now: float) -> None:
        ready, ends = self._ready, self._ends
        while ready or ends:
            next_end = ends[0][0] if ends else math.inf
            next_ready = ready[0][0] if ready else math.inf
            if min(next_end, next_ready) > now:
                return
            if next_end <= next_ready:
                at, _, record = heapq.heappop(ends)
                if record.released or record.slot_end != at:
                    continue  # superseded by an earlier release (a cancellation)
                record.released = True
                self._records.pop(record.job.job_id, None)
                self._busy -= 1
                self._fill(at)
            else:
                at, _, record = heapq.heappop(ready)
                if record.job.cancelled_at is not None:
                    self._records.pop(record.job.job_id, None)
                elif self._busy < self._slots:
                    self._start(record, at)
                else:
                    self._append(record.job, [(at, "queued")])
                    self._waiting.append(record)

    def _fill(self, at: float) -> None:
        while self._waiting and self._busy < self._slots:
            record = self._waiting.popleft()
            if record.job.cancelled_at is not None:
                self._records.pop(record.job.job_id, None)
                continue
            self._start(record, at)

    def _start(self, record: _Slotted, at: float) -> None:
        events, spans = attempt_timeline(at, record.plan)
        self._append(record.job, events)
        record.job.running_spans = spans
        record.slot_end = events[-1][0]
        self._busy += 1
        heapq.heappush(self._ends, (record.slot_end, record.seq, record))

    def _append(self, job: Job, events: Sequence[tuple[float, str]]) -> None:
        job.events.extend(events)
        if self._on_events is not None:
            self._on_events(job, events)
