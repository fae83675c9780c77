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
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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

        self._job_rng = random.Random(f"jobs:{options.seed}")
        self._next_job_id = 10_000_000 + random.Random(f"job-ids:{options.seed}").randrange(
            1_000_000
        )
        self._jobs: dict[int, Job] = {}
        self._latest_job: dict[str, Job] = {}
        self._scheduler = (
            None if options.max_running is None else SlotScheduler(options.max_running)
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
        workspaces = set(workspace_ids)
        tags = set(tag_ids)
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
        return found

    def set_connection_status(self, connection_id: str, status: str) -> dict[str, Any]:
        if status not in CONNECTION_STATUSES:
            raise ValueError(f"status must be one of {CONNECTION_STATUSES}, got {status!r}")
        connection = self._connection(connection_id)
        connection.view["status"] = status
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
        if self._scheduler is not None:
            if skip_pending:
                self._scheduler.start_now(job, plan, now)
            else:
                self._scheduler.enqueue(job, plan, now + pending)
        self._jobs[job_id] = job
        self._latest_job[connection_id] = job
        return job

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
            if self._scheduler is not None:
                self._scheduler.cancelled(job, now)
        return job

    def jobs_for(self, connection_id: str) -> list[Job]:
        """The connection's jobs in creation order (an unknown id simply has none)."""
        return [job for job in self._jobs.values() if job.connection_id == connection_id]

    def jobs(self) -> Iterable[Job]:
        return self._jobs.values()

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
    ) -> list[Job]:
        workspaces = set(workspace_ids)
        rows: list[tuple[int, int, Job]] = []
        for job in self._jobs.values():
            if connection_id is not None:
                if job.connection_id != connection_id:
                    continue
            elif workspaces and job.workspace_id not in workspaces:
                continue
            if job_type is not None and job.job_type != job_type:
                continue
            current, updated_at = job.state(now)
            if status is not None and current != status:
                continue
            created = job.created_s
            updated = math.floor(updated_at)
            if created_start is not None and created < created_start:
                continue
            if created_end is not None and created > created_end:
                continue
            if updated_start is not None and updated < updated_start:
                continue
            if updated_end is not None and updated > updated_end:
                continue
            rows.append((created if order_by == "createdAt" else updated, job.job_id, job))
        rows.sort(key=lambda row: (row[0], row[1]), reverse=descending)
        return [row[2] for row in rows]
