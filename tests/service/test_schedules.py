"""Schedules: parsing with one-line errors, DST-correct fire times, and the scheduler on a fake clock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.resolve import run_options_over
from airbyte_fleet.service.schedules import (
    SKIP_REASON,
    Schedule,
    Scheduler,
    ScheduleState,
    describe_next,
    next_fire_times,
    parse_schedules,
)
from airbyte_fleet.settings_file import load_file_config

pytestmark = pytest.mark.anyio

FILE = "config/fleet.toml"
CONN = "9f0e8d7c-0000-4000-8000-00000000000a"
BERLIN = "Europe/Berlin"


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _schedule(
    cron: str = "0 2 * * *", selection: Selection | None = None, **kwargs: Any
) -> Schedule:
    # The selection keys sit in the schedule itself, as in its [schedules.NAME] table.
    chosen = Selection(tags=["nightly"]) if selection is None else selection
    return Schedule(cron=cron, **({"name": "nightly"} | chosen.model_dump() | kwargs))


def _error(body: Any, *, name: str = "nightly", groups: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_schedules({name: body}, source=FILE, groups=groups)
    message = caught.value.message
    assert "\n" not in message
    assert "validation error" not in message  # no pydantic dump
    assert message.endswith(".")
    assert FILE in message
    return message


# ----------------------------------------------------------------------------- parsing


def test_parses_a_full_table_with_selection_keys_in_it() -> None:
    [schedule] = parse_schedules(
        {
            "nightly": {
                "cron": "0  2 * *   *",
                "timezone": BERLIN,
                "tags": ["nightly"],
                "names": "pg-*,mysql-*",
                "catch_up": 2,
                "enabled": False,
                "options": {"max_concurrency": 50, "timeout": "2h"},
            }
        },
        source=FILE,
    )
    assert schedule.name == "nightly"
    assert schedule.cron == "0 2 * * *"
    assert schedule.timezone == BERLIN
    assert schedule.selection == Selection(tags=["nightly"], names=["pg-*", "mysql-*"])
    assert schedule.catch_up == 2
    assert schedule.enabled is False
    # Kept as written (shown so by `airbyte-fleet schedules`); they sit over the worker's options
    # (the file's [run] table over the defaults), as Worker.options_from lays them.
    assert schedule.options == {"max_concurrency": 50, "timeout": "2h"}
    base = RunOptions(max_concurrency=10, retries=3)
    options = RunOptions.model_validate(run_options_over(base, schedule.options))
    assert options == RunOptions(max_concurrency=50, timeout=7200, retries=3)


def test_defaults_and_aliases() -> None:
    [schedule] = parse_schedules({"hourly": {"cron": "@Hourly", "all": True}}, source=FILE)
    assert (schedule.cron, schedule.timezone, schedule.catch_up, schedule.enabled) == (
        "@hourly",
        "UTC",
        1,
        True,
    )
    assert schedule.options == {}
    assert schedule.selection.all


def test_from_the_real_config_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        "[groups.warehouse]\ntags = ['warehouse']\n\n"
        "[schedules.nightly]\ncron = '0 2 * * *'\ntimezone = 'Europe/Berlin'\n"
        "groups = ['warehouse']\n\n[schedules.nightly.options]\nmax_concurrency = 50\n",
        encoding="utf-8",
    )
    config = load_file_config(path)
    [schedule] = parse_schedules(config.schedules, source=str(config.path), groups=config.groups)
    assert schedule.selection.groups == ["warehouse"]
    assert schedule.options == {"max_concurrency": 50}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"tags": ["x"]}, "Key cron in [schedules.nightly] of config/fleet.toml is missing"),
        ({"cron": "61 2 * * *", "tags": ["x"]}, "Key cron='61 2 * * *' in [schedules.nightly]"),
        (
            {"cron": "0 0 2 * * ?", "tags": ["x"]},
            "it has 6 fields, not 5: seconds are not supported",
        ),
        ({"cron": "0 0 30 2 *", "tags": ["x"]}, "never matches a real date"),
        (
            {"cron": "H 2 * * *", "tags": ["x"]},
            "the hashed H and random R values are not supported",
        ),
        ({"cron": "@reboot", "tags": ["x"]}, "'@reboot' is not one of @hourly"),
        ({"cron": 2, "tags": ["x"]}, "Key cron=2 in [schedules.nightly]"),
        ({"cron": "   ", "tags": ["x"]}, "is invalid (it is empty)"),
        (
            {"cron": "0 2 * * *", "timezone": "Europe/Berln", "tags": ["x"]},
            "timezone='Europe/Berln' in [schedules.nightly] of config/fleet.toml is invalid (it "
            "is not an IANA time zone name (did you mean 'Europe/Berlin'?))",
        ),
        (
            {"cron": "0 2 * * *", "timezone": "europe/berlin", "tags": ["x"]},
            "(did you mean 'Europe/Berlin'?)",
        ),
        ({"cron": "0 2 * * *", "timezone": "", "tags": ["x"]}, "Key timezone='' in"),
        ({"cron": "0 2 * * *", "catch_up": -1, "tags": ["x"]}, "Key catch_up=-1 in"),
        ({"cron": "0 2 * * *", "catch_up": True, "tags": ["x"]}, "Key catch_up=True in"),
        ({"cron": "0 2 * * *", "enabled": "yes", "tags": ["x"]}, "Key enabled='yes' in"),
        (
            {"crn": "0 2 * * *", "tags": ["x"]},
            "Unknown key 'crn' in [schedules.nightly] of config/fleet.toml (did you mean 'cron'?)",
        ),
        (
            {"cron": "0 2 * * *", "group": "warehouse"},
            "Unknown key 'group' in [schedules.nightly] of config/fleet.toml (did you mean "
            "'groups'?)",
        ),
        (
            {"cron": "0 2 * * *", "selection": {"tags": ["x"]}},
            "Unknown key 'selection' in [schedules.nightly] of config/fleet.toml; put its keys "
            "directly in [schedules.nightly].",
        ),
        (
            {"cron": "0 2 * * *", "tags": ["x"], "options": {"max_concurency": 5}},
            "Unknown key 'max_concurency' in [schedules.nightly.options] of "
            "config/fleet.toml (did you mean 'max_concurrency'?)",
        ),
        (
            {"cron": "0 2 * * *", "tags": ["x"], "options": {"max_concurrency": 0}},
            "Key max_concurrency=0 in [schedules.nightly.options] of config/fleet.toml is invalid",
        ),
        (
            {"cron": "0 2 * * *", "tags": ["x"], "options": {"max_concurrency": True}},
            "expected a number, not true",
        ),
        (
            {"cron": "0 2 * * *", "tags": ["x"], "options": 5},
            "Key options=5 in [schedules.nightly] of config/fleet.toml is invalid",
        ),
        (
            {"cron": "0 2 * * *"},
            "Table [schedules.nightly] in config/fleet.toml is invalid (it selects nothing)",
        ),
        ({"cron": "0 2 * * *", "all": "yes"}, "Key all='yes' in [schedules.nightly]"),
        (
            {"cron": "0 2 * * *", "name": "x", "all": True},
            "is invalid (a schedule is named by its table, so it has no name key)",
        ),
        ({"cron": "0 2 * * *", "tags": [1]}, "Key tags[0]=1 in [schedules.nightly]"),
        (
            {"cron": "0 2 * * *", "connections": ["nope"]},
            "Key connections=['nope'] in [schedules.nightly] of config/fleet.toml is invalid "
            "('nope' is not a UUID)",
        ),
        ("0 2 * * *", "Table [schedules.nightly] in config/fleet.toml is invalid"),
    ],
)
def test_bad_tables_are_one_sentence_naming_file_schedule_and_key(body: Any, expected: str) -> None:
    message = _error(body)
    assert expected in message
    assert "schedules.nightly" in message


def test_unknown_group_and_bad_name() -> None:
    body = {"cron": "0 2 * * *", "groups": ["warehous"]}
    message = _error(body, groups=["warehouse"])
    assert "names unknown group 'warehous' (did you mean 'warehouse'?)" in message
    # Without the file's groups to check against, the name is taken as written.
    assert parse_schedules({"nightly": body}, source=FILE)[0].selection.groups == ["warehous"]
    assert "Table [schedules.a b] in config/fleet.toml is invalid (a schedule name has" in _error(
        {"cron": "0 2 * * *", "all": True}, name="a b"
    )


def test_the_model_checks_itself_too() -> None:
    # Built in Python code, it says what is wrong in one sentence (ConfigError), like Selection.
    with pytest.raises(ConfigError, match="out of range"):
        _schedule("0 25 * * *")
    with pytest.raises(ConfigError, match="not an IANA time zone"):
        _schedule(timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match="selects nothing"):
        _schedule(selection=Selection())
    with pytest.raises(ConfigError, match=r"Unknown key 'options\.nope' given to Schedule"):
        _schedule(options={"nope": 1})


# ----------------------------------------------------------------------------- fire times


def test_berlin_march_change_keeps_local_time_and_fires_the_skipped_hour_after_it() -> None:
    daily = _schedule("0 2 * * *", timezone=BERLIN)
    times = next_fire_times(daily, _utc(2026, 3, 27, 12), 4)
    assert [t.isoformat() for t in times] == [
        "2026-03-28T02:00:00+01:00",
        # 02:00 does not exist on 29 March: the first minute after the change.
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:00:00+02:00",
        "2026-03-31T02:00:00+02:00",
    ]
    assert [t.astimezone(UTC).hour for t in times] == [1, 1, 0, 0]
    assert all(str(t.tzinfo) == BERLIN for t in times)


def test_berlin_october_change_fires_a_fixed_time_once_and_every_half_hour_in_both_passes() -> None:
    daily = _schedule("30 2 * * *", timezone=BERLIN)
    times = next_fire_times(daily, _utc(2026, 10, 24, 12), 2)
    assert [t.astimezone(UTC).isoformat() for t in times] == [
        "2026-10-25T00:30:00+00:00",  # 02:30 CEST; 02:30 CET an hour later does not fire again
        "2026-10-26T01:30:00+00:00",
    ]
    half_hourly = _schedule("*/30 * * * *", timezone=BERLIN)
    times = next_fire_times(half_hourly, _utc(2026, 10, 24, 23, 45), 5)
    assert [t.astimezone(UTC).strftime("%H:%M") for t in times] == [
        "00:00",
        "00:30",
        "01:00",
        "01:30",
        "02:00",
    ]
    assert [t.strftime("%H:%M %Z") for t in times] == [
        "02:00 CEST",
        "02:30 CEST",
        "02:00 CET",
        "02:30 CET",
        "03:00 CET",
    ]


def test_next_fire_times_are_strictly_after_and_need_an_aware_time() -> None:
    daily = _schedule("0 2 * * *")
    assert next_fire_times(daily, _utc(2026, 1, 1, 2), 1) == [_utc(2026, 1, 2, 2)]
    assert next_fire_times(daily, _utc(2026, 1, 1, 2), 0) == []
    with pytest.raises(ValueError, match="aware"):
        next_fire_times(daily, datetime(2026, 1, 1), 1)


def test_describe_next_gives_local_and_utc_columns() -> None:
    rows = describe_next(
        [
            _schedule("0 2 * * *", timezone=BERLIN, selection=Selection(tags=["a", "b"])),
            _schedule(
                "@hourly",
                name="off",
                enabled=False,
                selection=Selection(connections=[CONN], groups=["wh"]),
            ),
        ],
        _utc(2026, 3, 28, 12),
        count=2,
    )
    assert rows[0] == {
        "name": "nightly",
        "enabled": True,
        "cron": "0 2 * * *",
        "timezone": BERLIN,
        "next": ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"],
        "next_local": ["2026-03-29 03:00 CEST", "2026-03-30 02:00 CEST"],
        "next_utc": ["2026-03-29 01:00 UTC", "2026-03-30 00:00 UTC"],
        "selection": "tags=a,b",
        "catch_up": 1,
        "options": {},
    }
    assert rows[1]["next"] == rows[1]["next_local"] == rows[1]["next_utc"] == []
    assert rows[1]["selection"] == "groups=wh; 1 connection(s)"
    json.dumps(rows)  # ready for --json as it is


# ----------------------------------------------------------------------------- the scheduler


class World:
    """The service as the scheduler sees it: a clock, runs that start and end on command."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.submitted: list[tuple[str, datetime]] = []
        self.running: set[str] = set()
        self.sleeps: list[float] = []
        self.on_submit: Any = None

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)

    async def submit(self, schedule: Schedule, tick: datetime) -> str | None:
        if self.on_submit is not None:
            self.on_submit(schedule)
        run_id = f"run-{len(self.submitted) + 1}"
        self.submitted.append((schedule.name, self.now))
        self.running.add(run_id)
        return run_id

    def is_live(self, run_id: str) -> bool:
        return run_id in self.running

    def finish_all(self) -> None:
        self.running.clear()

    def scheduler(self, *schedules: Schedule, **kwargs: Any) -> Scheduler:
        callbacks: dict[str, Any] = {
            "submit": self.submit,
            "is_live": self.is_live,
            "clock": self.clock,
            "sleep": self.sleep,
        }
        return Scheduler(schedules or [_schedule()], **(callbacks | kwargs))


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with capture_logs() as captured:
        yield captured


