"""Leases: one holder at a time, renewed while it runs, taken over once expired."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from airbyte_fleet.coordination import LeaseHeldError, new_owner

from .support import World


def test_a_free_lease_is_taken_and_a_held_one_is_refused(world: World) -> None:
    a, b = world.open(owner="host:1:aaaaaa"), world.open(owner="host:2:bbbbbb")
    lease = a.acquire("run-1")
    assert (lease.run_id, lease.owner) == ("run-1", "host:1:aaaaaa")
    assert a.holder("run-1") == lease
    with pytest.raises(LeaseHeldError) as caught:
        b.acquire("run-1")
    assert caught.value.holder == lease
    assert "run run-1 is held by process host:1:aaaaaa until" in caught.value.message
    # Ours already: taken again (extended), same holder.
    again = a.acquire("run-1")
    assert again.owner == a.owner
    assert again.until >= lease.until
    assert b.holder("run-2") is None


def test_an_expired_lease_is_taken_over_and_its_old_holder_loses_it(world: World) -> None:
    a, b = world.open(lease_seconds=30), world.open(lease_seconds=30)
    a.acquire("run-1")
    world.advance(29)
    with pytest.raises(LeaseHeldError):
        b.acquire("run-1")
    world.advance(2)
    assert a.holder("run-1") is None
    taken = b.acquire("run-1")
    assert taken.owner == b.owner
    renewal = a.renew(["run-1"])
    assert renewal.lost == {"run-1"}
    assert b.holder("run-1") == taken


def test_renew_extends_ours_and_reports_the_rest_lost(world: World) -> None:
    a, b = world.open(), world.open()
    a.acquire("mine")
    b.acquire("theirs")
    world.advance(20)
    renewal = a.renew(["mine", "theirs", "nobodys"])
    assert renewal.lost == {"theirs", "nobodys"}
    assert renewal.cancel_requested == frozenset()
    world.advance(20)  # 40 s after taking it: alive only because it was renewed
    holder = b.holder("mine")
    assert holder is not None
    assert holder.owner == a.owner
    assert b.holder("theirs") is None
    assert a.renew([]).lost == frozenset()


def test_an_expired_lease_nobody_took_is_still_renewed(world: World) -> None:
    a = world.open()
    a.acquire("run-1")
    world.advance(31)
    assert a.renew(["run-1"]).lost == frozenset()
    assert a.holder("run-1") is not None


def test_release_lets_another_process_take_the_run_at_once(world: World) -> None:
    a, b = world.open(), world.open()
    a.acquire("run-1")
    a.acquire("run-2")
    b.release(["run-1"])  # not b's: nothing happens
    assert a.holder("run-1") is not None
    a.release(["run-1"])
    assert b.acquire("run-1").owner == b.owner
    assert a.holder("run-2") is not None


def test_owner_ids_differ_per_process_instance() -> None:
    first, second = new_owner(), new_owner()
    assert first != second
    _, pid, tail = first.split(":")
    assert pid.isdigit()
    assert len(tail) == 6


def test_postgres_leases_follow_the_database_clock(pg_url: str, tmp_path: Path) -> None:
    real_world = World("postgres", tmp_path, pg_url)
    a, b = real_world.open(lease_seconds=0.5), real_world.open(lease_seconds=0.5)
    lease = a.acquire("run-1")
    now = real_world.sql("SELECT now()")[0][0]
    assert 0.3 < (lease.until - now).total_seconds() <= 0.5  # type: ignore[operator]
    with pytest.raises(LeaseHeldError):
        b.acquire("run-1")
    time.sleep(0.6)
    assert b.acquire("run-1").owner == b.owner
    real_world.close()
