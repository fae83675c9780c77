"""Following jobs: how the engine learns that a job has changed, without a task per job.

The engine hands a watcher each job it follows with :meth:`JobWatcher.watch` and a callback; the
watcher's own loop (:meth:`JobWatcher.run`) reads Airbyte and calls back with every new state of the
job (or with None when a read failed), until the engine calls :meth:`JobWatcher.unwatch`. Waiting
costs one small record per job, not a task, a timer and a cancel scope: at 10,000 syncs in flight that
was most of the engine's memory.

- :class:`PerJobWatcher` reads each job every interval (jittered, so 500 syncs do not poll in
  lock-step), a bounded number at once: N requests per tick.
- :class:`BatchedWatcher` asks once per workspace per tick for every job updated since the last
  tick (``GET /jobs?workspaceIds=W&updatedAtStart=T``): the request count follows the number of
  workspaces and changes, not the number of syncs, so its ticks need no jitter and keep the beat.
  Jobs it does not hear about for a while are confirmed one by one, so a server that ignores a filter
  can slow a sync down but never hang it; when that happens the workspace falls back to per-job
  polling, and says so. So does a workspace whose list Airbyte refuses (a 4xx: at once) or keeps
  failing (a 5xx: after a few ticks).

Transient errors are logged and watching goes on: a sync is never dropped because a status call
failed. Callbacks run in the watcher's loop and must not block.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import anyio

from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteClient, AirbyteError, AuthError, Job, RateLimitedError

__all__ = ["BatchedWatcher", "JobWatcher", "OnNews", "PerJobWatcher", "jittered"]

log = get_logger("airbyte_fleet.watch")

# Called with the job's new state, or None when reading it failed (the engine counts auth failures).
OnNews = Callable[[Job | None], None]

# Reads in flight at once for per-job polling (the connection pool bounds it too).
PER_JOB_READS = 50


def jittered(interval: float, rng: random.Random, spread: float = 0.2) -> float:
    return max(0.0, interval * rng.uniform(1 - spread, 1 + spread))


class JobWatcher(Protocol):
    async def run(self) -> None:
        """The watcher's loop for the whole run (the engine starts it and cancels it at the end)."""
        ...

    def watch(self, job: Job, on_news: OnNews, *, workspace_id: str = "") -> None:
        """Follow *job* until :meth:`unwatch`: *on_news* gets each new state of it."""
        ...

    def unwatch(self, job_id: int) -> None:
        """Stop following the job (no more callbacks for it)."""
        ...

    @property
    def consecutive_auth_failures(self) -> int: ...


@dataclass(slots=True)
class _Due:
    job: Job
    on_news: OnNews
    # When its next read is due: a heap entry with another time is stale.
    due_at: float = 0.0