def _events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


async def test_fires_on_time_and_only_once_per_tick() -> None:
    world = World(_utc(2026, 1, 1, 1))
    scheduler = world.scheduler()
    assert await scheduler.tick(world.now) == []  # first sight: armed, nothing replayed
    assert await scheduler.tick(_utc(2026, 1, 1, 1, 59, 59)) == []
    [firing] = await scheduler.tick(_utc(2026, 1, 1, 2, 0, 0))
    assert (firing.action, firing.tick, firing.run_id, firing.catch_up) == (
        "fired",
        _utc(2026, 1, 1, 2),
        "run-1",
        False,
    )
    world.finish_all()
    assert await scheduler.tick(_utc(2026, 1, 1, 2, 0, 30)) == []
    assert await scheduler.tick(_utc(2026, 1, 1, 23)) == []
    [firing] = await scheduler.tick(_utc(2026, 1, 2, 2, 0, 5))
    assert firing.tick == _utc(2026, 1, 2, 2)
    assert scheduler.state().last_fired == {"nightly": _utc(2026, 1, 2, 2)}
    assert scheduler.state().run_ids == {"nightly": "run-2"}


async def test_run_sleeps_until_each_tick_without_real_time() -> None:
    world = World(_utc(2026, 10, 23, 12))

    async def sleep(seconds: float) -> None:
        world.finish_all()  # every run ends before the next tick
        await world.sleep(seconds)
        if world.now >= _utc(2026, 10, 27):
            raise _Stop

    schedule = _schedule("30 2 * * *", timezone=BERLIN)
    scheduler = world.scheduler(schedule, sleep=sleep, max_sleep=3600)
    with pytest.raises(_Stop):
        await scheduler.run()
    # Across the October change: the fixed 02:30 fires once a day, on the tick itself.
    assert [at.isoformat() for _, at in world.submitted] == [
        "2026-10-24T00:30:00+00:00",
        "2026-10-25T00:30:00+00:00",
        "2026-10-26T01:30:00+00:00",
    ]
    assert max(world.sleeps) <= 3600


