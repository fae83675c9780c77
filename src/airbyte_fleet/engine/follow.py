"""Following a job to its end: poll through the watcher, report status changes, and when the
sync's time runs out or the run is stopped, cancel (or leave running) by policy, asking the trigger
hook first so that a job another run follows is never cancelled under it. A job that was running
before this tool triggered anything (adopted from Airbyte's 409) is cancelled only with
``cancel_adopted``: it is not ours to stop.

A stop cuts a status read in flight short (its retries too, while Airbyte is unreachable), so
that the cancels go out at once, each sync's in parallel; the engine bounds the whole stop by the
grace period.
"""

from __future__ import annotations

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
    async def _follow(self, sync: Sync, job: Job) -> Job | None:
        sync.status = job.status
        self._note_unknown(sync, job)
        # One scope for the whole wait, not one per poll: a stop cancels the read in flight (and
        # its retries) at once, and the steps that cancel or detach the job run after it, outside.
        with self._cut_on_stop():
            while not job.is_terminal and not self.stopping:
                remaining = self._sync_deadline(sync) - self._clock()
                if remaining <= 0:
                    break
                fresh = await self._watcher.wait(
                    job, remaining, workspace_id=sync.item.workspace_id
                )
                if fresh is None:
                    if self._watcher.consecutive_auth_failures >= MAX_AUTH_FAILURES:
                        self._emit(
                            SyncFailed,
                            sync,
                            job=job,
                            outcome="error",
                            error=f"Airbyte keeps refusing our credentials; job {job.job_id} may still be running",
                        )
                        return None
                    continue
                if fresh.status != job.status:
                    self._emit(SyncStatusChanged, sync, job=fresh, old_status=job.status)
                    self._note_unknown(sync, fresh)
                job = fresh
        if job.is_terminal:
            return job
        if self.stopping:
            await self._on_stop(sync, job)
        else:
            await self._on_timeout(sync, job)
        return None

    def _note_unknown(self, sync: Sync, job: Job) -> None:
        if not job.is_known_status and job.status not in sync.unknown_logged:
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
