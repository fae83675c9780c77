"""The World API: the simulated instance's workspaces, connections and jobs, and Airbyte's rules.

It holds the state and enforces what the server enforces (an active connection, one live job per
connection, known ids); the handlers turn its answers and errors into HTTP. How a job's status
unfolds over time lives in ``_timeline``, the ``--max-running`` queue in ``_slots``, and the
generated starting data in ``_seed``.
"""

from __future__ import annotations

import copy
import math
import random
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from ._options import SimulatorOptions
from ._seed import generate
from ._slots import SlotScheduler
from ._timeline import JOB_TYPES, PENDING_FRACTION, Job, JobScript, Plan, attempt_timeline

__all__ = [
    "CONNECTION_STATUSES",
    "ConnectionNotActiveError",
    "JobAlreadyRunningError",
    "UnknownConnectionError",
    "UnknownJobError",
    "World",
]

CONNECTION_STATUSES = ("active", "inactive", "deprecated", "locked")

# Filtered connection listings kept at once; a client pages through one or two at a time.
_LISTINGS_KEPT = 16


class UnknownConnectionError(LookupError):
    """No connection has this id."""


class UnknownJobError(LookupError):
    """No job has this id."""


class ConnectionNotActiveError(Exception):
    """The connection's status is not ``active`` (Airbyte answers 409 state-conflict)."""


class JobAlreadyRunningError(Exception):
    """The connection already has a non-terminal job (Airbyte answers 409 try-again-later)."""


@dataclass
class _Connection:
    view: dict[str, Any]
    tag_ids: frozenset[str]
    scripts: deque[JobScript] = field(default_factory=deque)

    @property
    def connection_id(self) -> str:
        return str(self.view["connectionId"])

    @property
    def workspace_id(self) -> str:
        return str(self.view["workspaceId"])