class _Stop(Exception):
    pass


async def test_does_not_overlap_itself(logs: list[MutableMapping[str, Any]]) -> None:
    world = World(_utc(2026, 1, 1))
    scheduler = world.scheduler(_schedule("0 * * * *"))
    await scheduler.tick(world.now)
    [first] = await scheduler.tick(_utc(2026, 1, 1, 1))
    assert first.action == "fired"
    # The run from 01:00 is still going at 02:00: skip, and say so.
    [second] = await scheduler.tick(_utc(2026, 1, 1, 2))
    assert (second.action, second.reason, second.run_id) == ("skipped", SKIP_REASON, "run-1")
    assert len(world.submitted) == 1
    [skipped] = _events(logs, "schedule_skipped")
    assert skipped["reason"] == "previous run still going"
    assert skipped["schedule"] == "nightly"
    assert skipped["tick"] == "2026-01-01T02:00:00+00:00"
    assert skipped["log_level"] == "warning"
    # The skipped tick is not retried once the run ends; the next one fires.
    world.finish_all()
    assert await scheduler.tick(_utc(2026, 1, 1, 2, 10)) == []
    [third] = await scheduler.tick(_utc(2026, 1, 1, 3))
    assert (third.action, third.run_id) == ("fired", "run-2")


async def test_three_days_down_with_catch_up_1_fires_exactly_once(
    logs: list[MutableMapping[str, Any]],
) -> None:
    world = World(_utc(2026, 1, 4, 10))
    state = ScheduleState(last_fired={"nightly": _utc(2026, 1, 1, 2)}, run_ids={"nightly": "old"})
    scheduler = world.scheduler(_schedule("0 2 * * *", catch_up=1), state=state)
    [firing] = await scheduler.tick(world.now)
    assert (firing.action, firing.tick, firing.catch_up) == ("fired", _utc(2026, 1, 4, 2), True)
    [dropped] = _events(logs, "schedule_ticks_dropped")
    assert (dropped["dropped"], dropped["at_least"], dropped["catch_up"]) == (2, False, 1)
    for minute in range(1, 120):
        assert await scheduler.tick(world.now + timedelta(minutes=minute)) == []
    assert len(world.submitted) == 1
    world.finish_all()
    [next_day] = await scheduler.tick(_utc(2026, 1, 5, 2))
    assert (next_day.tick, next_day.catch_up) == (_utc(2026, 1, 5, 2), False)


