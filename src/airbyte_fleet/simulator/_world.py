"""The simulated Airbyte data: workspaces, tags, connections and jobs.

Job state is never stored as "current status": each job keeps a fixed timeline of status
changes, and every read evaluates it at the clock's time. That way no background task per job
is needed, thousands of jobs cost nothing while idle, and a FakeClock moves all of them at once.
"""

from __future__ import annotations

import copy
import math
import random
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ._options import SimulatorOptions
from ._timefmt import java_duration, java_offset_datetime

__all__ = [
    "CONNECTION_STATUSES",
    "JOB_STATUSES",
    "JOB_TYPES",
    "TERMINAL_STATUSES",
    "ConnectionNotActiveError",
    "Job",
    "JobAlreadyRunningError",
    "JobFinal",
    "JobScript",
    "UnknownConnectionError",
    "UnknownJobError",
    "World",
]

JobFinal = Literal["succeeded", "failed", "cancelled"]

JOB_STATUSES = ("pending", "queued", "running", "incomplete", "failed", "succeeded", "cancelled")
TERMINAL_STATUSES = frozenset({"failed", "succeeded", "cancelled"})
JOB_TYPES = ("sync", "reset", "refresh", "clear")
CONNECTION_STATUSES = ("active", "inactive", "deprecated", "locked")

# Share of a job's duration spent pending before the first attempt starts.
_PENDING_FRACTION = 0.05
# Within the post-pending time, each running attempt gets this many units per incomplete gap.
_RUNNING_WEIGHT = 3
# A fixed epoch for generated connection createdAt values, so a seed gives identical data
# whatever the wall clock says.
_CONNECTIONS_EPOCH = 1_700_000_000

_SOURCES = (
    "Postgres",
    "MySQL",
    "Stripe",
    "Salesforce",
    "HubSpot",
    "Google Sheets",
    "Shopify",
    "Zendesk Support",
    "GitHub",
    "Facebook Marketing",
    "MongoDb",
    "Jira",
)
_DESTINATIONS = (
    "Snowflake",
    "BigQuery",
    "Redshift",
    "Postgres",
    "S3",
    "Databricks Lakehouse",
    "DuckDB",
    "MotherDuck",
)
_WORKSPACE_NAMES = (
    "Acme Analytics",
    "Globex Data",
    "Initech BI",
    "Umbrella Ops",
    "Stark Growth",
    "Wayne Finance",
)
_TAGS = (
    ("nightly", "3B82F6"),
    ("hourly", "10B981"),
    ("finance", "F59E0B"),
    ("marketing", "EC4899"),
)
_STREAMS = (
    "users",
    "orders",
    "invoices",
    "events",
    "accounts",
    "products",
    "subscriptions",
    "tickets",
)
_SYNC_MODES = ("full_refresh_overwrite", "incremental_append", "incremental_deduped_history")
_SCHEDULES: tuple[dict[str, str], ...] = (
    {"scheduleType": "manual"},
    {"scheduleType": "manual"},
    {"scheduleType": "cron", "cronExpression": "0 0 2 * * ?"},
    {"scheduleType": "cron", "cronExpression": "0 15 * * * ?"},
    {"scheduleType": "basic", "basicTiming": "Every 24 HOURS"},
)


class UnknownConnectionError(LookupError):
    """No connection has this id."""


class UnknownJobError(LookupError):
    """No job has this id."""


class ConnectionNotActiveError(Exception):
    """The connection's status is not ``active`` (Airbyte answers 409 state-conflict)."""


class JobAlreadyRunningError(Exception):
    """The connection already has a non-terminal job (Airbyte answers 409 try-again-later)."""


@dataclass(frozen=True)
class JobScript:
    """How the next job of a connection will play out, instead of the random plan.

    ``seconds`` is creation-to-terminal time; ``pending_seconds`` defaults to 5% of it.
    """

    seconds: float = 1.0
    incomplete_attempts: int = 0
    final: JobFinal = "succeeded"
    pending_seconds: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.seconds) or self.seconds < 0:
            raise ValueError("seconds must be a finite number >= 0")
        if self.incomplete_attempts < 0:
            raise ValueError("incomplete_attempts must be >= 0")
        if self.final not in get_args(JobFinal):
            raise ValueError(f"final must be one of {get_args(JobFinal)}, got {self.final!r}")
        if self.pending_seconds is not None and not 0 <= self.pending_seconds <= self.seconds:
            raise ValueError("pending_seconds must be within 0..seconds")


