"""Named schedules from the config file, their next fire times, and the worker's scheduler.

A schedule is a ``[schedules.NAME]`` table. The selection keys sit directly in it, exactly as in a
``[groups.NAME]`` table, and run option overrides go in a nested ``options`` table::

    [schedules.nightly]
    cron = "0 2 * * *"          # minute hour day-of-month month day-of-week, or @daily, @hourly...
    timezone = "Europe/Berlin"  # IANA name; UTC when left out
    tags = ["nightly"]          # connections, names, tags, workspaces, all, groups
    catch_up = 1                # missed ticks run after downtime (the most recent ones); 0 = none
    enabled = true

    [schedules.nightly.options] # over the file's [run] table
    max_concurrency = 50

How ticks are handled:

* A tick fires when it comes due. If the schedule's previous run is still going, the tick is
  skipped and logged as ``schedule_skipped``: runs of one schedule never overlap.
* A tick found more than ``grace`` seconds late (the worker was down, or asleep) is *missed*. Of the
  missed ticks only the ``catch_up`` most recent run, one after another (a catch-up is owed, so it
  waits for a previous run to end instead of being skipped); the rest are dropped and counted in a
  ``schedule_ticks_dropped`` line. An on-time tick supersedes catch-ups still waiting.
* The newest tick dealt with is written to the state file *before* the run is submitted, so a
  crash can lose a tick but never fire one twice.
* Times are computed in the schedule's zone (croniter + zoneinfo): a time skipped by a spring-forward
  change fires at the first minute after it, and a fixed-hour schedule fires once on the day a
  wall-clock hour repeats; a schedule running every hour (``*`` hour) fires in both passes.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import anyio
import structlog
from croniter import CroniterBadDateError, croniter
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from airbyte_fleet._files import write_atomically
from airbyte_fleet._messages import did_you_mean as _did_you_mean
from airbyte_fleet._messages import k as _k
from airbyte_fleet._messages import one_line as _one_line
from airbyte_fleet._messages import reason as _reason
from airbyte_fleet._messages import show as _show
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.errors import ConfigError

__all__ = [
    "MAX_CATCH_UP",
    "Firing",
    "IsRunning",
    "Schedule",
    "ScheduleState",
    "Scheduler",
    "Submit",
    "describe_next",
    "next_fire_times",
    "parse_schedules",
    "summarize_selection",
]

log = structlog.get_logger("airbyte_fleet.schedules")

MAX_CATCH_UP = 100
SKIP_REASON = "previous run still going"

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
Submit = Callable[["Schedule"], Awaitable[str | None]]
IsRunning = Callable[[str], bool]

# Schedule names end up in log lines, the state file and (soon) URLs: keep them plain, like groups.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
# croniter's H and R draw values from a hash or a random source: R would pick a new minute every
# time the expression is parsed, so the printed fire times would not be the ones that fire.
_HASHED = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")
_SCHEDULE_KEYS = ("cron", "timezone", "catch_up", "enabled", "options")
_CRON_HINT = 'write it as minute hour day-of-month month day-of-week, e.g. "0 2 * * *"'
# A long outage of a minutely schedule has too many missed ticks to walk one by one on the event
# loop; past this many the newest ones are found from the other end and the count is a lower bound.
_COUNT_CAP = 2_000


# ----------------------------------------------------------------------------- checks


def _check_cron(value: Any) -> str:
    """The expression with its whitespace normalised, or ValueError with a short reason."""
    if not isinstance(value, str):
        raise ValueError('it should be a text like "0 2 * * *"')
    text = " ".join(value.split())
    if not text:
        raise ValueError("it is empty")
    if text.startswith("@"):
        if text.lower() not in _ALIASES:
            raise ValueError(f"{text!r} is not one of {', '.join(_ALIASES)}")
        text = text.lower()
    else:
        count = len(text.split(" "))
        if count != 5:
            seconds = ": seconds are not supported" if count in (6, 7) else ""
            raise ValueError(f"it has {count} fields, not 5{seconds}")
        if _HASHED.search(text):
            raise ValueError("the hashed H and random R values are not supported")
    try:
        croniter(text, datetime(2000, 1, 1, tzinfo=UTC), ret_type=datetime).get_next()
    except CroniterBadDateError:
        raise ValueError("it never matches a real date") from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        # croniter's own texts ("[61 2 * * *] is not acceptable, out of range") say enough.
        raise ValueError(_one_line(str(exc)) or "croniter cannot read it") from None
    return text


def _check_timezone(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("it should be an IANA time zone name like 'Europe/Berlin' or 'UTC'")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"{_show(value)} is not an IANA time zone name") from None
    return value


def _suggest_zone(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    # Only on the error path: listing every zone reads the whole tz database.
    zones = available_timezones()
    folded = {zone.lower(): zone for zone in zones}
    if value.lower() in folded:
        return f" (did you mean '{folded[value.lower()]}'?)"
    return _did_you_mean(value, zones)


def _check_options(value: Any) -> dict[str, Any]:
    """RunOptions overrides, checked one by one so a message can name the key (KeyError: unknown)."""
    if not isinstance(value, Mapping):
        raise TypeError("options must be a table")
    for key, item in value.items():
        if key not in RunOptions.model_fields:
            raise KeyError(key)
        problem = _option_problem(key, item)
        if problem is not None:
            raise ValueError(f"{key}: {problem}")
    return dict(value)


def _option_problem(key: str, value: Any) -> str | None:
    info = RunOptions.model_fields[key]
    if isinstance(value, bool) and info.annotation in (int, float):
        # pydantic would read `max_concurrency = true` as 1; in a file that is always a mistake.
        return f"expected a number, not {str(value).lower()}"
    hint: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    try:
        TypeAdapter(hint).validate_python(value)
    except ValidationError as exc:
        return _reason(exc.errors()[0])
    return None


# ----------------------------------------------------------------------------- the model


class Schedule(BaseModel):
    """One ``[schedules.NAME]`` table, checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    cron: str
    timezone: str = "UTC"
    selection: Selection
    options: dict[str, Any] = Field(default_factory=dict, description="RunOptions overrides")
    catch_up: StrictInt = Field(default=1, ge=0, le=MAX_CATCH_UP)
    enabled: StrictBool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("a schedule name has letters, digits, '-' or '_' only")
        return value

    @field_validator("cron", mode="before")
    @classmethod
    def _cron(cls, value: Any) -> str:
        return _check_cron(value)

    @field_validator("timezone", mode="before")
    @classmethod
    def _timezone(cls, value: Any) -> str:
        return _check_timezone(value)

    @field_validator("options", mode="before")
    @classmethod
    def _options(cls, value: Any) -> dict[str, Any]:
        try:
            return _check_options(value)
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]!r} is not a run option") from None
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _selects_something(self) -> Schedule:
        if self.selection.empty:
            raise ValueError("the schedule selects nothing")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def run_options(self, base: Mapping[str, Any] | None = None) -> RunOptions:
        """This schedule's options over *base* (the file's ``[run]`` table), over the defaults."""
        return RunOptions.model_validate({**(base or {}), **self.options})