class PerJobWatcher:
    """One ``GET /jobs/{id}`` per job per interval, at most :data:`PER_JOB_READS` at once."""

    def __init__(
        self,
        client: AirbyteClient,
        interval: float,
        *,
        stop: anyio.Event,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._interval = interval
        self._stop = stop
        self._rng = rng or random.Random()
        self._clock = clock
        self._auth_failures = 0
        self._watches: dict[int, _Due] = {}
        # (when, job id): the next read of each watched job; stale entries are skipped.
        self._heap: list[tuple[float, int]] = []
        self._woken = anyio.Event()

    @property
    def consecutive_auth_failures(self) -> int:
        return self._auth_failures

    def watch(self, job: Job, on_news: OnNews, *, workspace_id: str = "") -> None:
        watch = _Due(job, on_news)
        self._watches[job.job_id] = watch
        self._schedule(job.job_id, watch)
        self._woken.set()

    def _schedule(self, job_id: int, watch: _Due) -> None:
        watch.due_at = self._clock() + jittered(self._interval, self._rng)
        if not self._heap or watch.due_at < self._heap[0][0]:
            self._woken.set()  # the loop sleeps until the earliest read: this one is earlier
        heapq.heappush(self._heap, (watch.due_at, job_id))

    def unwatch(self, job_id: int) -> None:
        self._watches.pop(job_id, None)

    async def run(self) -> None:
        slots = anyio.Semaphore(PER_JOB_READS)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._wake_on_stop)
            while not self._stop.is_set():
                for job_id in self._take_due():
                    # A task per read in flight, never per job waiting: at most PER_JOB_READS.
                    await slots.acquire()
                    tg.start_soon(self._read, job_id, slots)
                delay = self._heap[0][0] - self._clock() if self._heap else float("inf")
                if delay <= 0:
                    continue
                self._woken = anyio.Event()
                with anyio.move_on_after(delay):
                    await self._woken.wait()
            tg.cancel_scope.cancel()

    async def _wake_on_stop(self) -> None:
        await self._stop.wait()
        self._woken.set()

    def _take_due(self) -> list[int]:
        now = self._clock()
        due: list[int] = []
        while self._heap and self._heap[0][0] <= now:
            at, job_id = heapq.heappop(self._heap)
            watch = self._watches.get(job_id)
            if watch is not None and watch.due_at == at:
                due.append(job_id)
        return due

    async def _read(self, job_id: int, slots: anyio.Semaphore) -> None:
        try:
            await self._read_one(job_id)
        finally:
            slots.release()

    async def _read_one(self, job_id: int) -> None:
        fresh: Job | None
        try:
            fresh = await self._client.get_job(job_id)
        except AuthError as exc:
            self._auth_failures += 1
            log.warning("poll_failed", job_id=job_id, error=exc.message)
            fresh = None
        except AirbyteError as exc:
            # The client already retried; the job is still ours to follow, so keep polling.
            log.warning("poll_failed", job_id=job_id, error=exc.message)
            fresh = None
        else:
            self._auth_failures = 0
        watch = self._watches.get(job_id)
        if watch is None or self._stop.is_set():
            return
        self._schedule(job_id, watch)
        if fresh is None:
            watch.on_news(None)
        elif fresh != watch.job:
            watch.job = fresh
            watch.on_news(fresh)


@dataclass(slots=True)
class _Watch:
    job: Job
    on_news: OnNews
    workspace_id: str
    registered_at: datetime
    last_seen: float
    # When per-job polling would read it next (its registration + k intervals), and its first,
    # quick read (None once done): with few jobs, ticks follow these (see BatchedWatcher.run).
    due: float = 0.0
    quick: float | None = None


