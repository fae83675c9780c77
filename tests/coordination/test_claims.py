"""StoreClaims: the worker's claim rules, kept in the database for runs of any process."""

from __future__ import annotations

import anyio
import pytest

from airbyte_fleet.coordination import Coordinator, StoreClaims
from airbyte_fleet.engine.hooks import Adopt, Claim, ClaimError, Trigger

from .support import World

pytestmark = pytest.mark.anyio

NONE: frozenset[int] = frozenset()


def _claims(world: World, *runs: str) -> tuple[Coordinator, StoreClaims]:
    coordinator = world.open()
    for run_id in runs:
        coordinator.acquire(run_id)
    return coordinator, StoreClaims(coordinator, poll_interval=0.01)


async def test_the_first_run_triggers_and_the_next_waits_then_adopts(world: World) -> None:
    _, claims = _claims(world, "a", "b")
    assert await claims.claim("a", "c1", seen=NONE) == Trigger()
    answers: list[Claim] = []

    async def b_claims() -> None:
        answers.append(await claims.claim("b", "c1", seen=NONE))

    async with anyio.create_task_group() as group:
        group.start_soon(b_claims)
        await anyio.sleep(0.1)
        assert answers == []  # a's trigger is out: b waits for its answer
        await claims.following("a", "c1", 41)
    assert answers == [Adopt(41, "run a")]
    # Another connection is free.
    assert await claims.claim("b", "c2", seen=NONE) == Trigger()


async def test_a_job_the_run_has_seen_is_not_handed_back_it_waits_for_release(
    world: World,
) -> None:
    _, claims = _claims(world, "a", "b")
    await claims.claim("a", "c1", seen=NONE)
    await claims.following("a", "c1", 41)
    await claims.following("b", "c1", 41)
    await claims.released("b", "c1")  # b's attempt failed; it retries
    answers: list[Claim] = []

    async def b_claims() -> None:
        answers.append(await claims.claim("b", "c1", seen=frozenset({41})))

    async with anyio.create_task_group() as group:
        group.start_soon(b_claims)
        await anyio.sleep(0.1)
        assert answers == []
        await claims.released("a", "c1")
    assert answers == [Trigger()]


async def test_a_run_claims_again_what_it_holds_itself(world: World) -> None:
    _, claims = _claims(world, "a")
    assert await claims.claim("a", "c1", seen=NONE) == Trigger()
    assert await claims.claim("a", "c1", seen=NONE) == Trigger()
    await claims.following("a", "c1", 41)
    await claims.released("a", "c1")
    assert await claims.claim("a", "c1", seen=frozenset({41})) == Trigger()


async def test_the_newest_job_followed_is_the_one_adopted(world: World) -> None:
    _, claims = _claims(world, "a", "b", "c")
    await claims.following("a", "c1", 41)
    await claims.following("b", "c1", 42)
    assert await claims.claim("c", "c1", seen=NONE) == Adopt(42, "run b")


async def test_a_job_another_run_follows_is_not_cancelled(world: World) -> None:
    _, claims = _claims(world, "a", "b")
    await claims.following("a", "c1", 41)
    assert await claims.may_cancel("a", "c1", 41) is None
    await claims.following("b", "c1", 41)
    assert await claims.may_cancel("a", "c1", 41) == "run b also follows it"
    assert await claims.may_cancel("a", "c1", 40) is None
    await claims.run_ended("b")
    assert await claims.may_cancel("a", "c1", 41) is None


async def test_run_ended_lets_go_of_every_connection(world: World) -> None:
    _, claims = _claims(world, "a", "b")
    await claims.claim("a", "c1", seen=NONE)
    await claims.following("a", "c2", 7)
    await claims.run_ended("a")
    assert await claims.claim("b", "c1", seen=NONE) == Trigger()
    assert await claims.claim("b", "c2", seen=NONE) == Trigger()


async def test_claims_of_a_run_whose_lease_ran_out_are_ignored_and_deleted(
    world: World,
) -> None:
    dead = world.open()
    dead.acquire("a")
    dead_claims = StoreClaims(dead, poll_interval=0.01)
    await dead_claims.claim("a", "c1", seen=NONE)  # then its process died mid-trigger
    await dead_claims.following("a", "c2", 7)
    world.advance(31)
    _, claims = _claims(world, "b")
    with anyio.fail_after(2):
        assert await claims.claim("b", "c1", seen=NONE) == Trigger()
    assert await claims.claim("b", "c2", seen=NONE) == Trigger()
    assert world.sql("SELECT run_id FROM connection_claims ORDER BY connection_id") == [
        ("b",),
        ("b",),
    ]
    # Nor may the dead holder's run claim anything now: its lease is not its own any more.
    with pytest.raises(ClaimError, match="run a is not held by this process"):
        await dead_claims.claim("a", "c3", seen=NONE)


async def test_a_claim_from_a_run_this_process_does_not_hold_is_refused(world: World) -> None:
    other = world.open()
    other.acquire("a")
    _, claims = _claims(world)
    with pytest.raises(ClaimError, match="run a is not held by this process"):
        await claims.claim("a", "c1", seen=NONE)
    with pytest.raises(ClaimError, match="run z is not held"):
        await claims.claim("z", "c1", seen=NONE)


async def test_a_waiting_claim_is_cancelled_when_the_run_stops(world: World) -> None:
    _, claims = _claims(world, "a", "b")
    await claims.claim("a", "c1", seen=NONE)
    with anyio.move_on_after(0.1) as scope:
        await claims.claim("b", "c1", seen=NONE)
    assert scope.cancelled_caught
    await claims.run_ended("b")
    await claims.following("a", "c1", 41)
    assert await claims.may_cancel("a", "c1", 41) is None


async def test_a_database_that_fails_is_a_claim_error_and_a_cautious_answer(
    world: World,
) -> None:
    coordinator, claims = _claims(world, "a")
    await claims.following("a", "c1", 41)
    coordinator.close()
    with pytest.raises(ClaimError, match="cannot claim connection c1 in"):
        await claims.claim("a", "c1", seen=NONE)
    reason = await claims.may_cancel("a", "c1", 41)
    assert reason is not None
    assert reason.startswith("whether another run follows it cannot be told")
    # Neither following nor letting go stops the run: the rows lapse with the lease.
    await claims.following("a", "c1", 42)
    await claims.released("a", "c1")
    await claims.run_ended("a")
