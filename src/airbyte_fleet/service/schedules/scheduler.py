"""The worker's scheduler: fires every enabled schedule on time and submits its run.

How ticks are handled:

* A tick fires when it comes due. If the schedule's previous run is still going, the tick is
  skipped and logged as ``schedule_skipped``: runs of one schedule never overlap.
* A tick found more than ``grace`` seconds late (the worker was down, or asleep) is *missed*. Of the
  missed ticks only the ``catch_up`` most recent run, one after another (a catch-up is owed, so it
  waits for a previous run to end instead of being skipped); the rest are dropped and counted in a
  ``schedule_ticks_dropped`` line. An on-time tick supersedes catch-ups still waiting.
* The newest tick dealt with is written to the state *before* the run is submitted, so a crash can
  lose a tick but never fire one twice; with several replicas on one database each tick is also
  fired once there (*submit* is given the tick: the worker records it with the run, under a unique
  key), and the state is read again before each tick.
* *track* hears of each schedule's runs (the metrics attribute a run's outcome to its schedule):
  of every run submitted, and at start of a remembered run still going (resumed after a restart).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import anyio

from airbyte_fleet._logging import get_logger
from airbyte_fleet.service.schedules.fire_times import due_ticks, fire_times, iso, require_aware
from airbyte_fleet.service.schedules.spec import Schedule
from airbyte_fleet.service.schedules.state import FileState, ScheduleState, StateKeeper

__all__ = ["SKIP_REASON", "Firing", "IsLive", "Scheduler", "Submit", "Track"]

log = get_logger("airbyte_fleet.schedules")

SKIP_REASON = "previous run still going"

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
Submit = Callable[[Schedule, datetime], Awaitable[str | None]]
IsLive = Callable[[str], bool]
Track = Callable[[str, str], None]  # (schedule name, run id)


@dataclass(frozen=True)
class Firing:
    """What one tick led to; ``tick`` is the scheduled time (UTC), not when it was noticed."""

    schedule: str
    tick: datetime
    action: Literal["fired", "skipped", "not_started", "failed"]
    run_id: str | None = None
    catch_up: bool = False
    reason: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    """Fires every enabled schedule on time; runs inside the worker as one task.

    *submit* starts a run for a schedule's tick and returns its run id (``None``: it declined); it
    should return once the run is started, not when it ends. *is_live* tells whether a run id is still
    going. *track*, when given, is told ``(schedule name, run id)`` of each of a schedule's runs
    (see the module's doc). *clock* and *sleep* are injectable so tests need no real time. With
    *state_path* the state is read at start (unless *state* is given) and rewritten, atomically,
    whenever it changes; without it the state lives in memory (see :meth:`state`).

    *grace*: a tick noticed at most this many seconds late is on time; later it is a missed tick
    (catch-up rules apply). *max_sleep* bounds each sleep so a wall-clock jump (suspend, NTP step)
    is noticed within that time; *poll* is how often a waiting catch-up checks the previous run.
    *keeper* replaces *state_path*: where the state is kept (the store's, shared by replicas).
    """

    def __init__(
        self,
        schedules: Iterable[Schedule],
        *,
        submit: Submit,
        is_live: IsLive,
        track: Track | None = None,
        clock: Clock = _utc_now,
        sleep: Sleep = anyio.sleep,
        state: ScheduleState | None = None,
        state_path: Path | None = None,
        keeper: StateKeeper | None = None,
        grace: float = 60.0,
        max_sleep: float = 60.0,
        poll: float = 5.0,
    ) -> None:
        self._schedules = list(schedules)
        names = [s.name for s in self._schedules]
        if len(set(names)) != len(names):
            raise ValueError("schedule names must be unique")
        self._submit = submit
        self._is_live = is_live
        self._track = track
        self._clock = clock
        self._sleep = sleep
        self._keeper = (
            keeper
            if keeper is not None
            else (FileState(state_path) if state_path is not None else None)
        )
        if state is None:
            state = self._keeper.read() if self._keeper is not None else ScheduleState()
        self._state = state.copy()
        self._grace = timedelta(seconds=grace)
        self._max_sleep = max_sleep
        self._poll = poll
        self._written: str | None = None
        enabled = {s.name for s in self._schedules if s.enabled}
        # A schedule removed or disabled starts afresh when it comes back: no replay of the ticks
        # it did not have while it was off.
        for name in (
            set(self._state.last_fired) | set(self._state.run_ids) | set(self._state.pending)
        ):
            if name not in enabled:
                self._state.forget(name)

    @property
    def schedules(self) -> list[Schedule]:
        return list(self._schedules)

    def state(self) -> ScheduleState:
        """A copy of what would be persisted."""
        return self._state.copy()

    async def run(self) -> None:
        """Tick and sleep until cancelled."""
        log.info("scheduler_started", schedules=[s.name for s in self._schedules if s.enabled])
        if self._track is not None:
            for name, run_id in self._state.run_ids.items():
                if self._is_live(run_id):
                    self._track(name, run_id)
        while True:
            try:
                await self.tick(self._now())
            except Exception as exc:
                # One broken callback must not silence every schedule until the next restart.
                log.error("scheduler_tick_failed", error=repr(exc))
            await self._sleep(self._delay(self._now()))

    async def tick(self, now: datetime) -> list[Firing]:
        """Deal with every tick due at *now*; the same *now* is used for all schedules so a slow
        submit does not make the next schedule's tick look late."""
        now = require_aware(now).astimezone(UTC)
        if self._keeper is not None and self._keeper.shared:
            # Another replica may have fired a tick (and remembered it) since the last look.
            self._reload()
        firings: list[Firing] = []
        for schedule in self._schedules:
            if schedule.enabled:
                firings.extend(await self._tick_one(schedule, now))
        return firings

    def next_wake(self, now: datetime) -> datetime | None:
        """When :meth:`run` should look again (before *max_sleep* caps it); None: nothing enabled."""
        now = require_aware(now).astimezone(UTC)
        wakes: list[datetime] = []
        for schedule in self._schedules:
            if not schedule.enabled:
                continue
            last = self._state.last_fired.get(schedule.name, now)
            upcoming = next(fire_times(schedule, max(last, now)), None)
            if upcoming is not None:
                wakes.append(upcoming)
            if self._state.pending.get(schedule.name):
                wakes.append(now + timedelta(seconds=self._poll))
        return min(wakes, default=None)

    def status(self, now: datetime) -> list[dict[str, Any]]:
        """Per schedule: its next fire time and what the scheduler remembers (for an API)."""
        now = require_aware(now).astimezone(UTC)
        rows = []
        for schedule in self._schedules:
            upcoming = next(fire_times(schedule, now), None) if schedule.enabled else None
            last = self._state.last_fired.get(schedule.name)
            run_id = self._state.run_ids.get(schedule.name)
            rows.append(
                {
                    "name": schedule.name,
                    "enabled": schedule.enabled,
                    "next": upcoming.isoformat() if upcoming else None,
                    "last_tick": last.isoformat() if last else None,
                    "run_id": run_id,
                    "running": bool(run_id and self._is_live(run_id)),
                    "waiting_catch_ups": len(self._state.pending.get(schedule.name, [])),
                }
            )
        return rows

    # ------------------------------------------------------------------------- internals

    def _now(self) -> datetime:
        return require_aware(self._clock()).astimezone(UTC)

    def _delay(self, now: datetime) -> float:
        wake = self.next_wake(now)
        if wake is None:
            return self._max_sleep
        return min(max((wake - now).total_seconds(), 0.0), self._max_sleep)

    async def _tick_one(self, schedule: Schedule, now: datetime) -> list[Firing]:
        name = schedule.name
        state = self._state
        last = state.last_fired.get(name)
        if last is None:
            # First sight (new schedule, or no state): count from now, replay nothing.
            state.last_fired[name] = now
            self._save()
            log.info(
                "schedule_armed", schedule=name, next=iso(next(fire_times(schedule, now), None))
            )
            return []

        recent, total, capped = due_ticks(schedule, last, now)
        if recent:
            newest = recent[-1]
            on_time = newest if now - newest <= self._grace else None
            missed = recent[:-1] if on_time is not None else recent
            missed_total = total - (1 if on_time is not None else 0)
            waiting = state.pending.get(name, [])
            if on_time is not None:
                kept: list[datetime] = []
                why = "superseded by an on-time tick"
            else:
                kept = (
                    sorted({*waiting, *missed})[-schedule.catch_up :] if schedule.catch_up else []
                )
                why = "missed while the worker was down or asleep"
            dropped = len(waiting) + missed_total - len(kept)
            state.last_fired[name] = newest
            state.pending[name] = kept
            if dropped > 0:
                log.warning(
                    "schedule_ticks_dropped",
                    schedule=name,
                    dropped=dropped,
                    at_least=capped,
                    catch_up=schedule.catch_up,
                    reason=why,
                    through=iso(newest),
                )
            if not self._save():
                return []
            if on_time is not None:
                return [await self._fire(schedule, on_time, catch_up=False)]

        queue = state.pending.get(name)
        if not queue:
            return []
        previous = state.run_ids.get(name)
        if previous is not None and self._is_live(previous):
            log.debug("schedule_catch_up_waiting", schedule=name, run_id=previous)
            return []
        tick = queue.pop(0)
        if not self._save():
            return []
        return [await self._fire(schedule, tick, catch_up=True)]

    async def _fire(self, schedule: Schedule, tick: datetime, *, catch_up: bool) -> Firing:
        name = schedule.name
        previous = self._state.run_ids.get(name)
        if not catch_up and previous is not None and self._is_live(previous):
            log.warning(
                "schedule_skipped",
                schedule=name,
                tick=iso(tick),
                reason=SKIP_REASON,
                run_id=previous,
            )
            return Firing(name, tick, "skipped", run_id=previous, reason=SKIP_REASON)
        try:
            run_id = await self._submit(schedule, tick)
        except Exception as exc:
            log.error("schedule_submit_failed", schedule=name, tick=iso(tick), error=str(exc))
            return Firing(name, tick, "failed", catch_up=catch_up, reason=str(exc))
        if run_id is None:
            log.warning("schedule_not_started", schedule=name, tick=iso(tick))
            return Firing(name, tick, "not_started", catch_up=catch_up)
        self._state.run_ids[name] = run_id
        if self._track is not None:
            self._track(name, run_id)
        self._save()
        log.info("schedule_fired", schedule=name, tick=iso(tick), run_id=run_id, catch_up=catch_up)
        return Firing(name, tick, "fired", run_id=run_id, catch_up=catch_up)

    def _reload(self) -> None:
        assert self._keeper is not None
        try:
            stored = self._keeper.read()
        except Exception as exc:
            log.warning("schedule_state_unreadable", error=str(exc))
            return
        enabled = {s.name for s in self._schedules if s.enabled}
        for name in enabled:
            # Never backwards: a tick this replica dealt with stays dealt with.
            mine = self._state.last_fired.get(name)
            theirs = stored.last_fired.get(name)
            if theirs is not None and (mine is None or theirs > mine):
                self._state.last_fired[name] = theirs
                self._state.pending[name] = list(stored.pending.get(name, []))
                if name in stored.run_ids:
                    self._state.run_ids[name] = stored.run_ids[name]
        self._written = self._state.to_json()

    def _save(self) -> bool:
        """Persist if anything changed; False when it could not be written (then fire nothing)."""
        if self._keeper is None:
            return True
        text = self._state.to_json()
        if text == self._written:
            return True
        try:
            self._keeper.write(self._state)
        except Exception as exc:
            log.error("schedule_state_write_failed", where=_where(self._keeper), error=str(exc))
            return False
        self._written = text
        return True


def _where(keeper: StateKeeper) -> str:
    return str(keeper.path) if isinstance(keeper, FileState) else "the store"
