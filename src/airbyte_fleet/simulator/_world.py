"""The simulated Airbyte data: workspaces, tags, connections and jobs.

Job state is never stored as "current status": each job keeps a fixed timeline of status
changes, and every read evaluates it at the clock's time. That way no background task per job
is needed, thousands of jobs cost nothing while idle, and a FakeClock moves all of them at once.

With ``max_running`` a job's start also depends on the other jobs, so its timeline is only
fixed up to its first attempt: a small scheduler replays slot hand-overs (ends, readiness,
cancellations) in clock order whenever a job is read, and appends ``queued`` and the attempts
to the timeline at the exact times they happened. It is still a pure function of the clock
and of what was requested when, with no background task.
"""

from __future__ import annotations

import copy
import heapq
import itertools
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


@dataclass
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
    scheduler: _Scheduler | None = field(default=None, repr=False, compare=False)

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


@dataclass(frozen=True)
class _Plan:
    """What happens from the first attempt on; ``not_before`` is the earliest terminal time."""

    work: float
    incomplete: int
    final: str
    running: str
    not_before: float


def _attempts(
    start: float, plan: _Plan
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


@dataclass
class _Slotted:
    """Scheduler bookkeeping for one job under a slot cap."""

    job: Job
    plan: _Plan
    seq: int
    slot_end: float | None = None  # set once the job holds a slot
    released: bool = False


class _Scheduler:
    """Hands out ``slots`` worker slots, replaying events lazily in clock order.

    A job asks for a slot when its pending time is over. It starts at once if a slot is free,
    otherwise it is ``queued`` and waits in FIFO order (of readiness, then creation). A slot
    frees when its job reaches a terminal status, or at once when the job is cancelled; a
    slot that frees at the moment another job becomes ready goes to the waiting jobs first.
    ``settle(now)`` applies every hand-over due up to ``now``; it is cheap when none is.
    """

    def __init__(self, slots: int) -> None:
        self._slots = slots
        self._busy = 0
        self._seq = itertools.count()
        self._ready: list[tuple[float, int, _Slotted]] = []  # heap of pending jobs
        self._ends: list[tuple[float, int, _Slotted]] = []  # heap of slot releases
        self._waiting: deque[_Slotted] = deque()  # queued jobs, first come first served
        self._records: dict[int, _Slotted] = {}

    def enqueue(self, job: Job, plan: _Plan, ready_at: float) -> None:
        record = _Slotted(job, plan, next(self._seq))
        self._records[job.job_id] = record
        heapq.heappush(self._ready, (ready_at, record.seq, record))

    def start_now(self, job: Job, plan: _Plan, now: float) -> None:
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
                    record.job.events.append((at, "queued"))
                    self._waiting.append(record)

    def _fill(self, at: float) -> None:
        while self._waiting and self._busy < self._slots:
            record = self._waiting.popleft()
            if record.job.cancelled_at is not None:
                self._records.pop(record.job.job_id, None)
                continue
            self._start(record, at)

    def _start(self, record: _Slotted, at: float) -> None:
        events, spans = _attempts(at, record.plan)
        record.job.events.extend(events)
        record.job.running_spans = spans
        record.slot_end = events[-1][0]
        self._busy += 1
        heapq.heappush(self._ends, (record.slot_end, record.seq, record))


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
        self._scheduler = None if options.max_running is None else _Scheduler(options.max_running)

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
        running = "running"
        if connection.scripts:
            script = connection.scripts.popleft()
            seconds, incomplete, final = script.seconds, script.incomplete_attempts, script.final
            pending = script.pending_seconds
            running = script.odd_status or running
        if pending is None:
            pending = seconds * _PENDING_FRACTION
        if skip_pending:
            pending = 0.0
        plan = _Plan(
            work=max(0.0, seconds - pending),
            incomplete=incomplete,
            final=final,
            running=running,
            not_before=now + seconds,
        )
        events: list[tuple[float, str]] = [(now, "pending")]
        spans: list[tuple[float, float]] = []
        if self._scheduler is None:
            attempts, spans = _attempts(now + pending, plan)
            events.extend(attempts)

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
