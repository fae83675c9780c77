"""Following jobs until they change: how the engine learns about a job's status.

A watcher answers one question for a sync task: "has this job changed, within at most N seconds?".
Per-job polling asks Airbyte for the job every interval (with jitter, so 500 syncs do not poll in
lock-step); transient errors are logged and polling goes on: a sync is never dropped because one
status call failed.
"""

from __future__ import annotations

import random
from typing import Protocol

import anyio
import structlog

from airbyte_fleet.api import AirbyteClient, AirbyteError, AuthError, Job

__all__ = ["JobWatcher", "PerJobWatcher", "jittered"]

log = structlog.get_logger("airbyte_fleet.watch")


def jittered(interval: float, rng: random.Random, spread: float = 0.2) -> float:
    return max(0.0, interval * rng.uniform(1 - spread, 1 + spread))


class JobWatcher(Protocol):
    async def wait(self, job: Job, max_wait: float) -> Job | None:
        """The job's latest state after waiting at most *max_wait* s; None if nothing new is known
        (a failed poll, or the run is stopping)."""
        ...

    @property
    def consecutive_auth_failures(self) -> int: ...


class PerJobWatcher:
    """One ``GET /jobs/{id}`` per job per interval."""

    def __init__(
        self,
        client: AirbyteClient,
        interval: float,
        *,
        stop: anyio.Event,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._interval = interval
        self._stop = stop
        self._rng = rng or random.Random()
        self._auth_failures = 0

    @property
    def consecutive_auth_failures(self) -> int:
        return self._auth_failures

    async def wait(self, job: Job, max_wait: float) -> Job | None:
        with anyio.move_on_after(min(max_wait, jittered(self._interval, self._rng))):
            await self._stop.wait()
        if self._stop.is_set():
            return None
        try:
            fresh = await self._client.get_job(job.job_id)
        except AuthError as exc:
            self._auth_failures += 1
            log.warning("poll_failed", job_id=job.job_id, error=exc.message)
            return None
        except AirbyteError as exc:
            # The client already retried; the job is still ours to follow, so keep polling.
            log.warning("poll_failed", job_id=job.job_id, error=exc.message)
            return None
        self._auth_failures = 0
        return fresh