# With at most this many jobs watched (a tick is then a page per workspace), ticks follow the
# jobs' own polling times; with more, they keep a fixed beat (see BatchedWatcher.run).
ALIGNED_MAX = 200
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
        overlap: float = 2.0,
        confirm_after: float | None = None,
        confirm_batch: int = 50,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._interval = interval
        self._stop = stop
        self._rng = rng or random.Random()
        # Updates that land while a tick is in flight and equal timestamps (Airbyte's have one
        # second's resolution): each window starts this long before the previous tick began. Clock
        # skew is the client's server_now() (Airbyte's Date header); the confirm catches the rest.
        # Every second of overlap is read again each tick: at 10,000 syncs, 5 s cost 40 % more lists.
        self._overlap = timedelta(seconds=overlap)
        self._confirm_after = confirm_after or max(60.0, 6 * interval)
        self._confirm_batch = confirm_batch
        self._clock = clock
        self._watches: dict[int, _Watch] = {}
        self._since: dict[str, datetime] = {}
        self._fallback: dict[str, str] = {}
        self._per_job = PerJobWatcher(client, interval, stop=stop, rng=self._rng, clock=clock)
        self._woken = anyio.Event()
        self._last_tick = clock()
        # How long a tick waits after the first job due for the others due just after it.
        self._lag = min(0.5, interval / 10)
        self._slowdown = 1.0
        self._misses: dict[str, int] = {}
        self._list_failures: dict[str, int] = {}
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

    def watch(self, job: Job, on_news: OnNews, *, workspace_id: str = "") -> None:
        if not workspace_id or workspace_id in self._fallback:
            self._per_job.watch(job, on_news)
            return
        now = self._clock()
        self._watches[job.job_id] = _Watch(
            job,
            on_news,
            workspace_id,
            self._client.server_now(),
            now,
            due=now + self._interval,
            quick=now + max(1.0, self._interval / 4),
        )
        if len(self._watches) <= ALIGNED_MAX:
            self._woken.set()  # the next tick may be due sooner than the loop planned

    def unwatch(self, job_id: int) -> None:
        self._watches.pop(job_id, None)
        self._per_job.unwatch(job_id)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            # Jobs of workspaces that fell back (or had none to batch by) are read one by one.
            tg.start_soon(self._per_job.run)
            tg.start_soon(self._wake_on_stop)
            while not self._stop.is_set():
                at = self._next_tick()
                delay = at - self._clock()
                if delay > 0:
                    self._woken = anyio.Event()
                    with anyio.move_on_after(delay):
                        await self._woken.wait()
                    continue  # woken (a new job, the stop) or on time: look again
                began = self._clock()
                await self.tick()
                self._last_tick = began
                self._served(began)
            tg.cancel_scope.cancel()

    async def _wake_on_stop(self) -> None:
        await self._stop.wait()
        self._woken.set()

    def _next_tick(self) -> float:
        """When the next tick is due.

        Many jobs: on the beat, one list per workspace whatever their number, so nothing is gained
        by spreading ticks out (and no jitter), and a change waits at most one interval. A few
        (a tick is then a page per workspace): when per-job polling would read them, each at its
        registration + k intervals, and once soon after it (its first transitions come quickly),
        the jobs due within a short lag of the first sharing one tick. So batched polling sees a
        job end no later than per-job polling would, at one request a tick instead of one a job.
        """
        beat = self._last_tick + self._interval * self._slowdown
        if not self._watches:
            return float("inf")  # nothing to list: a new job wakes the loop
        if len(self._watches) > ALIGNED_MAX or self._slowdown > 1:
            return beat
        first = min(
            min(w.due, w.quick) if w.quick is not None else w.due for w in self._watches.values()
        )
        return max(first + self._lag, self._last_tick + self._lag)

    def _served(self, at: float) -> None:
        """The jobs due by *at* were read: their next reads are an interval on."""
        for watch in self._watches.values():
            if watch.quick is not None and watch.quick <= at:
                watch.quick = None
            while watch.due <= at:
                watch.due += self._interval

    async def tick(self) -> None:
        self.ticks += 1
        by_workspace: dict[str, list[_Watch]] = {}
        for watch in self._watches.values():
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
        now = self._clock()
        try:
            # Page by page: a list of 10,000 jobs is never held whole.
            async for jobs in self._client.iter_job_pages(
                # Newest first, not oldest first: a job updated while the pages are read moves
                # to the front, which shifts the rest towards later pages (read twice, harmless)
                # instead of towards earlier ones (skipped: measured at 10,000 syncs).
                workspace_ids=[workspace_id],
                updated_at_start=since,
                order_by="updatedAt|DESC",
            ):
                for job in jobs:
                    stamp = job.last_updated_at
                    if stamp is not None and stamp < since - timedelta(seconds=1):
                        self._fall_back(
                            workspace_id, "the server ignores the updatedAtStart filter"
                        )
                    watch = self._watches.get(job.job_id)
                    if watch is None:
                        continue
                    watch.last_seen = now
                    if job != watch.job:
                        watch.job = job
                        watch.on_news(job)
        except RateLimitedError as exc:
            log.warning("batched_poll_failed", workspace_id=workspace_id, error=exc.message)
            return True
        except AirbyteError as exc:
            # A read cut short (PagingError among others) leaves the window where it was: the
            # next tick reads it again, so a change on an unread page waits one tick, not the
            # confirm.
            self._list_failed(workspace_id, exc)
            return False
        self._list_failures.pop(workspace_id, None)
        self._since[workspace_id] = began - self._overlap
        return False

    async def _confirm_unseen(self) -> None:
        now = self._clock()
        unseen = sorted(
            (w for w in self._watches.values() if now - w.last_seen >= self._confirm_after),
            key=lambda w: w.last_seen,
        )[: self._confirm_batch]
        for watch in unseen:
            try:
                fresh = await self._client.get_job(watch.job.job_id)
            except AirbyteError as exc:
                log.warning("confirm_failed", job_id=watch.job.job_id, error=exc.message)
                continue
            watch.last_seen = self._clock()
            if self._watches.get(watch.job.job_id) is not watch:
                continue  # unwatched (or moved to per-job polling) while we read it
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
                watch.on_news(fresh)

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
        # From now on the workspace's jobs are read one by one.
        for job_id, watch in list(self._watches.items()):
            if watch.workspace_id == workspace_id:
                del self._watches[job_id]
                self._per_job.watch(watch.job, watch.on_news)