async def test_catch_up_0_drops_every_missed_tick(logs: list[MutableMapping[str, Any]]) -> None:
    world = World(_utc(2026, 1, 4, 10))
    state = ScheduleState(last_fired={"nightly": _utc(2026, 1, 1, 2)})
    scheduler = world.scheduler(_schedule(catch_up=0), state=state)
    assert await scheduler.tick(world.now) == []
    assert _events(logs, "schedule_ticks_dropped")[0]["dropped"] == 3
    assert scheduler.state().last_fired["nightly"] == _utc(2026, 1, 4, 2)


async def test_catch_ups_wait_for_the_previous_run_and_run_one_after_another() -> None:
    world = World(_utc(2026, 1, 4, 10))
    state = ScheduleState(last_fired={"nightly": _utc(2026, 1, 1, 2)}, run_ids={"nightly": "old"})
    world.running.add("old")  # still going from before the restart
    scheduler = world.scheduler(_schedule(catch_up=2), state=state)
    assert await scheduler.tick(world.now) == []
    assert scheduler.state().pending["nightly"] == [_utc(2026, 1, 3, 2), _utc(2026, 1, 4, 2)]
    assert scheduler.next_wake(world.now) == world.now + timedelta(seconds=5)
    world.finish_all()
    [first] = await scheduler.tick(_utc(2026, 1, 4, 10, 1))
    assert (first.tick, first.catch_up) == (_utc(2026, 1, 3, 2), True)
    assert await scheduler.tick(_utc(2026, 1, 4, 10, 2)) == []  # first catch-up still going
    world.finish_all()
    [second] = await scheduler.tick(_utc(2026, 1, 4, 10, 3))
    assert second.tick == _utc(2026, 1, 4, 2)
    assert scheduler.state().pending["nightly"] == []


