"""LeaseKeeper: leases kept alive in the background, losses and cancel requests reported.

Leases here last 1 s (renewed every third of it), so time really passes, a few seconds a test:
a 0.3 s lease ran out on a loaded CI machine before a renewal's thread got its turn.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

import anyio
import pytest
from structlog.testing import capture_logs

from airbyte_fleet.coordination import (
    CoordinationError,
    Coordinator,
    LeaseHeldError,
    LeaseKeeper,
    QueuedRun,
    Renewal,
)

from .support import World

pytestmark = pytest.mark.anyio

LEASE = 1.0


class _Events:
    def __init__(self) -> None:
        self.lost: list[str] = []
        self.cancel: list[str] = []
        self.changed = anyio.Event()

    def on_lost(self, run_id: str) -> None:
        self.lost.append(run_id)
        self.changed.set()

    def on_cancel(self, run_id: str) -> None:
        self.cancel.append(run_id)
        self.changed.set()

    async def next(self) -> None:
        with anyio.fail_after(2):
            await self.changed.wait()
        self.changed = anyio.Event()


class _Unreachable:
    """A real coordinator whose renewals fail while ``down`` (the database cannot be reached)."""

    def __init__(self, inner: Coordinator) -> None:
        self.inner = inner
        self.down = False
        self.renewals = 0

    def renew(self, run_ids: Iterable[str]) -> Renewal:
        self.renewals += 1
        if self.down:
            raise CoordinationError("cannot renew leases in the database at test (down)")
        return self.inner.renew(run_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_kept_leases_outlive_their_lease_time(real_world: World) -> None:
    a, b = real_world.open(lease_seconds=LEASE), real_world.open(lease_seconds=LEASE)
    events = _Events()
    a.acquire("run-1")
    async with LeaseKeeper(a, on_lost=events.on_lost) as keeper:
        keeper.add("run-1")
        await anyio.sleep(LEASE * 3)
        with pytest.raises(LeaseHeldError):
            b.acquire("run-1")
        assert keeper.held() == {"run-1"}
    assert events.lost == []


async def test_a_removed_run_is_no_longer_renewed(real_world: World) -> None:
    a, b = real_world.open(lease_seconds=LEASE), real_world.open(lease_seconds=LEASE)
    events = _Events()
    a.acquire("run-1")
    a.acquire("run-2")
    async with LeaseKeeper(a, on_lost=events.on_lost) as keeper:
        keeper.add("run-1")
        keeper.add("run-2")
        keeper.remove("run-1")
        await anyio.sleep(LEASE * 1.5)
        assert b.acquire("run-1").owner == b.owner
        with pytest.raises(LeaseHeldError):
            b.acquire("run-2")
    assert events.lost == []


async def test_a_run_another_process_took_is_reported_lost_once(real_world: World) -> None:
    a, b = real_world.open(lease_seconds=LEASE), real_world.open(lease_seconds=LEASE)
    events = _Events()
    a.acquire("run-1")
    a.acquire("run-2")
    async with LeaseKeeper(a, on_lost=events.on_lost) as keeper:
        keeper.add("run-1")
        keeper.add("run-2")
        a.release(["run-1"])  # as if it had expired...
        b.acquire("run-1")  # ...and another process had taken it
        await events.next()
        assert events.lost == ["run-1"]
        assert keeper.held() == {"run-2"}
        await anyio.sleep(LEASE)
    assert events.lost == ["run-1"]


async def test_a_cancel_request_is_told_once(real_world: World) -> None:
    a, b = real_world.open(lease_seconds=LEASE), real_world.open(lease_seconds=LEASE)
    a.submit(QueuedRun("run-1", datetime(2030, 1, 1, tzinfo=UTC), "{}"))
    assert a.take_next() is not None
    events = _Events()
    async with LeaseKeeper(a, on_lost=events.on_lost, on_cancel=events.on_cancel) as keeper:
        keeper.add("run-1")
        b.request_cancel("run-1")
        await events.next()
        assert events.cancel == ["run-1"]
        await anyio.sleep(LEASE)  # several renewals later
    assert events.cancel == ["run-1"]
    assert events.lost == []


async def test_failed_renewals_are_retried_and_a_lease_that_runs_out_is_lost(
    real_world: World,
) -> None:
    inner = real_world.open(lease_seconds=LEASE)
    flaky = _Unreachable(inner)
    events = _Events()
    inner.acquire("run-1")
    with capture_logs() as logs:
        async with LeaseKeeper(cast(Coordinator, flaky), on_lost=events.on_lost) as keeper:
            keeper.add("run-1")
            flaky.down = True
            await anyio.sleep(LEASE / 3 * 1.5)  # one renewal failed...
            flaky.down = False  # ...and the next succeeds, in time
            await anyio.sleep(LEASE * 1.5)
            assert events.lost == []
            flaky.down = True
            started = anyio.current_time()
            await events.next()
            # Lost no later than a lease time after the last renewal that went through.
            assert anyio.current_time() - started <= LEASE * 1.25
    assert events.lost == ["run-1"]
    failures = [line for line in logs if line["event"] == "lease_renewal_failed"]
    assert len(failures) >= 3  # retried
    assert any(line["event"] == "lease_lost" for line in logs)


async def test_a_failing_callback_does_not_stop_the_other_leases(real_world: World) -> None:
    a, b = real_world.open(lease_seconds=LEASE), real_world.open(lease_seconds=LEASE)
    seen: list[str] = []

    def boom(run_id: str) -> None:
        seen.append(run_id)
        raise RuntimeError("the callback failed")

    a.acquire("run-1")
    a.acquire("run-2")
    async with LeaseKeeper(a, on_lost=boom) as keeper:
        keeper.add("run-1")
        keeper.add("run-2")
        a.release(["run-1"])
        b.acquire("run-1")
        await anyio.sleep(LEASE * 2)
        with pytest.raises(LeaseHeldError):
            b.acquire("run-2")
    assert seen == ["run-1"]
