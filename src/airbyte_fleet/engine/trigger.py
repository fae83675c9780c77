"""Getting a job for a sync: claim the connection from the trigger hook, send ``POST /jobs`` after
the store has journaled the intent, reconcile an answer that was lost, and apply ``if_running`` when
a job is already running (Airbyte's 409, or another run of the hook's owner following one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import anyio
from anyio.lowlevel import checkpoint

from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import (
    AirbyteError,
    AlreadyRunningError,
    InactiveConnectionError,
    Job,
    NotFoundError,
    ServerError,
    TransportError,
    TriggerOutcomeUnknownError,
)
from airbyte_fleet.engine._core import (
    CLOCK_SKEW,
    INTERRUPTED_BEFORE_TRIGGER,
    TRIGGER_TRIES,
    EngineCore,
    Settled,
    Sync,
    now,
)
from airbyte_fleet.engine.events import (
    Event,
    SyncAdopted,
    SyncFailed,
    SyncSkipped,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.hooks import Adopt, ClaimError, Skip

__all__ = ["TriggerSteps"]

log = get_logger("airbyte_fleet.engine")


@dataclass
class _Tries:
    """The ``POST /jobs`` sent for one sync, and why the last one made no job."""

    count: int = 0
    problem: str = ""


@dataclass(eq=False)
class IntentBatch:
    """Intents waiting to be journaled together (group commit): every trigger that gets ready in
    the same moment joins, one transaction records them all, then each trigger goes out."""

    events: list[Event] = field(default_factory=list)
    written: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None


# An intent batch is written at this size, or once no trigger joined it for this many turns of the
# event loop (the feeder yields twice per sync it starts: at its slot, and at its start slot).
MAX_INTENT_BATCH = 500
QUIET_TURNS = 4


class _WaitLonger(Exception):
    """No job came of a try, and the next one waits the sync-retry backoff (see ``_start_job``)."""


class TriggerSteps(EngineCore):
    _intents: IntentBatch | None

    def _spawn_writer(self, batch: IntentBatch) -> None:
        """Start :meth:`_write_intents` for *batch* in a task of the run (the engine's)."""
        raise NotImplementedError

    async def _journal_intent(self, sync: Sync) -> None:
        """Journal the intent to trigger *sync*, durable before this returns (the write-ahead
        promise), in one transaction with every other intent ready now. Raises what the store
        raised: then the trigger must not be sent."""
        event = self._sync_event(SyncTriggering, sync, ready_s=sync.ready_s)
        if self._letting_go:
            return
        batch = self._intents
        if batch is None:
            batch = self._intents = IntentBatch()
            self._spawn_writer(batch)
        batch.events.append(event)
        if len(batch.events) >= MAX_INTENT_BATCH:
            self._intents = None  # full: the next intent starts another batch
        await batch.written.wait()
        if batch.error is not None:
            raise batch.error

    async def _write_intents(self, batch: IntentBatch) -> None:
        # Wait while intents keep joining (the feeder starts one sync per turn of the loop), then
        # write them all: a few hundred intents cost one transaction and one fsync, not one each.
        quiet = 0
        while quiet < QUIET_TURNS and len(batch.events) < MAX_INTENT_BATCH:
            joined = len(batch.events)
            await checkpoint()
            quiet = quiet + 1 if len(batch.events) == joined else 0
        if self._intents is batch:
            self._intents = None
        try:
            self._publish_many(batch.events)
        except Exception as exc:
            batch.error = exc
        finally:
            batch.written.set()

    async def _read_job_until_known(
        self, sync: Sync, job_id: int, *, why: str = "again after the restart"
    ) -> Job:
        attempt = 0
        while not self.stopping and self._clock() < self._sync_deadline(sync):
            attempt += 1
            try:
                return await self.client.get_job(job_id)
            except AirbyteError as exc:
                log.warning("job_read_failed", job_id=job_id, error=exc.message)
                await self._pause(
                    min(self._backoff(attempt), self._until(self._sync_deadline(sync)))
                )
        self._emit(
            SyncFailed,
            sync,
            outcome="error",
            error=f"could not read job {job_id} {why}; it may still be running",
        )
        raise Settled

    async def _claim(self, sync: Sync) -> Adopt | bool:
        """Ask the hook before triggering: True to trigger, an :class:`Adopt` to follow another
        run's job, False when the sync has been settled here (skipped, failed)."""
        with anyio.CancelScope() as scope:
            self._stoppable.add(scope)
            if self.stopping:
                scope.cancel()
            try:
                claim = await self._hook.claim(
                    self.run_id, sync.connection_id, seen=frozenset(sync.seen)
                )
            except ClaimError as exc:
                # The hook's store is the run's store (or beside it): a claim it cannot record
                # stops the run as a journal write would, and a resume triggers this sync.
                self._store_failed(exc, f"a claim on connection {sync.connection_id}")
                self._emit(
                    SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted"
                )
                return False
            finally:
                self._stoppable.discard(scope)
        if scope.cancelled_caught:
            self._emit(SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted")
            return False
        if isinstance(claim, Skip):
            self._emit(SyncSkipped, sync, reason=claim.reason, cause="claimed")
            return False
        if isinstance(claim, Adopt):
            return claim
        return True

    async def _start_job(self, sync: Sync) -> Job | None:
        if self.stopping:
            self._emit(SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted")
            return None
        claim = await self._claim(sync)
        if claim is False:
            return None
        if isinstance(claim, Adopt):
            job = await self._read_job_until_known(
                sync, claim.job_id, why=f"that {claim.owner} is following"
            )
            return self._already_running(sync, job, f"{claim.owner} is following job {job.job_id}")
        tries = _Tries()
        for round_ in range(1, TRIGGER_TRIES + 1):
            try:
                return await self._post_under_policy(sync, tries)
            except ServerError:
                break  # the HTTP policy gave up on tries refused with a 5xx that made no job
            except _WaitLonger:
                if round_ < TRIGGER_TRIES:
                    await self._pause(self._backoff(1))
        self._emit(
            SyncFailed,
            sync,
            outcome="error",
            error=f"could not trigger after {tries.count} "
            f"{'try' if tries.count == 1 else 'tries'}: {tries.problem}",
        )
        return None

    async def _post_under_policy(self, sync: Sync, tries: _Tries) -> Job | None:
        """``POST /jobs`` until it makes a job, tried again under the client's HTTP retry policy
        (short, jittered backoff) while Airbyte refuses it with a 5xx and lists no job from it.

        Returns the job, or None when the sync is settled here. Raises :class:`_WaitLonger` when
        the try must be repeated after the sync-retry backoff, and the last refusal (a
        ``ServerError``) once the policy gives up.
        """
        try:
            return await self._post_once(sync, tries)
        except ServerError as exc:
            refused: ServerError | None = exc
        # Only a refused trigger pays for a retry policy's state (most never need one).
        retries = aiter(self.client.retrying(what="POST /jobs"))
        while True:
            # The policy's wait between tries comes first; a stop cuts it short.
            with anyio.CancelScope() as waiting:
                self._stoppable.add(waiting)
                if self.stopping:
                    waiting.cancel()
                try:
                    attempt = await anext(retries)
                finally:
                    self._stoppable.discard(waiting)
            if waiting.cancelled_caught:
                self._emit(
                    SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted"
                )
                return None
            # Nothing may run between this block and the next anext(): the attempt swallows
            # whatever is raised in it, cancellation included, and anext() raises it again.
            with attempt:
                if refused is not None:
                    # The first try, made above: the policy counts it and waits before the next.
                    first, refused = refused, None
                    raise first
                return await self._post_once(sync, tries)

    async def _post_once(self, sync: Sync, tries: _Tries) -> Job | None:
        """One ``POST /jobs``, its intent journaled first; see :meth:`_post_under_policy`."""
        cid = sync.connection_id
        if self.stopping:
            self._emit(SyncSkipped, sync, reason=INTERRUPTED_BEFORE_TRIGGER, cause="interrupted")
            return None
        began = now()
        if sync.first_trigger is None:
            sync.first_trigger = self._clock()
        try:
            await self._journal_intent(sync)
        except Exception as exc:
            # The journal could not record the intent: triggering now could not be undone
            # safely after a crash, so do not trigger at all. The run stops for it (the store
            # failed), so this sync is one the run was interrupted before: a resume runs it.
            sync.triggering = False
            self._emit(
                SyncSkipped,
                sync,
                reason=f"not triggered: the journal could not record it ({exc})",
                cause="interrupted",
                best_effort=True,
            )
            return None
        tries.count += 1
        try:
            async with self._trigger_slots:
                job = await self.client.create_job(cid, self.options.job_type)
        except AlreadyRunningError:
            if self.options.if_running == "fail":
                self._emit(SyncFailed, sync, outcome="error", error="a sync is already running")
                return None
            running = await self._find_running(cid)
            if running is not None or self.options.if_running == "skip":
                return self._already_running(sync, running, None)
            # Airbyte said "already running" but lists no running job (its stale-state case):
            # wait a little and trigger again, through the journal like any trigger.
            tries.problem = "Airbyte says a sync is already running but shows no running job"
            log.warning("already_running_without_job", connection_id=cid)
            raise _WaitLonger from None
        except TriggerOutcomeUnknownError as exc:
            log.warning("trigger_unclear", connection_id=cid, error=exc.message)
            known, found = await self._reconcile_until_known(sync, began)
            if not known:
                self._emit(
                    SyncFailed,
                    sync,
                    outcome="error",
                    error="Airbyte's answer to the trigger was lost and its job list stayed "
                    "unreadable; check the connection in Airbyte before triggering it again",
                )
                return None
            if found is not None:
                self._emit(SyncTriggered, sync, job=found)
                return found
            # No job came of that try, so another cannot duplicate one.
            tries.problem = f"{exc.happened}, and no job came of it"
            if exc.answer is not None:
                # A 5xx is an answer: the server is done with the request, and the list shows
                # it made nothing. Try again like any refused request, under the HTTP policy.
                raise exc.answer from None
            # No answer came: a job may still be on its way, so look again only after a while.
            raise _WaitLonger from None
        except (InactiveConnectionError, NotFoundError) as exc:
            reason = (
                "the connection no longer exists" if isinstance(exc, NotFoundError) else exc.message
            )
            self._emit(SyncFailed, sync, outcome="error", error=reason)
            return None
        except TransportError as exc:
            # The request never reached Airbyte (refused, DNS): nothing to reconcile.
            log.warning("trigger_not_sent", connection_id=cid, error=exc.message)
            tries.problem = exc.message
            raise _WaitLonger from None
        except AirbyteError as exc:
            self._emit(SyncFailed, sync, outcome="error", error=exc.message)
            return None
        self._emit(SyncTriggered, sync, job=job)
        return job

    def _already_running(self, sync: Sync, job: Job | None, who: str | None) -> Job | None:
        """A job is already running for the connection (Airbyte's 409, or another run of this
        process): the run's ``if_running`` policy says whether to follow it."""
        policy = self.options.if_running
        shown = f" (job {job.job_id})" if job is not None else ""
        if who is not None:
            shown = f" ({who})"
        if policy == "fail":
            self._emit(
                SyncFailed,
                sync,
                job=job,
                outcome="error",
                error="a sync is already running" + shown,
            )
            return None
        if policy == "skip":
            self._emit(
                SyncSkipped,
                sync,
                reason="a sync is already running" + shown,
                job=job,
                cause="already_running",
            )
            return None
        assert job is not None
        reason = f"{who}; following it too" if who else "a sync was already running; following it"
        self._emit(SyncAdopted, sync, job=job, reason=reason)
        return job

    async def _reconcile_until_known(self, sync: Sync, began: datetime) -> tuple[bool, Job | None]:
        """Look for the job an unclear trigger may have created, until Airbyte can tell us.

        Returns ``(False, None)`` only if the sync's deadline passes or the run stops first.
        """
        attempt = 0
        while not self.stopping and self._clock() < self._sync_deadline(sync):
            attempt += 1
            try:
                page = await self.client.list_jobs_page(
                    connection_id=sync.connection_id, order_by="createdAt|DESC", limit=10
                )
            except AirbyteError as exc:
                log.warning("reconcile_failed", connection_id=sync.connection_id, error=exc.message)
                await self._pause(
                    min(self._backoff(attempt), self._until(self._sync_deadline(sync)))
                )
                continue
            return True, self._ours(page.data, began)
        return False, None

    def _ours(self, jobs: tuple[Job, ...], began: datetime) -> Job | None:
        for job in jobs:
            if job.job_type != self.options.job_type:
                continue
            # Only one job per connection can be running, so a running one is the one to follow.
            if not job.is_terminal:
                return job
            if job.start_time is not None and job.start_time >= began - CLOCK_SKEW:
                return job
        return None

    async def _recent_jobs(self, connection_id: str, why: str) -> tuple[Job, ...]:
        try:
            page = await self.client.list_jobs_page(
                connection_id=connection_id, order_by="createdAt|DESC", limit=10
            )
        except AirbyteError as exc:
            log.warning(f"{why}_failed", connection_id=connection_id, error=exc.message)
            return ()
        return page.data

    async def _find_running(self, connection_id: str) -> Job | None:
        jobs = await self._recent_jobs(connection_id, "find_running")
        return next((job for job in jobs if not job.is_terminal), None)
