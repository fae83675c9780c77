"""Following a job to its end: poll through the watcher, report status changes, and when the
sync's time runs out or the run is stopped, cancel (or leave running) by policy, asking the trigger
hook first so that a job another run follows is never cancelled under it. A job that was running
before this tool triggered anything (adopted from Airbyte's 409) is cancelled only with
``cancel_adopted``: it is not ours to stop.

A stop takes every followed job out of the watcher at once (a status read in flight is left to
finish unheard), so that the cancels go out at once, each sync's in parallel; the engine bounds
the whole stop by the grace period.
"""

from __future__ import annotations

import functools
import heapq

import anyio

from airbyte_fleet._caller import option
from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteError, Job, JobStatus
from airbyte_fleet.engine._core import MAX_AUTH_FAILURES, EngineCore, Sync, follows_again
from airbyte_fleet.engine.events import (
    SyncCancelled,
    SyncDetached,
    SyncFailed,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTimedOut,
)

__all__ = ["FollowSteps"]

log = get_logger("airbyte_fleet.engine")


class FollowSteps(EngineCore):
    """Following a job with no task of its own: the sync's record goes into the watcher's table
    (and its deadline into a heap), the watcher calls :meth:`_on_news` with each new state, and a
    step task is started only when something must be done: the job ended, its time ran out, the
    run stopped, or the credentials keep being refused. That step is :meth:`_followed`, which the
    engine continues (``Engine._after_follow``: the outcome, a retry)."""

    _following: dict[str, Sync]
    _deadlines: list[tuple[float, int, str, int]]
    _deadline_seq: int
    _deadline_woken: anyio.Event

    def _start_step(self, sync: Sync, job: Job | None) -> None:
        """Run :meth:`_followed` for *sync* in a task of the run (the engine's)."""
        raise NotImplementedError

    def _follow(self, sync: Sync, job: Job) -> None:
        """Follow *job* until it ends, the sync's time runs out or the run stops."""
        sync.status = job.status
        self._note_unknown(sync, job)
        deadline = self._sync_deadline(sync)
        if job.is_terminal or self.stopping or self._clock() >= deadline:
            self._start_step(sync, job)
            return
        sync.followed = job
        self._following[sync.connection_id] = sync
        self._watcher.watch(
            job, functools.partial(self._on_news, sync), workspace_id=sync.item.workspace_id
        )
        self._deadline_seq += 1
        if not self._deadlines or deadline < self._deadlines[0][0]:
            self._deadline_woken.set()
        heapq.heappush(
            self._deadlines, (deadline, self._deadline_seq, sync.connection_id, job.job_id)
        )

    def _unfollow(self, sync: Sync) -> Job | None:
        job = sync.followed
        sync.followed = None
        if self._following.pop(sync.connection_id, None) is not None and job is not None:
            self._watcher.unwatch(job.job_id)
        return job

    def _on_news(self, sync: Sync, fresh: Job | None) -> None:
        """The watcher's call: a new state of the sync's job (None: a read failed)."""
        job = sync.followed
        if job is None:
            return  # no longer followed: a stop or a timeout took it over
        if fresh is None:
            if self._watcher.consecutive_auth_failures >= MAX_AUTH_FAILURES:
                self._unfollow(sync)
                self._emit(
                    SyncFailed,
                    sync,
                    job=job,
                    outcome="error",
                    error=f"Airbyte keeps refusing our credentials; job {job.job_id} may still be running",
                )
                self._start_step(sync, None)
            return
        if fresh.job_id != job.job_id:
            return
        if fresh.status != job.status:
            self._emit(SyncStatusChanged, sync, job=fresh, old_status=job.status)
            self._note_unknown(sync, fresh)
        sync.followed = fresh
        if fresh.is_terminal:
            self._unfollow(sync)
            self._start_step(sync, fresh)

    def _stop_following(self) -> None:
        """The run stops: every job followed gets its stop step (cancel or leave, by policy)."""
        for sync in list(self._following.values()):
            job = self._unfollow(sync)
            self._start_step(sync, job)

    async def _watch_deadlines(self) -> None:
        """One timer for every sync followed: a sync whose time runs out leaves the watcher and
        gets its timeout step (cancel by policy)."""
        while True:
            now = self._clock()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, connection_id, job_id = heapq.heappop(self._deadlines)
                sync = self._following.get(connection_id)
                if sync is None or sync.followed is None or sync.followed.job_id != job_id:
                    continue  # stale: that job ended, or the sync follows another one now
                job = self._unfollow(sync)
                self._start_step(sync, job)
            delay = self._deadlines[0][0] - now if self._deadlines else float("inf")
            self._deadline_woken = anyio.Event()
            with anyio.move_on_after(delay):
                await self._deadline_woken.wait()

    async def _followed(self, sync: Sync, job: Job | None) -> Job | None:
        """What a followed job came to: the job if it ended by itself, None when the sync was
        settled here (timed out, or stopped: cancelled or left running by policy)."""
        if job is None or job.is_terminal:
            return job
        if self.stopping:
            await self._on_stop(sync, job)
        else:
            await self._on_timeout(sync, job)
        return None

    def _note_unknown(self, sync: Sync, job: Job) -> None:
        if job.is_known_status:
            return
        if sync.unknown_logged is None:
            sync.unknown_logged = set()
        if job.status not in sync.unknown_logged:
            sync.unknown_logged.add(job.status)
            log.warning(
                "unknown_job_status",
                connection_id=sync.connection_id,
                job_id=job.job_id,
                status=job.status,
                note="not a final status we know; still waiting",
            )

    async def _on_timeout(self, sync: Sync, job: Job) -> None:
        limit = self.options.timeout
        by_run = (
            self._run_deadline is not None
            and sync.first_trigger is not None
            and self._run_deadline < sync.first_trigger + limit
        )
        why = "the run deadline passed" if by_run else f"it ran longer than {limit:g} s"
        if not self.options.cancel_on_timeout:
            self._emit(
                SyncTimedOut,
                sync,
                job=job,
                error=f"{why}; job {job.job_id} was left running "
                f"({option('cancel_on_timeout', False)})",
            )
            return
        if sync.started_elsewhere and not self.options.cancel_adopted:
            self._emit(
                SyncTimedOut,
                sync,
                job=job,
                error=f"{why}; {_not_ours(job)}, so it was left running "
                f"({option('cancel_adopted', True)} cancels it)",
            )
            return
        cancelled, final, note = await self._cancel(sync, job)
        if not cancelled and final.is_terminal:
            self._ended_before_cancel(sync, final)
            return
        self._emit(
            SyncTimedOut,
            sync,
            job=final,
            cancelled=cancelled,
            error=f"{why}; {note}",
        )

    def _ended_before_cancel(self, sync: Sync, final: Job) -> None:
        """The job reached its own end before the cancel did (Airbyte answers a cancel of an
        ended job with the job as it ended): report what Airbyte did, not an error."""
        if final.status == JobStatus.SUCCEEDED:
            self._emit(SyncSucceeded, sync, job=final)
        elif final.status == JobStatus.CANCELLED:
            self._emit(SyncCancelled, sync, job=final, error="the job was cancelled in Airbyte")
        else:
            self._emit(SyncFailed, sync, job=final, error=f"Airbyte job {final.job_id} failed")

    async def _on_stop(self, sync: Sync, job: Job) -> None:
        """Cancel or leave the job by the stop's mode. The engine cuts this short when the grace
        period runs out, and then reports the job as left running itself."""
        if self._stop_mode == "detach":
            self._emit(
                SyncDetached,
                sync,
                job=job,
                error=f"run interrupted; job {job.job_id} left running in Airbyte "
                f"({option('on_interrupt', 'detach')}); {follows_again(self.run_id)}",
            )
            return
        if sync.started_elsewhere and not self.options.cancel_adopted:
            self._emit(
                SyncDetached,
                sync,
                job=job,
                error=f"run interrupted; {_not_ours(job)}, so it was left running "
                f"({option('cancel_adopted', True)} cancels it)",
            )
            return
        cancelled, final, note = await self._cancel(sync, job)
        if cancelled:
            self._emit(SyncCancelled, sync, job=final, error=f"run interrupted; {note}")
        elif final.is_terminal:
            self._ended_before_cancel(sync, final)
        else:
            # Not known to have ended: say so, and keep it open for a resume to follow.
            self._emit(
                SyncDetached,
                sync,
                job=final,
                error=f"run interrupted; {note}; {follows_again(self.run_id)}",
            )

    async def _cancel(self, sync: Sync, job: Job) -> tuple[bool, Job, str]:
        """Cancel and verify by reading the status back; a failed cancel is reported, not hidden."""
        if self._letting_go:
            return False, job, f"job {job.job_id} was left running: the run was let go"
        keep = await self._hook.may_cancel(self.run_id, sync.connection_id, job.job_id)
        if keep is not None:
            return False, job, f"job {job.job_id} was left running: {keep}"
        try:
            after = await self.client.cancel_job(job.job_id)
            if after.status != JobStatus.CANCELLED and not after.is_terminal:
                after = await self.client.get_job(job.job_id)
        except AirbyteError as exc:
            return False, job, f"cancelling job {job.job_id} failed: {exc.message}"
        if after.status == JobStatus.CANCELLED:
            return True, after, f"job {job.job_id} was cancelled"
        if after.is_terminal:
            return False, after, f"job {job.job_id} had already ended as {after.status}"
        return False, after, f"job {job.job_id} is still {after.status} after the cancel request"


def _not_ours(job: Job) -> str:
    return f"job {job.job_id} was already running when this run adopted it"