# ----------------------------------------------------------------------------- parsing


def parse_schedules(
    raw: Mapping[str, Mapping[str, Any]],
    *,
    source: str,
    groups: Collection[str] | None = None,
) -> list[Schedule]:
    """Check every ``[schedules.NAME]`` table of *source* (a file name, for messages).

    *groups*: the names the file defines under ``[groups]``; when given, a schedule naming any
    other group is an error. Raises :class:`ConfigError` with one sentence naming the file, the
    schedule and the key.
    """
    file = _k(source)
    return [_parse_one(file, name, body, groups) for name, body in raw.items()]


def _parse_one(file: str, name: str, body: Any, groups: Collection[str] | None) -> Schedule:
    where = f"[schedules.{_k(name)}]"
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"Schedule name '{_k(name)}' in {file} cannot be used; name it with letters, digits, "
            "'-' or '_' only."
        )
    if not isinstance(body, Mapping):
        raise ConfigError(
            f"Key 'schedules.{_k(name)}' in {file} must be a table; write it as {where}."
        )
    allowed = (*_SCHEDULE_KEYS, *Selection.model_fields)
    for key, value in body.items():
        if key in allowed:
            continue
        if key == "selection" and isinstance(value, Mapping):
            raise ConfigError(
                f"Table [schedules.{_k(name)}.selection] in {file} is not read; put "
                f"{', '.join(Selection.model_fields)} directly in {where}."
            )
        raise ConfigError(
            f"Unknown key '{_k(key)}' in {where} of {file}{_did_you_mean(key, allowed)}; use "
            f"{', '.join(_SCHEDULE_KEYS)} or the selection keys "
            f"{', '.join(Selection.model_fields)}."
        )

    if "cron" not in body:
        raise ConfigError(
            f'Schedule {where} in {file} has no cron; add cron = "0 2 * * *" '
            "(minute hour day-of-month month day-of-week)."
        )
    try:
        cron = _check_cron(body["cron"])
    except ValueError as exc:
        raise ConfigError(
            f"Key cron={_show(body['cron'])} in {where} of {file} is invalid ({exc}); {_CRON_HINT}."
        ) from None

    timezone = body.get("timezone", "UTC")
    try:
        timezone = _check_timezone(timezone)
    except ValueError:
        raise ConfigError(
            f"Key timezone={_show(timezone)} in {where} of {file} is not an IANA time zone"
            f"{_suggest_zone(timezone)}; use a name like 'Europe/Berlin' or 'UTC'."
        ) from None

    catch_up = body.get("catch_up", 1)
    if (
        isinstance(catch_up, bool)
        or not isinstance(catch_up, int)
        or not (0 <= catch_up <= MAX_CATCH_UP)
    ):
        raise ConfigError(
            f"Key catch_up={_show(catch_up)} in {where} of {file} is invalid (it should be a whole "
            f"number from 0 to {MAX_CATCH_UP}: how many missed ticks to run after downtime)."
        )
    enabled = body.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(
            f"Key enabled={_show(enabled)} in {where} of {file} is invalid (it should be true or "
            "false)."
        )

    options = body.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"Key 'options' in {where} of {file} must be a table; write it as "
            f"[schedules.{_k(name)}.options] with run options such as max_concurrency under it."
        )
    for key, value in options.items():
        if key not in RunOptions.model_fields:
            raise ConfigError(
                f"Unknown run option '{_k(key)}' in [schedules.{_k(name)}.options] of {file}"
                f"{_did_you_mean(key, RunOptions.model_fields)}; use one of "
                f"{', '.join(RunOptions.model_fields)}."
            )
        problem = _option_problem(key, value)
        if problem is not None:
            raise ConfigError(
                f"Key {_k(key)}={_show(value)} in [schedules.{_k(name)}.options] of {file} is "
                f"invalid ({problem})."
            )

    if not isinstance(body.get("all", False), bool):
        # pydantic would read all = "yes" as true; in a file that is a mistake, as for enabled.
        raise ConfigError(
            f"Key all={_show(body['all'])} in {where} of {file} is invalid (it should be true or "
            "false)."
        )
    selection = _selection(file, where, {k: v for k, v in body.items() if k not in _SCHEDULE_KEYS})
    if selection.empty:
        raise ConfigError(
            f"Schedule {where} in {file} selects nothing; give it connections, names, tags, "
            "workspaces, groups or all = true."
        )
    if groups is not None:
        unknown = [g for g in selection.groups if g not in groups]
        if unknown:
            raise ConfigError(
                f"Schedule {where} in {file} names unknown group '{_k(unknown[0])}'"
                f"{_did_you_mean(unknown[0], groups)}; define [groups.{_k(unknown[0])}] or "
                "remove it."
            )

    return Schedule(
        name=name,
        cron=cron,
        timezone=timezone,
        selection=selection,
        options=dict(options),
        catch_up=catch_up,
        enabled=enabled,
    )


