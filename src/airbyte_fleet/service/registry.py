"""One trigger per connection across every run in the worker.

Airbyte refuses a second job for a connection (409) only once the first job exists, so two runs
that select the same connection a moment apart would both send ``POST /jobs``. The worker closes
that window itself: every run's engine talks to Airbyte through a :class:`RunClient`, whose
``create_job`` first takes the connection's claim in the shared :class:`TriggerRegistry`.

* Nobody holds the claim: this run takes it and sends the trigger.
* Another run is triggering: wait until its answer is known.
* Another run follows a job this run has not seen yet: answer as Airbyte would, with
  :class:`AlreadyRunningError`, and without a request. The engine then applies the run's own
  ``if_running`` policy (adopt, skip, fail); looking for the running job, it is handed that job.

A claim lasts from the trigger until every run following the job has settled it (a final event,
a retry, or the run's end), and the registry learns that from each run's events, so jobs adopted
from Airbyte's own 409, or followed again after a restart, are shared the same way. Cancelling a
run (or its timeout) leaves a job running that another run still follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from airbyte_fleet.api import (
    AirbyteClient,
    AirbyteError,
    AlreadyRunningError,
    ConflictError,
    Job,
    JobType,
    Page,
    TransportError,
)
from airbyte_fleet.engine.events import (
    Event,
    SyncAdopted,
    SyncCancelled,
    SyncDetached,
    SyncEvent,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncSucceeded,
    SyncTimedOut,
    SyncTriggered,
)

__all__ = ["RunClient", "TriggerRegistry"]

log = structlog.get_logger("airbyte_fleet.service")

# After these the run no longer follows the job it had (a retry triggers a new one).
_LETS_GO = (
    SyncSucceeded,
    SyncFailed,
    SyncTimedOut,
    SyncCancelled,
    SyncSkipped,
    SyncDetached,
    SyncRetrying,
)


@dataclass
class _Claim:
    triggering: str | None = None  # the run whose POST /jobs is out, or whose answer is unsettled
    job: Job | None = None
    followers: dict[str, int] = field(default_factory=dict)  # run id -> job id it follows


@dataclass(frozen=True)
class Handover:
    """A job another run of this worker is following, offered instead of a trigger."""

    job: Job
    run_id: str


class _Stopped(Exception):
    pass


class TriggerRegistry:
    """connection id -> the job runs of this worker follow for it, and who may trigger next."""

    def __init__(self) -> None:
        self._claims: dict[str, _Claim] = {}
        self._waiters: dict[str, asyncio.Event] = {}

    # ----------------------------------------------------------------- triggering

    async def acquire(
        self, connection_id: str, run_id: str, seen: set[int], stop: asyncio.Event
    ) -> Handover | None:
        """``None``: *run_id* now holds the trigger and may send it. A :class:`Handover`: follow
        that job instead. *seen* are jobs this run already followed for the connection (one that
        failed is not offered again). Raises :class:`_Stopped` once *stop* is set."""
        while True:
            claim = self._claims.get(connection_id)
            if claim is None:
                self._claims[connection_id] = _Claim(triggering=run_id)
                return None
            someone_triggers = claim.triggering not in (None, run_id)
            others = set(claim.followers) - {run_id}
            if not someone_triggers and not others:
                claim.triggering = run_id
                return None
            job = claim.job
            if not someone_triggers and job is not None and job.job_id not in seen:
                owners = sorted(r for r in others if claim.followers[r] == job.job_id)
                return Handover(job, owners[0] if owners else "another run")
            if stop.is_set():
                raise _Stopped
            await _first(self._waiters.setdefault(connection_id, asyncio.Event()), stop)

    def triggered(self, connection_id: str, run_id: str, job: Job) -> None:
        claim = self._claims.setdefault(connection_id, _Claim())
        if claim.triggering == run_id:
            claim.triggering = None
        claim.job = job
        claim.followers[run_id] = job.job_id
        self._changed(connection_id)

    # ----------------------------------------------------------------- learning from events

    def sink(self, run_id: str) -> Callable[[Event], None]:
        """The event sink that keeps the registry in step with run *run_id*."""

        def observe(event: Event) -> None:
            if isinstance(event, SyncEvent):
                self.observe(run_id, event)

        return observe

    def observe(self, run_id: str, event: SyncEvent) -> None:
        cid = event.connection_id
        claim = self._claims.get(cid)
        if isinstance(event, SyncTriggered | SyncAdopted) and event.job_id is not None:
            if claim is None:
                claim = self._claims[cid] = _Claim()
            if claim.triggering == run_id:
                claim.triggering = None
            if claim.job is None or event.job_id > claim.job.job_id:
                # Airbyte runs one job per connection at a time: the newest one is the live one.
                claim.job = Job.model_validate(
                    {
                        "jobId": event.job_id,
                        "status": event.status or "running",
                        "jobType": event.job_type,
                        "connectionId": cid,
                    }
                )
            claim.followers[run_id] = event.job_id
            self._changed(cid)
        elif isinstance(event, _LETS_GO) and claim is not None:
            claim.followers.pop(run_id, None)
            if claim.triggering == run_id:
                claim.triggering = None
            self._changed(cid)

    def forget_run(self, run_id: str) -> None:
        """The run ended: whatever it held goes, so nobody waits on it for ever."""
        for cid, claim in list(self._claims.items()):
            if claim.triggering == run_id or run_id in claim.followers:
                claim.followers.pop(run_id, None)
                if claim.triggering == run_id:
                    claim.triggering = None
                self._changed(cid)

    # ----------------------------------------------------------------- reading

    def others_following(self, job_id: int, run_id: str) -> list[str]:
        return sorted(
            r
            for claim in self._claims.values()
            for r, j in claim.followers.items()
            if j == job_id and r != run_id
        )

    def claimed(self) -> dict[str, int | None]:
        """connection id -> the job id its claim holds (for tests and diagnostics)."""
        return {cid: c.job.job_id if c.job else None for cid, c in self._claims.items()}

    def _changed(self, connection_id: str) -> None:
        claim = self._claims.get(connection_id)
        if claim is not None and claim.triggering is None and not claim.followers:
            del self._claims[connection_id]
        waiter = self._waiters.pop(connection_id, None)
        if waiter is not None:
            waiter.set()


async def _first(*events: asyncio.Event) -> None:
    if any(e.is_set() for e in events):
        return
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class RunClient:
    """The worker's one :class:`AirbyteClient` as one run sees it: triggers pass the registry,
    cancels spare jobs other runs follow; everything else is the shared client itself (one
    connection pool, one token refresher, one set of request statistics)."""

    def __init__(
        self,
        client: AirbyteClient,
        registry: TriggerRegistry,
        run_id: str,
        stop: asyncio.Event,
    ) -> None:
        self._client = client
        self._registry = registry
        self._run_id = run_id
        self._stop = stop
        self._seen: dict[str, set[int]] = {}
        self._handovers: dict[str, Handover] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create_job(self, connection_id: str, job_type: JobType | str = JobType.SYNC) -> Job:
        seen = self._seen.setdefault(connection_id, set())
        try:
            handover = await self._registry.acquire(connection_id, self._run_id, seen, self._stop)
        except _Stopped:
            # The engine reads this as "not sent" and, seeing its stop, skips the sync.
            raise TransportError(f"not triggered: run {self._run_id} is stopping") from None
        if handover is not None:
            seen.add(handover.job.job_id)
            self._handovers[connection_id] = handover
            log.info(
                "trigger_shared",
                run_id=self._run_id,
                connection_id=connection_id,
                job_id=handover.job.job_id,
                owner_run_id=handover.run_id,
            )
            raise AlreadyRunningError(
                f"connection {connection_id} is already running job {handover.job.job_id} for "
                f"run {handover.run_id} of this worker",
                connection_id=connection_id,
                status=409,
            )
        job = await self._client.create_job(connection_id, job_type)
        seen.add(job.job_id)
        self._registry.triggered(connection_id, self._run_id, job)
        return job

    async def list_jobs_page(self, **filters: Any) -> Page[Job]:
        cid = filters.get("connection_id")
        handover = self._handovers.pop(cid, None) if isinstance(cid, str) else None
        if handover is None:
            return await self._client.list_jobs_page(**filters)
        # The engine is looking for the job it was just told is running. Offer that one even if
        # it ended a moment ago: this run asked while it ran, and following it reports its end.
        shown = handover.job
        try:
            fresh = await self._client.get_job(shown.job_id)
        except AirbyteError:
            fresh = shown
        return Page[Job](data=(shown if fresh.is_terminal else fresh,))

    async def cancel_job(self, job_id: int) -> Job:
        others = self._registry.others_following(job_id, self._run_id)
        if others:
            raise ConflictError(
                f"job {job_id} is also followed by run {others[0]} of this worker, so it was "
                "left running",
                status=409,
            )
        return await self._client.cancel_job(job_id)