async def test_an_on_time_tick_supersedes_waiting_catch_ups() -> None:
    world = World(_utc(2026, 1, 1, 5))
    state = ScheduleState(last_fired={"nightly": _utc(2026, 1, 1, 1)}, run_ids={"nightly": "old"})
    world.running.add("old")
    scheduler = world.scheduler(_schedule("0 * * * *", catch_up=3), state=state)
    await scheduler.tick(world.now + timedelta(minutes=2))
    assert len(scheduler.state().pending["nightly"]) == 3
    world.finish_all()
    [firing] = await scheduler.tick(_utc(2026, 1, 1, 6))
    assert (firing.tick, firing.catch_up) == (_utc(2026, 1, 1, 6), False)
    assert scheduler.state().pending["nightly"] == []


async def test_persisted_state_prevents_a_double_fire_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / ScheduleState.FILE_NAME
    world = World(_utc(2026, 1, 1, 1))

    def recorded_before_submit(schedule: Schedule) -> None:
        # The tick is on disk before the run starts: a crash now cannot lead to a second fire.
        assert ScheduleState.read(path).last_fired[schedule.name] == _utc(2026, 1, 1, 2)

    world.on_submit = recorded_before_submit
    first = world.scheduler(state_path=path)
    await first.tick(world.now)
    [fired] = await first.tick(_utc(2026, 1, 1, 2, 0, 1))
    assert fired.action == "fired"

    # Restart a few seconds later, in the same minute: the tick is not fired again, and the run
    # it started still blocks an overlap.
    second = world.scheduler(state_path=path)
    assert second.state().run_ids == {"nightly": "run-1"}
    assert await second.tick(_utc(2026, 1, 1, 2, 0, 20)) == []
    [skipped] = await second.tick(_utc(2026, 1, 2, 2))
    assert skipped.action == "skipped"
    assert len(world.submitted) == 1
    assert [p.name for p in path.parent.iterdir()] == [ScheduleState.FILE_NAME]