def _selection(file: str, where: str, body: Mapping[str, Any]) -> Selection:
    try:
        return Selection.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "selection"
        raise ConfigError(
            f"Key {_k(key)}={_show(body.get(key))} in {where} of {file} is invalid "
            f"({_reason(error)})."
        ) from None


# ----------------------------------------------------------------------------- fire times


def _fires(schedule: Schedule, start: datetime, *, backwards: bool = False) -> Iterator[datetime]:
    """UTC instants at which *schedule* fires, strictly after (or before) *start*."""
    it = croniter(schedule.cron, start.astimezone(schedule.zone), ret_type=datetime)
    every_hour = it.expanded[1] == ["*"]
    previous: datetime | None = None
    while True:
        try:
            local = it.get_prev() if backwards else it.get_next()
        except CroniterBadDateError:
            return
        if local.fold and not every_hour and _ambiguous(local):
            # The second pass of a repeated wall-clock hour: a fixed-time job ran in the first.
            continue
        instant = local.astimezone(UTC)
        if previous is not None and (instant >= previous if backwards else instant <= previous):
            continue
        previous = instant
        yield instant


def _ambiguous(moment: datetime) -> bool:
    return moment.replace(fold=0).utcoffset() != moment.replace(fold=1).utcoffset()


def next_fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next *count* fire times strictly after *after*, aware, in the schedule's zone.

    Compare them with ``.astimezone(UTC)``: Python ignores ``fold`` when comparing two datetimes of
    the same zone, so the two 02:30 of a fall-back night would compare equal.
    """
    _require_aware(after)
    zone = schedule.zone
    return [t.astimezone(zone) for t in islice(_fires(schedule, after), max(count, 0))]


def summarize_selection(selection: Selection) -> str:
    """A short one-line summary for a table cell (connection ids are counted, not listed)."""
    parts: list[str] = []
    if selection.all:
        parts.append("all")
    for label, values in (
        ("groups", selection.groups),
        ("tags", selection.tags),
        ("names", selection.names),
    ):
        if values:
            parts.append(f"{label}={','.join(values)}")
    if selection.workspaces:
        parts.append(f"{len(selection.workspaces)} workspace(s)")
    if selection.connections:
        parts.append(f"{len(selection.connections)} connection(s)")
    return "; ".join(parts) or "nothing"


def describe_next(
    schedules: Iterable[Schedule], now: datetime, count: int = 3
) -> list[dict[str, Any]]:
    """One row per schedule for ``airbyte-fleet schedules`` (table or JSON).

    ``next_local``/``next_utc`` are display texts; ``next`` holds the same times as ISO 8601 with
    their offset. A disabled schedule has no next times.
    """
    _require_aware(now)
    rows: list[dict[str, Any]] = []
    for schedule in schedules:
        times = next_fire_times(schedule, now, count) if schedule.enabled else []
        rows.append(
            {
                "name": schedule.name,
                "enabled": schedule.enabled,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "next": [t.isoformat() for t in times],
                "next_local": [t.strftime("%Y-%m-%d %H:%M %Z") for t in times],
                "next_utc": [t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") for t in times],
                "selection": summarize_selection(schedule.selection),
                "catch_up": schedule.catch_up,
                "options": dict(schedule.options),
            }
        )
    return rows


# ----------------------------------------------------------------------------- state


class _StateEntry(BaseModel):
    last_tick: AwareDatetime | None = None
    run_id: str | None = None
    pending: list[AwareDatetime] = Field(default_factory=list)


class _StateFile(BaseModel):
    version: Literal[1] = 1
    schedules: dict[str, _StateEntry] = Field(default_factory=dict)


@dataclass
class ScheduleState:
    """What the scheduler must remember across restarts, per schedule name.

    ``last_fired``: the newest tick dealt with (fired, skipped or dropped), UTC; ``run_ids``: the
    last run submitted, to keep runs from overlapping after a restart; ``pending``: catch-up ticks
    still waiting for the previous run to end.
    """

    last_fired: dict[str, datetime] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)
    pending: dict[str, list[datetime]] = field(default_factory=dict)

    FILE_NAME = "schedules.json"

    def copy(self) -> ScheduleState:
        return ScheduleState(
            last_fired=dict(self.last_fired),
            run_ids=dict(self.run_ids),
            pending={name: list(ticks) for name, ticks in self.pending.items()},
        )

    def forget(self, name: str) -> None:
        self.last_fired.pop(name, None)
        self.run_ids.pop(name, None)
        self.pending.pop(name, None)

    def to_json(self) -> str:
        names = sorted(set(self.last_fired) | set(self.run_ids) | set(self.pending))
        doc = _StateFile(
            schedules={
                name: _StateEntry(
                    last_tick=self.last_fired.get(name),
                    run_id=self.run_ids.get(name),
                    pending=self.pending.get(name, []),
                )
                for name in names
            }
        )
        return doc.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ScheduleState:
        doc = _StateFile.model_validate_json(text)
        state = cls()
        for name, entry in doc.schedules.items():
            if entry.last_tick is not None:
                state.last_fired[name] = entry.last_tick.astimezone(UTC)
            if entry.run_id:
                state.run_ids[name] = entry.run_id
            if entry.pending:
                state.pending[name] = sorted(t.astimezone(UTC) for t in entry.pending)
        return state

    @classmethod
    def read(cls, path: Path) -> ScheduleState:
        """The state in *path*; empty when it does not exist or cannot be read.

        An unreadable file is not fatal: starting empty re-arms every schedule from now, which
        can lose a catch-up but never fires a tick twice.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("schedule_state_unreadable", path=str(path), error=str(exc))
            return cls()
        try:
            return cls.from_json(text)
        except ValidationError as exc:
            log.warning(
                "schedule_state_unreadable",
                path=str(path),
                error=_one_line(str(exc.errors()[0].get("msg", "invalid"))),
            )
            return cls()

    def write(self, path: Path) -> None:
        """Replace *path* atomically: a crash leaves the old file or the new one, never half."""
        # Durable (rename included) before the run it records is submitted.
        write_atomically(path, self.to_json())