@dataclass
class Job:
    """One job and its whole planned timeline (absolute clock times)."""

    job_id: int
    connection_id: str
    workspace_id: str
    job_type: str
    created_at: float
    events: tuple[tuple[float, str], ...]
    running_spans: tuple[tuple[float, float], ...]
    rows_total: int
    bytes_total: int
    cancelled_at: float | None = None

    @property
    def created_s(self) -> int:
        # Airbyte stores createdAt as whole epoch seconds; filters and rendering use that.
        return math.floor(self.created_at)

    def state(self, now: float) -> tuple[str, float]:
        """Status at ``now`` and the time of the transition that produced it."""
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

    def updated_s(self, now: float) -> int:
        return math.floor(self.state(now)[1])

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


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _timeline(
    created: float, seconds: float, pending: float, incomplete: int, final: str
) -> tuple[tuple[tuple[float, str], ...], tuple[tuple[float, float], ...]]:
    work = max(0.0, seconds - pending)
    unit = work / (_RUNNING_WEIGHT * (incomplete + 1) + incomplete)
    events: list[tuple[float, str]] = [(created, "pending")]
    spans: list[tuple[float, float]] = []
    at = created + pending
    for attempt in range(incomplete + 1):
        events.append((at, "running"))
        end = at + _RUNNING_WEIGHT * unit
        spans.append((at, end))
        at = end
        if attempt < incomplete:
            events.append((at, "incomplete"))
            at += unit
    events.append((max(at, created + seconds), final))
    return tuple(events), tuple(spans)


class World:
    """All simulated state. Not thread-safe: it is used from one event loop only."""

    def __init__(self, options: SimulatorOptions) -> None:
        self._options = options
        rng = random.Random(options.seed)
        self._workspaces: list[dict[str, Any]] = []
        self._tags: dict[str, list[dict[str, str]]] = {}
        for index in range(options.workspaces):
            workspace_id = _uuid(rng)
            base = _WORKSPACE_NAMES[index % len(_WORKSPACE_NAMES)]
            round_ = index // len(_WORKSPACE_NAMES)
            self._workspaces.append(
                {
                    "workspaceId": workspace_id,
                    "name": base if round_ == 0 else f"{base} {round_ + 1}",
                    "dataResidency": "auto",
                    "notifications": {
                        "failure": {"email": {"enabled": True}, "webhook": {"enabled": False}},
                        "success": {"email": {"enabled": False}, "webhook": {"enabled": False}},
                        "connectionUpdate": {"email": {"enabled": True}},
                        "connectionUpdateActionRequired": {"email": {"enabled": True}},
                        "syncDisabled": {"email": {"enabled": True}},
                        "syncDisabledWarning": {"email": {"enabled": True}},
                    },
                }
            )
            self._tags[workspace_id] = [
                {"tagId": _uuid(rng), "workspaceId": workspace_id, "name": name, "color": color}
                for name, color in _TAGS
            ]
        self._connections: dict[str, _Connection] = {}
        first_inactive = options.connections - options.inactive_connections
        for index in range(options.connections):
            connection = self._make_connection(rng, index, index >= first_inactive)
            self._connections[connection.connection_id] = connection

        self._job_rng = random.Random(f"jobs:{options.seed}")
        self._next_job_id = 10_000_000 + random.Random(f"job-ids:{options.seed}").randrange(
            1_000_000
        )
        self._jobs: dict[int, Job] = {}
        self._latest_job: dict[str, Job] = {}

    def _make_connection(self, rng: random.Random, index: int, inactive: bool) -> _Connection:
        workspace = self._workspaces[index % len(self._workspaces)]
        workspace_id = str(workspace["workspaceId"])
        source = rng.choice(_SOURCES)
        destination = rng.choice(_DESTINATIONS)
        tags = rng.sample(self._tags[workspace_id], rng.randint(0, 2))
        streams: list[dict[str, Any]] = []
        for name in rng.sample(_STREAMS, rng.randint(1, 4)):
            mode = rng.choice(_SYNC_MODES)
            stream: dict[str, Any] = {"name": name, "syncMode": mode}
            if source in ("Postgres", "MySQL"):
                stream["namespace"] = "public"
            if mode.startswith("incremental"):
                stream["cursorField"] = ["updated_at"]
            if mode == "incremental_deduped_history":
                stream["primaryKey"] = [["id"]]
            streams.append(stream)
        view: dict[str, Any] = {
            "connectionId": _uuid(rng),
            "name": f"{source} → {destination} {index + 1:03d}",
            "sourceId": _uuid(rng),
            "destinationId": _uuid(rng),
            "workspaceId": workspace_id,
            "status": "inactive" if inactive else "active",
            "schedule": dict(rng.choice(_SCHEDULES)),
            "nonBreakingSchemaUpdatesBehavior": "ignore",
            "namespaceDefinition": "destination",
            "configurations": {"streams": streams},
            "createdAt": _CONNECTIONS_EPOCH + rng.randrange(180 * 86_400),
            "tags": [dict(tag) for tag in tags],
        }
        return _Connection(view=view, tag_ids=frozenset(tag["tagId"] for tag in tags))

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
        if connection.scripts:
            script = connection.scripts.popleft()
            seconds, incomplete, final = script.seconds, script.incomplete_attempts, script.final
            pending = script.pending_seconds
        if pending is None:
            pending = seconds * _PENDING_FRACTION
        if skip_pending:
            pending = 0.0
        events, spans = _timeline(now, seconds, pending, incomplete, final)

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
        )
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
        return job

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