def test_state_round_trips_and_a_broken_file_starts_empty(
    tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    path = tmp_path / "schedules.json"
    assert ScheduleState.read(path) == ScheduleState()
    state = ScheduleState(
        last_fired={"a": _utc(2026, 1, 1, 2)},
        run_ids={"a": "r1"},
        pending={"a": [_utc(2025, 12, 31, 2)]},
    )
    state.write(path)
    assert ScheduleState.read(path) == state
    assert json.loads(path.read_text())["schedules"]["a"]["last_tick"] == "2026-01-01T02:00:00Z"
    path.write_text("{not json", encoding="utf-8")
    assert ScheduleState.read(path) == ScheduleState()
    assert _events(logs, "schedule_state_unreadable")


async def test_disabled_and_removed_schedules_never_fire_and_start_afresh() -> None:
    world = World(_utc(2026, 1, 5))
    state = ScheduleState(
        last_fired={"nightly": _utc(2026, 1, 1, 2), "gone": _utc(2026, 1, 1, 2)},
        run_ids={"gone": "r"},
    )
    scheduler = world.scheduler(_schedule(enabled=False), state=state)
    assert scheduler.state() == ScheduleState()
    assert await scheduler.tick(_utc(2026, 1, 5, 2)) == []
    assert scheduler.next_wake(world.now) is None
    assert world.submitted == []


async def test_declined_or_failing_submits_are_logged_and_the_loop_goes_on(
    logs: list[MutableMapping[str, Any]],
) -> None:
    world = World(_utc(2026, 1, 1, 1))
    answers: list[Any] = [None, RuntimeError("service is shutting down")]

    async def submit(schedule: Schedule, tick: datetime) -> str | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer) if answer is not None else None

    scheduler = world.scheduler(_schedule("0 * * * *"), submit=submit)
    await scheduler.tick(world.now)
    [declined] = await scheduler.tick(_utc(2026, 1, 1, 2))
    [failed] = await scheduler.tick(_utc(2026, 1, 1, 3))
    assert (declined.action, failed.action) == ("not_started", "failed")
    assert failed.reason == "service is shutting down"
    assert _events(logs, "schedule_not_started")
    assert _events(logs, "schedule_submit_failed")[0]["error"] == "service is shutting down"


async def test_a_long_outage_of_a_minutely_schedule_stays_cheap(
    logs: list[MutableMapping[str, Any]],
) -> None:
    world = World(_utc(2026, 1, 11, 12, 0, 30))
    state = ScheduleState(last_fired={"nightly": _utc(2026, 1, 1)})
    scheduler = world.scheduler(_schedule("* * * * *", catch_up=1), state=state)
    began = time.perf_counter()
    firings = await scheduler.tick(world.now)
    assert time.perf_counter() - began < 5
    # 12:00 is 30 s old: on time. Everything before it is dropped, and the count is a floor.
    assert [(f.tick, f.catch_up) for f in firings] == [(_utc(2026, 1, 11, 12), False)]
    [dropped] = _events(logs, "schedule_ticks_dropped")
    assert dropped["at_least"] is True
    assert dropped["dropped"] >= 1999


async def test_a_naive_clock_is_refused() -> None:
    world = World(_utc(2026, 1, 1))
    scheduler = world.scheduler()
    with pytest.raises(ValueError, match="aware"):
        await scheduler.tick(datetime(2026, 1, 1))


async def test_status_reports_next_and_last() -> None:
    world = World(_utc(2026, 1, 1, 1))
    scheduler = world.scheduler()
    await scheduler.tick(world.now)
    await scheduler.tick(_utc(2026, 1, 1, 2))
    assert scheduler.status(_utc(2026, 1, 1, 3)) == [
        {
            "name": "nightly",
            "enabled": True,
            "next": "2026-01-02T02:00:00+00:00",
            "last_tick": "2026-01-01T02:00:00+00:00",
            "run_id": "run-1",
            "running": True,
            "waiting_catch_ups": 0,
        }
    ]


async def test_each_run_is_tracked_with_its_schedule_and_so_is_one_resumed() -> None:
    world = World(_utc(2026, 1, 1, 1))
    tracked: list[tuple[str, str]] = []
    hourly = _schedule("0 * * * *", name="hourly")
    scheduler = world.scheduler(_schedule(), hourly, track=lambda *pair: tracked.append(pair))
    await scheduler.tick(world.now)
    await scheduler.tick(_utc(2026, 1, 1, 2))
    assert tracked == [("nightly", "run-1"), ("hourly", "run-2")]
    world.running.discard("run-1")  # nightly's run ended; hourly's is still going

    # After a restart, the remembered run still going is tracked again before anything fires.
    tracked.clear()

    async def stop(seconds: float) -> None:
        raise _Stop

    restarted = world.scheduler(
        _schedule(),
        hourly,
        state=scheduler.state(),
        track=lambda *pair: tracked.append(pair),
        sleep=stop,
    )
    with pytest.raises(_Stop):
        await restarted.run()
    assert tracked == [("hourly", "run-2")]
    assert len(world.submitted) == 2
