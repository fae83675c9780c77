"""Following jobs until they change: how the engine learns about a job's status.

A watcher answers one question for a sync task: "has this job changed, within at most N seconds?".

- :class:`PerJobWatcher` asks Airbyte for each job every interval (jittered, so 500 syncs do not
  poll in lock-step): N requests per tick.
- :class:`BatchedWatcher` asks once per workspace per tick for every job updated since the last
  tick (``GET /jobs?workspaceIds=W&updatedAtStart=T``): the request count follows the number of
  workspaces and changes, not the number of syncs. Jobs it does not hear about for a while are
  confirmed one by one, so a server that ignores a filter can slow a sync down but never hang it;
  when that happens the workspace falls back to per-job polling, and says so. So does a workspace
  whose list Airbyte refuses (a 4xx: at once) or keeps failing (a 5xx: after a few ticks).

Transient errors are logged and watching goes on: a sync is never dropped because a status call
failed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import anyio

from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteClient, AirbyteError, AuthError, Job, RateLimitedError

__all__ = ["BatchedWatcher", "JobWatcher", "PerJobWatcher", "jittered"]

log = get_logger("airbyte_fleet.watch")


def jittered(interval: float, rng: random.Random, spread: float = 0.2) -> float:
    return max(0.0, interval * rng.uniform(1 - spread, 1 + spread))


class JobWatcher(Protocol):
    async def run(self) -> None:
        """Background work for the whole run (the engine starts it and cancels it at the end)."""
        ...

    async def wait(self, job: Job, max_wait: float, *, workspace_id: str = "") -> Job | None:
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

    async def run(self) -> None:
        return None

    async def wait(self, job: Job, max_wait: float, *, workspace_id: str = "") -> Job | None:
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


@dataclass
class _Watch:
    job: Job
    workspace_id: str
    registered_at: datetime
    last_seen: float
    deadline: float = float("inf")
    changed: anyio.Event = field(default_factory=anyio.Event)


MISSES_BEFORE_FALLBACK = 3
# Ticks in a row whose list failed on the server's side (5xx, after the client's own retries).
LIST_FAILURES_BEFORE_FALLBACK = 3


class BatchedWatcher:
    """One ``GET /jobs`` per workspace per tick, whatever the number of jobs in flight there."""

    def __init__(
        self,
        client: AirbyteClient,
        interval: float,
        *,
        stop: anyio.Event,
        rng: random.Random | None = None,
        overlap: float = 5.0,
        confirm_after: float | None = None,
        confirm_batch: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._interval = interval
        self._stop = stop
        self._rng = rng or random.Random()
        # Updates that land while a tick is in flight, equal timestamps and clock skew: each
        # window starts this long before the previous tick began.
        self._overlap = timedelta(seconds=overlap)
        self._confirm_after = confirm_after or max(60.0, 6 * interval)
        self._confirm_batch = confirm_batch
        self._clock = clock
        self._watches: dict[int, _Watch] = {}
        self._since: dict[str, datetime] = {}
        self._fallback: dict[str, str] = {}
        self._per_job = PerJobWatcher(client, interval, stop=stop, rng=self._rng)
        self._fresh = anyio.Event()
        self._slowdown = 1.0
        self._misses: dict[str, int] = {}
        self._list_failures: dict[str, int] = {}
        self._running = False
        self.ticks = 0

    @property
    def consecutive_auth_failures(self) -> int:
        return self._per_job.consecutive_auth_failures

    @property
    def slowdown(self) -> float:
        """How many times the base interval the next tick waits (it grows while Airbyte sheds load)."""
        return self._slowdown

    @property
    def fallbacks(self) -> dict[str, str]:
        """Workspaces polled per job instead, and why."""
        return dict(self._fallback)

    async def wait(self, job: Job, max_wait: float, *, workspace_id: str = "") -> Job | None:
        if not workspace_id or workspace_id in self._fallback:
            return await self._per_job.wait(job, max_wait)
        watch = self._watches.get(job.job_id)
        if watch is None:
            watch = _Watch(job, workspace_id, self._client.server_now(), self._clock())
            self._watches[job.job_id] = watch
            self._fresh.set()
        elif watch.job != job:
            return self._deliver(watch)
        watch.deadline = self._clock() + max_wait
        if self._running:
            # The run loop wakes us on a change, at the deadline (to the tick) or on stop: no
            # timer and cancel scope per waiting sync, which is most of their cost at 10,000.
            await watch.changed.wait()
        else:
            with anyio.move_on_after(max_wait):
                await watch.changed.wait()
        if workspace_id in self._fallback:
            # From now on this job is polled on its own (see wait's first line).
            self._watches.pop(job.job_id, None)
            return watch.job if watch.job != job else None
        if watch.job != job:
            return self._deliver(watch)
        watch.changed = anyio.Event()  # woken for its deadline, not for news
        return None

    def _deliver(self, watch: _Watch) -> Job:
        watch.changed = anyio.Event()
        if watch.job.is_terminal:
            self._watches.pop(watch.job.job_id, None)
        return watch.job

    async def run(self) -> None:
        self._running = True
        try:
            while not self._stop.is_set():
                delay = jittered(self._interval * self._slowdown, self._rng)
                if self._fresh.is_set():
                    # Jobs were just triggered: their first transitions come quickly.
                    delay = min(delay, max(1.0, self._interval / 4))
                    self._fresh = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._stop.wait()
                if self._stop.is_set():
                    break
                await self.tick()
                now = self._clock()
                for watch in self._watches.values():
                    if watch.deadline <= now:
                        watch.changed.set()
        finally:
            self._running = False
            for watch in self._watches.values():
                watch.changed.set()

    async def tick(self) -> None:
        self.ticks += 1
        by_workspace: dict[str, list[_Watch]] = {}
        for watch in self._watches.values():
            if watch.workspace_id not in self._fallback:
                by_workspace.setdefault(watch.workspace_id, []).append(watch)
        limited = False
        async with anyio.create_task_group() as tg:
            for workspace_id, watches in by_workspace.items():

                async def one(ws: str = workspace_id, ws_watches: list[_Watch] = watches) -> None:
                    nonlocal limited
                    limited |= await self._tick_workspace(ws, ws_watches)

                tg.start_soon(one)
        # Back off while Airbyte sheds load; come back down gently once it stops.
        self._slowdown = min(self._slowdown * 2, 8.0) if limited else max(1.0, self._slowdown / 2)
        await self._confirm_unseen()

    async def _tick_workspace(self, workspace_id: str, watches: list[_Watch]) -> bool:
        """Returns True when Airbyte rate-limited us."""
        began = self._client.server_now()
        since = self._since.get(workspace_id)
        if since is None:
            since = min(w.registered_at for w in watches) - self._overlap
        try:
            jobs = await self._client.list_jobs(
                # Newest first, not oldest first: a job updated while the pages are read moves
                # to the front, which shifts the rest towards later pages (read twice, harmless)
                # instead of towards earlier ones (skipped: measured at 10,000 syncs).
                workspace_ids=[workspace_id],
                updated_at_start=since,
                order_by="updatedAt|DESC",
            )
        except RateLimitedError as exc:
            log.warning("batched_poll_failed", workspace_id=workspace_id, error=exc.message)
            return True
        except AirbyteError as exc:
            self._list_failed(workspace_id, exc)
            return False
        self._list_failures.pop(workspace_id, None)
        self._since[workspace_id] = began - self._overlap
        now = self._clock()
        for job in jobs:
            stamp = job.last_updated_at
            if stamp is not None and stamp < since - timedelta(seconds=1):
                self._fall_back(workspace_id, "the server ignores the updatedAtStart filter")
            watch = self._watches.get(job.job_id)
            if watch is None:
                continue
            watch.last_seen = now
            if job != watch.job:
                watch.job = job
                watch.changed.set()
        return False

    async def _confirm_unseen(self) -> None:
        now = self._clock()
        unseen = sorted(
            (
                w
                for w in self._watches.values()
                if now - w.last_seen >= self._confirm_after and w.workspace_id not in self._fallback
            ),
            key=lambda w: w.last_seen,
        )[: self._confirm_batch]
        for watch in unseen:
            try:
                fresh = await self._client.get_job(watch.job.job_id)
            except AirbyteError as exc:
                log.warning("confirm_failed", job_id=watch.job.job_id, error=exc.message)
                continue
            watch.last_seen = self._clock()
            if fresh.status != watch.job.status:
                # The list should have shown this change. Once may be a race with paging; again
                # and again means this workspace's list cannot be trusted.
                misses = self._misses.get(watch.workspace_id, 0) + 1
                self._misses[watch.workspace_id] = misses
                log.info("confirm_found_change", job_id=watch.job.job_id, misses=misses)
                if misses >= MISSES_BEFORE_FALLBACK:
                    self._fall_back(
                        watch.workspace_id, "jobs keep changing without showing in the list"
                    )
            if fresh != watch.job:
                watch.job = fresh
                watch.changed.set()

    def _list_failed(self, workspace_id: str, exc: AirbyteError) -> None:
        """A list that is refused will be refused again: per-job polling at once. One that keeps
        failing on the server's side: per-job polling after a few ticks. Neither for a 401 (the
        credentials, not the list) nor when Airbyte cannot be reached (per-job cannot either)."""
        log.warning("batched_poll_failed", workspace_id=workspace_id, error=exc.message)
        status = exc.status or 0
        if 400 <= status < 500 and status not in (401, 408):
            # A server or proxy that rejects a filter or orderBy (old versions, mocks): 400, 422.
            self._fall_back(workspace_id, f"Airbyte refused the job list (HTTP {status})")
        elif status >= 500 or status == 408:
            failures = self._list_failures.get(workspace_id, 0) + 1
            self._list_failures[workspace_id] = failures
            if failures >= LIST_FAILURES_BEFORE_FALLBACK:
                self._fall_back(
                    workspace_id,
                    f"the job list failed {failures} ticks in a row (last: HTTP {status})",
                )

    def _fall_back(self, workspace_id: str, reason: str) -> None:
        if workspace_id in self._fallback:
            return
        self._fallback[workspace_id] = reason
        log.warning("batched_polling_fallback", workspace_id=workspace_id, reason=reason)
        for watch in self._watches.values():
            if watch.workspace_id == workspace_id:
                # Wake the waiter so that it carries on with per-job polling.
                watch.changed.set()
