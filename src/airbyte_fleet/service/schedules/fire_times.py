"""When a schedule fires: croniter in the schedule's own zone, made right across DST changes.

* A time skipped by a spring-forward change fires at the first minute after it.
* On the day a wall-clock hour repeats, a fixed-hour schedule fires once; a schedule running every
  hour (``*`` hour) fires in both passes.
* After downtime, :func:`due_ticks` finds the missed ticks that catch-up may still run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from croniter import CroniterBadDateError, croniter

from airbyte_fleet.engine.options import Selection
from airbyte_fleet.service.schedules.spec import Schedule

__all__ = [
    "describe_next",
    "due_ticks",
    "fire_times",
    "iso",
    "next_fire_times",
    "require_aware",
    "summarize_selection",
]

# A long outage of a minutely schedule has too many missed ticks to walk one by one on the event
# loop; past this many the newest ones are found from the other end and the count is a lower bound.
_COUNT_CAP = 2_000


def fire_times(
    schedule: Schedule, start: datetime, *, backwards: bool = False
) -> Iterator[datetime]:
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


def due_ticks(
    schedule: Schedule, last: datetime, now: datetime
) -> tuple[list[datetime], int, bool]:
    """The newest ``catch_up + 1`` ticks in (*last*, *now*], how many there are, and whether that
    count is only a lower bound."""
    keep = schedule.catch_up + 1
    recent: deque[datetime] = deque(maxlen=keep)
    total = 0
    for tick in fire_times(schedule, last):
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
    for tick in fire_times(schedule, now + timedelta(seconds=1), backwards=True):
        if tick <= last or len(newest) == keep:
            break
        if tick <= now:
            newest.append(tick)
    return sorted(newest), total, True


def next_fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next *count* fire times strictly after *after*, aware, in the schedule's zone.

    Compare them with ``.astimezone(UTC)``: Python ignores ``fold`` when comparing two datetimes of
    the same zone, so the two 02:30 of a fall-back night would compare equal.
    """
    require_aware(after)
    zone = schedule.zone
    return [t.astimezone(zone) for t in islice(fire_times(schedule, after), max(count, 0))]


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
    if selection.with_upstream and selection.groups:
        parts.append("with upstream")
    return "; ".join(parts) or "nothing"


def describe_next(
    schedules: Iterable[Schedule], now: datetime, count: int = 3
) -> list[dict[str, Any]]:
    """One row per schedule for ``airbyte-fleet schedules`` (table or JSON).

    ``next_local``/``next_utc`` are display texts; ``next`` holds the same times as ISO 8601 with
    their offset. A disabled schedule has no next times.
    """
    require_aware(now)
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


def require_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a time zone aware datetime is required")
    return moment


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None
