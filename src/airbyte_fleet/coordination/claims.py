"""One trigger per connection across every process sharing the database: the engine's trigger hook.

Airbyte refuses a second job for a connection (409) only once the first job exists, so two runs
that select the same connection a moment apart would both send ``POST /jobs``. The rules
(``sql.decide_claim``): nobody holds the connection, so this run triggers; another run is
triggering, so this one waits for its answer; another run follows a job this run has not followed,
so this one follows that job too (its ``if_running`` policy deciding). They hold across processes:
each claim is one transaction over ``connection_claims``, and a
row counts only while its run holds a live lease, so a dead process's claims stop counting when
its leases end (and whoever claims that connection next deletes them).

A claim that must wait asks again every *poll_interval* seconds (the engine cancels the wait when
the run stops). The database is called in a thread, so a slow one never blocks the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from airbyte_fleet._logging import get_logger
from airbyte_fleet.coordination.protocol import CoordinationError, Coordinator
from airbyte_fleet.engine.hooks import Claim, ClaimError

__all__ = ["StoreClaims"]

log = get_logger("airbyte_fleet.coordination")

T = TypeVar("T")


class StoreClaims:
    """The :class:`~airbyte_fleet.engine.hooks.TriggerHook` of runs held through *coordinator*:
    a run must hold its lease (by this coordinator's owner) to claim a connection."""

    def __init__(self, coordinator: Coordinator, *, poll_interval: float = 0.25) -> None:
        self._coordinator = coordinator
        self._poll = poll_interval

    async def claim(self, run_id: str, connection_id: str, *, seen: frozenset[int]) -> Claim:
        while True:
            try:
                answer = await _in_thread(
                    self._coordinator.claim_connection, run_id, connection_id, seen
                )
            except CoordinationError as exc:
                raise ClaimError(exc.message) from exc
            if answer is not None:
                return answer
            await anyio.sleep(self._poll)

    async def following(self, run_id: str, connection_id: str, job_id: int) -> None:
        try:
            await _in_thread(self._coordinator.follow_connection, run_id, connection_id, job_id)
        except CoordinationError as exc:
            # Not fatal: another run that misses this claim triggers, and Airbyte's 409 makes it
            # adopt the same job.
            log.warning("claim_not_recorded", run_id=run_id, job_id=job_id, error=exc.message)

    async def released(self, run_id: str, connection_id: str) -> None:
        await self._release(run_id, connection_id)

    async def may_cancel(self, run_id: str, connection_id: str, job_id: int) -> str | None:
        try:
            others = await _in_thread(
                self._coordinator.connection_followers, run_id, connection_id, job_id
            )
        except CoordinationError as exc:
            # Cancelling a job another run follows cannot be undone; leaving it running can.
            return f"whether another run follows it cannot be told ({exc.message})"
        return f"run {others[0]} also follows it" if others else None

    async def run_ended(self, run_id: str) -> None:
        await self._release(run_id, None)

    async def _release(self, run_id: str, connection_id: str | None) -> None:
        try:
            await _in_thread(self._coordinator.release_connection, run_id, connection_id)
        except CoordinationError as exc:
            # The rows stop counting once the run's lease ends.
            log.warning("claim_not_released", run_id=run_id, error=exc.message)


async def _in_thread(call: Callable[..., T], *args: object) -> T:
    return await anyio.to_thread.run_sync(functools.partial(call, *args))