# ----------------------------------------------------------------------------- the scheduler


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

    *submit* starts a run for a schedule and returns its run id (``None``: it declined); it should
    return once the run is started, not when it ends. *is_running* tells whether a run id is still
    going. *clock* and *sleep* are injectable so tests need no real time. With *state_path* the
    state is read at start (unless *state* is given) and rewritten, atomically, whenever it
    changes; without it the state lives in memory (see :meth:`state`).

    *grace*: a tick noticed at most this many seconds late is on time; later it is a missed tick
    (catch-up rules apply). *max_sleep* bounds each sleep so a wall-clock jump (suspend, NTP step)
    is noticed within that time; *poll* is how often a waiting catch-up checks the previous run.
    """

    def __init__(
        self,
        schedules: Iterable[Schedule],
        *,
        submit: Submit,
        is_running: IsRunning,
        clock: Clock = _utc_now,
        sleep: Sleep = anyio.sleep,
        state: ScheduleState | None = None,
        state_path: Path | None = None,
        grace: float = 60.0,
        max_sleep: float = 60.0,
        poll: float = 5.0,
    ) -> None:
        self._schedules = list(schedules)
        names = [s.name for s in self._schedules]
        if len(set(names)) != len(names):
            raise ValueError("schedule names must be unique")
        self._submit = submit
        self._is_running = is_running
        self._clock = clock
        self._sleep = sleep
        self._path = state_path
        if state is None:
            state = ScheduleState.read(state_path) if state_path is not None else ScheduleState()
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
        now = _require_aware(now).astimezone(UTC)
        firings: list[Firing] = []
        for schedule in self._schedules:
            if schedule.enabled:
                firings.extend(await self._tick_one(schedule, now))
        return firings

    def next_wake(self, now: datetime) -> datetime | None:
        """When :meth:`run` should look again (before *max_sleep* caps it); None: nothing enabled."""
        now = _require_aware(now).astimezone(UTC)
        wakes: list[datetime] = []
        for schedule in self._schedules:
            if not schedule.enabled:
                continue
            last = self._state.last_fired.get(schedule.name, now)
            upcoming = next(_fires(schedule, max(last, now)), None)
            if upcoming is not None:
                wakes.append(upcoming)
            if self._state.pending.get(schedule.name):
                wakes.append(now + timedelta(seconds=self._poll))
        return min(wakes, default=None)

    def status(self, now: datetime) -> list[dict[str, Any]]:
        """Per schedule: its next fire time and what the scheduler remembers (for an API)."""
        now = _require_aware(now).astimezone(UTC)
        rows = []
        for schedule in self._schedules:
            upcoming = next(_fires(schedule, now), None) if schedule.enabled else None
            last = self._state.last_fired.get(schedule.name)
            run_id = self._state.run_ids.get(schedule.name)
            rows.append(
                {
                    "name": schedule.name,
                    "enabled": schedule.enabled,
                    "next": upcoming.isoformat() if upcoming else None,
                    "last_tick": last.isoformat() if last else None,
                    "run_id": run_id,
                    "running": bool(run_id and self._is_running(run_id)),
                    "waiting_catch_ups": len(self._state.pending.get(schedule.name, [])),
                }
            )
        return rows

    # ------------------------------------------------------------------------- internals

    def _now(self) -> datetime:
        return _require_aware(self._clock()).astimezone(UTC)

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
            log.info("schedule_armed", schedule=name, next=_iso(next(_fires(schedule, now), None)))
            return []

        recent, total, capped = self._due(schedule, last, now)
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
                    through=_iso(newest),
                )
            if not self._save():
                return []
            if on_time is not None:
                return [await self._fire(schedule, on_time, catch_up=False)]

        queue = state.pending.get(name)
        if not queue:
            return []
        previous = state.run_ids.get(name)
        if previous is not None and self._is_running(previous):
            log.debug("schedule_catch_up_waiting", schedule=name, run_id=previous)
            return []
        tick = queue.pop(0)
        if not self._save():
            return []
        return [await self._fire(schedule, tick, catch_up=True)]

    def _due(
        self, schedule: Schedule, last: datetime, now: datetime
    ) -> tuple[list[datetime], int, bool]:
        """The newest ``catch_up + 1`` ticks in (last, now], how many there are, and whether that
        count is only a lower bound."""
        keep = schedule.catch_up + 1
        recent: deque[datetime] = deque(maxlen=keep)
        total = 0
        for tick in _fires(schedule, last):
            if tick > now:
                return list(recent), total, False
            total += 1
            recent.append(tick)
            if total >= _COUNT_CAP:
                break
        else:
            return list(recent), total, False
        newest: list[datetime] = []
        # Start a second past now so a tick at exactly now is found; later ones are filtered out.
        for tick in _fires(schedule, now + timedelta(seconds=1), backwards=True):
            if tick <= last or len(newest) == keep:
                break
            if tick <= now:
                newest.append(tick)
        return sorted(newest), total, True

    async def _fire(self, schedule: Schedule, tick: datetime, *, catch_up: bool) -> Firing:
        name = schedule.name
        previous = self._state.run_ids.get(name)
        if not catch_up and previous is not None and self._is_running(previous):
            log.warning(
                "schedule_skipped",
                schedule=name,
                tick=_iso(tick),
                reason=SKIP_REASON,
                run_id=previous,
            )
            return Firing(name, tick, "skipped", run_id=previous, reason=SKIP_REASON)
        try:
            run_id = await self._submit(schedule)
        except Exception as exc:
            log.error("schedule_submit_failed", schedule=name, tick=_iso(tick), error=str(exc))
            return Firing(name, tick, "failed", catch_up=catch_up, reason=str(exc))
        if run_id is None:
            log.warning("schedule_not_started", schedule=name, tick=_iso(tick))
            return Firing(name, tick, "not_started", catch_up=catch_up)
        self._state.run_ids[name] = run_id
        self._save()
        log.info("schedule_fired", schedule=name, tick=_iso(tick), run_id=run_id, catch_up=catch_up)
        return Firing(name, tick, "fired", run_id=run_id, catch_up=catch_up)

    def _save(self) -> bool:
        """Persist if anything changed; False when it could not be written (then fire nothing)."""
        if self._path is None:
            return True
        text = self._state.to_json()
        if text == self._written:
            return True
        try:
            self._state.write(self._path)
        except OSError as exc:
            log.error("schedule_state_write_failed", path=str(self._path), error=str(exc))
            return False
        self._written = text
        return True


# ----------------------------------------------------------------------------- helpers


def _require_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a time zone aware datetime is required")
    return moment


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None
