"""The worker's queue, cancel requests, schedule fires and state, in one shared database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from airbyte_fleet.coordination import QueuedRun

from .support import World

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _run(n: int, *, by: str | None = None, seconds: float | None = None) -> QueuedRun:
    at = T0 + timedelta(seconds=n if seconds is None else seconds)
    return QueuedRun(f"run-{n:02d}", at, f'{{"n": {n}}}', submitted_by=by)


def test_runs_are_taken_oldest_first_and_leased_to_the_taker(world: World) -> None:
    a, b = world.open(), world.open()
    for n in (3, 1, 2):
        a.submit(_run(n, by="nightly" if n == 2 else None))
    a.submit(QueuedRun("run-00", T0 + timedelta(seconds=2), "{}"))  # same time as run-02: by id
    taken = a.take_next()
    assert taken is not None
    assert (taken.run_id, taken.entry, taken.submitted_at) == (
        "run-01",
        '{"n": 1}',
        T0 + timedelta(seconds=1),
    )
    assert taken.holder is not None
    assert taken.holder.owner == a.owner
    assert b.holder("run-01") == taken.holder
    second = b.take_next()
    assert second is not None
    assert second.run_id == "run-00"
    third = b.take_next(exclude={"run-02"})
    assert third is not None
    assert third.run_id == "run-03"
    assert a.take_next(exclude=["run-02"]) is None
    last = a.take_next()
    assert last is not None
    assert (last.run_id, last.submitted_by) == ("run-02", "nightly")
    assert a.take_next() is None


def test_a_run_whose_holder_died_is_taken_again_once_its_lease_expires(world: World) -> None:
    a, b = world.open(), world.open()
    a.submit(_run(1))
    assert a.take_next() is not None
    assert b.take_next() is None
    world.advance(31)
    again = b.take_next()
    assert again is not None
    assert again.run_id == "run-01"
    assert a.renew(["run-01"]).lost == {"run-01"}


def test_queued_lists_every_unfinished_run_with_its_live_holder(world: World) -> None:
    a = world.open()
    for n in (1, 2):
        a.submit(_run(n))
    a.submit(_run(1))  # accepted already: unchanged
    a.acquire("run-02")
    runs = a.queued()
    assert [r.run_id for r in runs] == ["run-01", "run-02"]
    assert runs[0].holder is None
    assert runs[1].holder is not None
    assert runs[1].holder.owner == a.owner
    assert runs[1].submitted_at == T0 + timedelta(seconds=2)
    world.advance(31)
    assert [r.holder for r in a.queued()] == [None, None]


def test_finish_forgets_the_run_its_lease_and_its_claims(world: World) -> None:
    a = world.open()
    a.submit(_run(1))
    a.submit(_run(2))
    a.take_next()
    a.follow_connection("run-01", "conn-1", 7)
    a.finish("run-01")
    assert [r.run_id for r in a.queued()] == ["run-02"]
    assert a.holder("run-01") is None
    assert world.sql("SELECT run_id FROM connection_claims") == []


def test_a_cancel_request_reaches_the_holder_through_renew(world: World) -> None:
    a, b = world.open(), world.open()
    a.submit(_run(1))
    a.submit(_run(2))
    a.take_next()
    a.take_next()
    assert b.request_cancel("run-02") is True
    assert b.request_cancel("run-99") is False
    renewal = a.renew(["run-01", "run-02"])
    assert renewal.cancel_requested == {"run-02"}
    assert renewal.lost == frozenset()
    assert [r.cancel_requested for r in b.queued()] == [False, True]
    a.finish("run-02")
    assert b.request_cancel("run-02") is False


def test_a_tick_fires_once_and_later_callers_learn_which_run_fired_it(world: World) -> None:
    a, b = world.open(), world.open()
    tick = T0 + timedelta(hours=1)
    assert a.fire_once("nightly", tick, _run(1, by="nightly")) == "run-01"
    assert b.fire_once("nightly", tick, _run(2, by="nightly")) == "run-01"
    assert b.fire_once("hourly", tick, _run(3, by="hourly")) == "run-03"
    assert b.fire_once("nightly", tick + timedelta(days=1), _run(4)) == "run-04"
    assert [(r.run_id, r.submitted_by) for r in a.queued()] == [
        ("run-01", "nightly"),
        ("run-03", "hourly"),
        ("run-04", None),
    ]


def test_schedule_state_is_saved_and_replaced(world: World) -> None:
    a, b = world.open(), world.open()
    assert a.schedule_states() == {}
    a.save_schedule_state("nightly", '{"last": 1}')
    a.save_schedule_state("hourly", '{"last": 2}')
    b.save_schedule_state("nightly", '{"last": 3}')
    assert a.schedule_states() == {"nightly": '{"last": 3}', "hourly": '{"last": 2}'}


@pytest.mark.parametrize("naive", [False, True])
def test_ticks_without_a_zone_are_utc(world: World, naive: bool) -> None:
    a = world.open()
    tick = datetime(2030, 1, 1, 12, 0)
    aware = tick.replace(tzinfo=UTC)
    a.fire_once("s", aware, _run(1))
    assert a.fire_once("s", tick if naive else aware, _run(2)) == "run-01"
