"""One ``[schedules.NAME]`` table: the model that checks it, and the parser that names the file.

A schedule's table is a ``[groups.NAME]`` table (the selection keys sit directly in it) plus when
it fires and how its runs go; run option overrides sit in a nested ``options`` table::

    [schedules.nightly]
    cron = "0 2 * * *"          # minute hour day-of-month month day-of-week, or @daily, @hourly...
    timezone = "Europe/Berlin"  # IANA name; UTC when left out
    tags = ["nightly"]          # connections, names, tags, workspaces, all, groups
    catch_up = 1                # missed ticks run after downtime (the most recent ones); 0 = none
    enabled = true

    [schedules.nightly.options] # over the file's [run] table
    max_concurrency = 50

The model is the only check: :func:`parse_schedules` validates each table through it and lets
:mod:`airbyte_fleet._validation` word what it rejects.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from airbyte_fleet._messages import (
    SELECTS_NOTHING_FIX,
    did_you_mean,
    fold_whitespace,
    spell_out_controls,
)
from airbyte_fleet._validation import (
    Loc,
    Place,
    Where,
    config_error,
    fields_of,
    in_table,
    invalid,
)
from airbyte_fleet.engine.options import RunOptions, Selection

__all__ = ["MAX_CATCH_UP", "Schedule", "parse_schedules"]

MAX_CATCH_UP = 100

# Schedule names end up in log lines, the state file and (soon) URLs: keep them plain, like groups.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
# croniter's H and R draw values from a hash or a random source: R would pick a new minute every
# time the expression is parsed, so the printed fire times would not be the ones that fire.
_HASHED = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")
# The keys a schedule's table may hold, in the order a message lists them.
_KEYS = ("cron", "timezone", "catch_up", "enabled", "options", *Selection.model_fields)
_FIXES = {
    "cron": 'write it as minute hour day-of-month month day-of-week, e.g. cron = "0 2 * * *"',
    "timezone": "use a name like 'Europe/Berlin' or 'UTC'",
}


def _cron(value: Any) -> str:
    """The expression with its whitespace normalised, or ValueError with a short reason."""
    if not isinstance(value, str):
        raise ValueError("it should be a text")
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
        raise ValueError(fold_whitespace(str(exc)) or "croniter cannot read it") from None
    return text


def _timezone(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("it should be a text")
    if not value.strip():
        raise ValueError("it is empty")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"it is not an IANA time zone name{_suggest_zone(value)}") from None
    return value


def _suggest_zone(value: str) -> str:
    # Only on the error path: listing every zone reads the whole tz database.
    zones = available_timezones()
    folded = {zone.lower(): zone for zone in zones}
    if value.lower() in folded:
        return f" (did you mean '{folded[value.lower()]}'?)"
    return did_you_mean(value, zones)


def _run_overrides(value: dict[str, Any]) -> dict[str, Any]:
    # Checked key by key as written, and kept as written: they go over the file's [run] table
    # (and the worker's options) before the whole is read.
    fields_of(RunOptions).model_validate(value)
    return value


Cron = Annotated[str, BeforeValidator(_cron)]
TimeZone = Annotated[str, BeforeValidator(_timezone)]


class Schedule(Selection):
    """One ``[schedules.NAME]`` table, checked: a selection, when it fires and how its runs go."""

    name: str
    cron: Cron
    timezone: TimeZone = "UTC"
    options: Annotated[dict[str, Any], AfterValidator(_run_overrides)] = Field(
        default_factory=dict, description="RunOptions overrides"
    )
    catch_up: StrictInt = Field(default=1, ge=0, le=MAX_CATCH_UP)
    enabled: StrictBool = True
    # pydantic would read all = "yes" as true; in a schedule that is a mistake, as for enabled.
    all: StrictBool = Field(default=False, description="every connection the credentials can see")

    @model_validator(mode="before")
    @classmethod
    def _named_by_its_header(cls, data: Any, info: ValidationInfo) -> Any:
        name = info.context.get("name") if isinstance(info.context, dict) else None
        if name is None or not isinstance(data, Mapping):
            return data
        if "name" in data:
            raise invalid(
                "a schedule is named by its table, so it has no name key",
                fix="remove it (connection name globs go in names)",
            )
        return {**data, "name": name}

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("a schedule name has letters, digits, '-' or '_' only")
        return value

    @model_validator(mode="after")
    def _selects_something(self) -> Schedule:
        if self.empty:
            raise invalid("it selects nothing", fix=SELECTS_NOTHING_FIX)
        return self

    @property
    def selection(self) -> Selection:
        return Selection.model_validate(self.model_dump(include=set(Selection.model_fields)))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


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
    file = spell_out_controls(source)
    schedules = []
    for name, body in raw.items():
        try:
            schedules.append(
                Schedule.model_validate(body, context={"name": name, "groups": groups})
            )
        except ValidationError as exc:
            raise config_error(exc, _where(file, name), body) from None
    return schedules


def _where(file: str, name: str) -> Where:
    table = f"[schedules.{spell_out_controls(name)}]"
    keys = in_table(file, table, Schedule, choices=_KEYS, fixes=_FIXES)
    options = in_table(file, f"{table[:-1]}.options]", RunOptions)

    def where(loc: Loc) -> Place:
        if loc[:1] == ("options",) and len(loc) > 1:
            return options(loc[1:])
        if loc == ("selection",):
            # Not a misspelt key (the nearest is "connections"): a table the schedule cannot have.
            return replace(keys(loc), choices=(), fix=f"put its keys directly in {table}")
        # The name is the table's header, not a key in it.
        return keys(() if loc[:1] == ("name",) else loc)

    return where