class _Changes:
    """Every status change of one workspace's jobs, ordered by time (future ones included).

    "Jobs updated since T" is then a binary search and a walk over the changes since T, instead
    of reading every job's timeline: with 100,000 jobs a scan costs tens of milliseconds per
    page, and a client that polls every workspace reads many pages per tick. Parallel lists
    rather than a list of tuples: about 50 bytes a change instead of 110.
    """

    __slots__ = ("jobs", "statuses", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.statuses: list[str] = []
        self.jobs: list[Job] = []

    def add(self, at: float, status: str, job: Job) -> None:
        # After any change at the same time, as in the job's own timeline (the later one wins).
        # New changes are mostly at or after every earlier one, so the insert is near the end.
        index = bisect_right(self.times, at)
        self.times.insert(index, at)
        self.statuses.insert(index, status)
        self.jobs.insert(index, job)

    def span(self, start: float, end: float) -> tuple[int, int]:
        """Positions of the changes at ``start <= t <= end``."""
        return bisect_left(self.times, start), bisect_right(self.times, end)


@dataclass(frozen=True, slots=True)
class _JobFilter:
    """The filters of a job list that depend on a job's state, compared as Airbyte does: on
    whole seconds."""

    status: str | None
    created_start: float | None
    created_end: float | None
    updated_start: float | None
    updated_end: float | None

    def admits(self, job: Job, status: str, updated: int) -> bool:
        if self.status is not None and status != self.status:
            return False
        created = job.created_s
        if self.created_start is not None and created < self.created_start:
            return False
        if self.created_end is not None and created > self.created_end:
            return False
        if self.updated_start is not None and updated < self.updated_start:
            return False
        return self.updated_end is None or updated <= self.updated_end


class World:
    """All simulated state. Not thread-safe: it is used from one event loop only."""

    def __init__(self, options: SimulatorOptions) -> None:
        self._options = options
        seed = generate(options)
        self._workspaces = seed.workspaces
        self._connections: dict[str, _Connection] = {}
        for view in seed.connections:
            connection = _Connection(
                view=view, tag_ids=frozenset(tag["tagId"] for tag in view["tags"])
            )
            self._connections[connection.connection_id] = connection
        # A client pages through one listing 100 at a time: the filtered list is made once and
        # kept until a connection's status changes (the only thing that can change it).
        self._listings: dict[tuple[object, ...], list[dict[str, Any]]] = {}

        self._job_rng = random.Random(f"jobs:{options.seed}")
        self._next_job_id = 10_000_000 + random.Random(f"job-ids:{options.seed}").randrange(
            1_000_000
        )
        self._jobs: dict[int, Job] = {}
        self._latest_job: dict[str, Job] = {}
        self._jobs_of: dict[str, list[Job]] = {}
        self._jobs_in: dict[str, list[Job]] = {}
        self._changes: dict[str, _Changes] = {}
        self._scheduler = (
            None
            if options.max_running is None
            else SlotScheduler(options.max_running, on_events=self._changed)
        )

    # -- workspaces and connections -------------------------------------------------------

    def workspace_views(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._workspaces)

    def find_workspaces(self, workspace_ids: Sequence[str]) -> list[dict[str, Any]]:
        wanted = set(workspace_ids)
        return [w for w in self._workspaces if not wanted or w["workspaceId"] in wanted]

    def connection_views(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(c.view) for c in self._connections.values()]

    def connection_view(self, connection_id: str) -> dict[str, Any]:
        return self._connection(connection_id).view

    def _connection(self, connection_id: str) -> _Connection:
        try:
            return self._connections[connection_id]
        except KeyError:
            raise UnknownConnectionError(connection_id) from None

    def find_connections(
        self, workspace_ids: Sequence[str], tag_ids: Sequence[str], include_deleted: bool
    ) -> list[dict[str, Any]]:
        """The matching connections in creation order (the list is shared: do not change it)."""
        workspaces = frozenset(workspace_ids)
        tags = frozenset(tag_ids)
        key = (workspaces, tags, include_deleted)
        found = self._listings.get(key)
        if found is not None:
            return found
        found = []
        for connection in self._connections.values():
            if workspaces and connection.workspace_id not in workspaces:
                continue
            if tags and not tags & connection.tag_ids:
                continue
            # Airbyte "deletes" a connection by marking it deprecated.
            if not include_deleted and connection.view["status"] == "deprecated":
                continue
            found.append(connection.view)
        if len(self._listings) >= _LISTINGS_KEPT:
            self._listings.clear()
        self._listings[key] = found
        return found

    def set_connection_status(self, connection_id: str, status: str) -> dict[str, Any]:
        if status not in CONNECTION_STATUSES:
            raise ValueError(f"status must be one of {CONNECTION_STATUSES}, got {status!r}")
        connection = self._connection(connection_id)
        connection.view["status"] = status
        self._listings.clear()
        return copy.deepcopy(connection.view)

    def queue_script(self, connection_id: str, script: JobScript) -> int:
        """Queue a script for the connection's next job; returns how many are queued."""
        connection = self._connection(connection_id)
        connection.scripts.append(script)
        return len(connection.scripts)

    # -- jobs -----------------------------------------------------------------------------

    def create_job(
        self, connection_id: str, job_type: str, now: float, *, skip_pending: bool = False
    ) -> Job:
        """Enqueue a job, enforcing Airbyte's rules: active connection, one live job each."""
        if job_type not in JOB_TYPES:
            raise ValueError(f"job_type must be one of {JOB_TYPES}, got {job_type!r}")
        connection = self._connection(connection_id)
        if connection.view["status"] != "active":
            raise ConnectionNotActiveError(connection_id)
        latest = self._latest_job.get(connection_id)
        if latest is not None and not latest.is_terminal(now):
            raise JobAlreadyRunningError(connection_id)

        # Draw the same number of values for every job so one script does not reshuffle
        # the random plans of all later jobs.
        rng = self._job_rng
        low, high = self._options.sync_seconds
        seconds = rng.uniform(low, high)
        fails = rng.random() < self._options.failure_rate
        incomplete = 1 if rng.random() < self._options.incomplete_rate else 0
        rows = rng.randint(1_000, 2_000_000)
        bytes_per_row = rng.randint(120, 900)
        id_step = rng.randint(1, 5)

        final: str = "failed" if fails else "succeeded"
        pending: float | None = None
        running = "running"
        if connection.scripts:
            script = connection.scripts.popleft()
            seconds, incomplete, final = script.seconds, script.incomplete_attempts, script.final
            pending = script.pending_seconds
            running = script.odd_status or running
        if pending is None:
            pending = seconds * PENDING_FRACTION
        if skip_pending:
            pending = 0.0
        plan = Plan(
            work=max(0.0, seconds - pending),
            incomplete=incomplete,
            final=final,
            running=running,
            not_before=now + seconds,
        )
        events: list[tuple[float, str]] = [(now, "pending")]
        spans: list[tuple[float, float]] = []
        if self._scheduler is None:
            tail, spans = attempt_timeline(now + pending, plan)
            events.extend(tail)

        job_id = self._next_job_id
        # Gaps, like real ids shared with check/discover jobs, so clients cannot assume +1.
        self._next_job_id += id_step
        job = Job(
            job_id=job_id,
            connection_id=connection_id,
            workspace_id=connection.workspace_id,
            job_type=job_type,
            created_at=now,
            events=events,
            running_spans=spans,
            rows_total=rows,
            bytes_total=rows * bytes_per_row,
            scheduler=self._scheduler,
        )
        self._jobs[job_id] = job
        self._latest_job[connection_id] = job
        self._jobs_of.setdefault(connection_id, []).append(job)
        self._jobs_in.setdefault(job.workspace_id, []).append(job)
        self._changed(job, events)
        if self._scheduler is not None:
            if skip_pending:
                self._scheduler.start_now(job, plan, now)
            else:
                self._scheduler.enqueue(job, plan, now + pending)
        return job

    def _changed(self, job: Job, events: Iterable[tuple[float, str]]) -> None:
        changes = self._changes.get(job.workspace_id)
        if changes is None:
            changes = self._changes[job.workspace_id] = _Changes()
        for at, status in events:
            changes.add(at, status, job)

    def job(self, job_id: int) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJobError(job_id) from None

    def cancel_job(self, job_id: int, now: float) -> Job:
        """Cancel a live job; a terminal job is left as it is (Airbyte answers 200 anyway)."""
        job = self.job(job_id)
        if not job.is_terminal(now):
            job.cancelled_at = now
            self._changed(job, [(now, "cancelled")])
            if self._scheduler is not None:
                self._scheduler.cancelled(job, now)
        return job

    def jobs_for(self, connection_id: str) -> list[Job]:
        """The connection's jobs in creation order (an unknown id simply has none)."""
        return list(self._jobs_of.get(connection_id, ()))

    def jobs(self) -> Iterable[Job]:
        return self._jobs.values()

    def job_count(self) -> int:
        return len(self._jobs)

    def find_jobs(
        self,
        now: float,
        *,
        connection_id: str | None = None,
        workspace_ids: Sequence[str] = (),
        job_type: str | None = None,
        status: str | None = None,
        created_start: float | None = None,
        created_end: float | None = None,
        updated_start: float | None = None,
        updated_end: float | None = None,
        order_by: str = "createdAt",
        descending: bool = False,
        first: int | None = None,
    ) -> list[Job]:
        """The matching jobs, ordered by the whole second of ``order_by`` then by id.

        With ``first``, only that many from the front of the order (the same jobs as slicing
        the whole list): a page needs no more, and the newest-first read of one workspace can
        then stop early.
        """
        if self._scheduler is not None:
            # Once, before the change lists are read: a settle appends to them.
            self._scheduler.settle(now)
        check = _JobFilter(status, created_start, created_end, updated_start, updated_end)
        workspaces = set(workspace_ids)
        pool: Iterable[Job]
        if connection_id is not None:
            pool = self._jobs_of.get(connection_id, ())
        elif updated_start is not None:
            # floor(t) >= start exactly when t >= ceil(start); a job updated since then has its
            # latest change in that span, so the span's jobs are all the candidates.
            since = math.ceil(updated_start)
            lists = [
                changes
                for workspace, changes in self._changes.items()
                if not workspaces or workspace in workspaces
            ]
            if order_by == "updatedAt" and descending and first is not None and len(lists) == 1:
                return _newest_first(lists[0], since, now, job_type, check, first)
            pool = _unique(
                chain.from_iterable(
                    changes.jobs[slice(*changes.span(since, now))] for changes in lists
                )
            )
        elif workspaces:
            pool = chain.from_iterable(self._jobs_in.get(w, ()) for w in workspaces)
        else:
            pool = self._jobs.values()

        by_created = order_by == "createdAt"
        rows: list[tuple[int, int, Job]] = []
        for job in pool:
            if job_type is not None and job.job_type != job_type:
                continue
            current, updated_at = job.state(now)
            updated = math.floor(updated_at)
            if check.admits(job, current, updated):
                rows.append((job.created_s if by_created else updated, job.job_id, job))
        rows.sort(key=lambda row: (row[0], row[1]), reverse=descending)
        return [row[2] for row in rows[:first]]


def _unique(jobs: Iterable[Job]) -> Iterable[Job]:
    seen: set[int] = set()
    for job in jobs:
        if job.job_id not in seen:
            seen.add(job.job_id)
            yield job


def _newest_first(
    changes: _Changes, since: int, now: float, job_type: str | None, check: _JobFilter, first: int
) -> list[Job]:
    """The first ``first`` matches by (updated second, id) descending, read from the newest
    change back and stopping as soon as they are known.

    Walking back from ``now``, the first change met of a job is its current state, so no
    timeline is read; except for a cancelled job, which is ``cancelled`` from its cancellation
    on whatever its plan said, and may be met first at a planned change after it. Such a job
    sorts below the second where it is met, so matches are held per second and handed out once
    the walk has gone below that second: by then every job of it has been met.
    """
    times, statuses, jobs = changes.times, changes.statuses, changes.jobs
    low, high = changes.span(since, now)
    seen: set[int] = set()
    held: dict[int, list[Job]] = {}
    out: list[Job] = []

    def hand_out(below: float) -> None:
        for second in sorted((s for s in held if s > below), reverse=True):
            out.extend(sorted(held.pop(second), key=lambda job: job.job_id, reverse=True))

    walking: int | None = None
    for index in range(high - 1, low - 1, -1):
        job = jobs[index]
        if job.job_id in seen:
            continue
        seen.add(job.job_id)
        at = times[index]
        second = math.floor(at)
        if second != walking:
            walking = second
            if held:
                hand_out(second)
                if len(out) >= first:
                    return out[:first]
        if job_type is not None and job.job_type != job_type:
            continue
        status = statuses[index]
        if job.cancelled_at is not None and job.cancelled_at <= now:
            status, at = "cancelled", job.cancelled_at
        updated = math.floor(at)
        if check.admits(job, status, updated):
            held.setdefault(updated, []).append(job)
    hand_out(-math.inf)
    return out[:first]
