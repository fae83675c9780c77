"""Following a job to its end: poll through the watcher, report status changes, and when the
sync's time runs out or the run is stopped, cancel (or leave running) by policy, asking the trigger
hook first so that a job another run follows is never cancelled under it.
"""

from __future__ import annotations

import anyio
import structlog

from airbyte_fleet.api import AirbyteError, Job, JobStatus
from airbyte_fleet.engine._core import MAX_AUTH_FAILURES, EngineCore, Sync
from airbyte_fleet.engine.events import (
    SyncCancelled,
    SyncDetached,
    SyncFailed,
    SyncStatusChanged,
    SyncTimedOut,
)

__all__ = ["FollowSteps"]

log = structlog.get_logger("airbyte_fleet.engine")


class FollowSteps(EngineCore):
    async def _follow(self, sync: Sync, job: Job) -> Job | None:
        sync.status = job.status
        self._note_unknown(sync, job)
        while not job.is_terminal:
            deadline = self._sync_deadline(sync)
            if self.stopping:
                await self._on_stop(sync, job)
                return None
            remaining = deadline - self._clock()
            if remaining <= 0:
                await self._on_timeout(sync, job)
                return None
            fresh = await self._watcher.wait(job, remaining, workspace_id=sync.item.workspace_id)
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
        return job

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
                error=f"{why}; job {job.job_id} was left running (--no-cancel-on-timeout)",
            )
            return
        cancelled, final, note = await self._cancel(sync, job)
        self._emit(
            SyncTimedOut,
            sync,
            job=final,
            cancelled=cancelled,
            error=f"{why}; {note}",
        )

    async def _on_stop(self, sync: Sync, job: Job) -> None:
        if self._stop_mode == "detach":
            self._emit(
                SyncDetached,
                sync,
                job=job,
                error=f"run interrupted; job {job.job_id} left running in Airbyte (detach)",
            )
            return
        with anyio.move_on_after(self._grace):
            cancelled, final, note = await self._cancel(sync, job)
            if cancelled:
                self._emit(SyncCancelled, sync, job=final, error=f"run interrupted; {note}")
            else:
                self._emit(
                    SyncFailed, sync, job=final, outcome="error", error=f"run interrupted; {note}"
                )
            return
        self._emit(
            SyncFailed,
            sync,
            job=job,
            outcome="error",
            error=f"run interrupted; cancelling job {job.job_id} took longer than the grace period",
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
