"""Keeping this process's leases alive while it runs their runs.

A :class:`LeaseKeeper` renews every lease it was given each third of the lease time, in a thread,
and tells its owner two things on the event loop: a run was lost (another process holds it now,
or its lease ran out while the database could not be reached: stop triggering for it), and a run
was asked to be cancelled (by any process, through the database). A failed renewal is logged and
tried again; the lease counts as running out from the start of the last renewal that succeeded,
which is never later than the database's own reckoning.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import anyio
import anyio.to_thread

from airbyte_fleet._logging import get_logger
from airbyte_fleet.coordination.protocol import CoordinationError, Coordinator

__all__ = ["LeaseKeeper"]

log = get_logger("airbyte_fleet.coordination")


class LeaseKeeper:
    """``async with LeaseKeeper(coordinator, on_lost=..., on_cancel=...) as keeper``; then
    :meth:`add` a run once its lease is taken and :meth:`remove` it before it is finished or let
    go. Leaving the block stops renewing (the leases then run out unless released)."""

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        on_lost: Callable[[str], object],
        on_cancel: Callable[[str], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._coordinator = coordinator
        self._on_lost = on_lost
        self._on_cancel = on_cancel
        self._clock = clock
        self._lease = coordinator.lease_seconds
        self.interval = self._lease / 3
        self._deadlines: dict[str, float] = {}  # run id -> when its lease runs out, as we know it
        self._told_cancel: set[str] = set()
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)  # runs first on the way out
            group.start_soon(self._renew_forever)
            group.start_soon(self._watch_deadlines)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    def add(self, run_id: str) -> None:
        """Keep *run_id*'s lease, just taken, alive from now on."""
        self._deadlines[run_id] = self._clock() + self._lease

    def remove(self, run_id: str) -> None:
        """Stop renewing *run_id*'s lease (its run is finished, let go or stopped)."""
        self._deadlines.pop(run_id, None)
        self._told_cancel.discard(run_id)

    def held(self) -> frozenset[str]:
        """The runs whose leases are being kept."""
        return frozenset(self._deadlines)

    async def renew_now(self) -> bool:
        """Renew every kept lease once; False when the database could not be reached."""
        ids = sorted(self._deadlines)
        if not ids:
            return True
        started = self._clock()
        try:
            renewal = await anyio.to_thread.run_sync(
                functools.partial(self._coordinator.renew, ids)
            )
        except CoordinationError as exc:
            log.warning("lease_renewal_failed", runs=len(ids), error=exc.message)
            return False
        for run_id in ids:
            if run_id not in self._deadlines:
                continue  # removed, or reported lost, while the renewal ran
            if run_id in renewal.lost:
                self._lose(run_id, "another process holds it")
            else:
                self._deadlines[run_id] = started + self._lease
        for run_id in sorted(renewal.cancel_requested):
            if run_id in self._deadlines and run_id not in self._told_cancel:
                self._told_cancel.add(run_id)
                if self._on_cancel is not None:
                    self._call(self._on_cancel, run_id)
        return True

    async def _renew_forever(self) -> None:
        wait = self.interval
        while True:
            await anyio.sleep(wait)
            # After a failure, try again sooner: two more chances before the lease runs out.
            wait = self.interval if await self.renew_now() else self.interval / 3

    async def _watch_deadlines(self) -> None:
        while True:
            now = self._clock()
            for run_id, deadline in list(self._deadlines.items()):
                if deadline <= now:
                    self._lose(run_id, "its lease ran out without a renewal")
            first = min(self._deadlines.values(), default=now + self.interval)
            await anyio.sleep(max(0.01, min(first - now, self.interval)))

    def _lose(self, run_id: str, why: str) -> None:
        self.remove(run_id)
        log.warning("lease_lost", run_id=run_id, why=why)
        self._call(self._on_lost, run_id)

    def _call(self, callback: Callable[[str], object], run_id: str) -> None:
        try:
            callback(run_id)
        except Exception as exc:
            # The other runs' leases still need renewing.
            log.error("lease_callback_failed", run_id=run_id, error=repr(exc))
