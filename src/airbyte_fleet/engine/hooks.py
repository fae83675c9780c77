"""The trigger hook: how whoever runs the engine takes part in its decisions about a connection.

Airbyte refuses a second job for a connection (409) only once the first job exists, so two runs that
select the same connection a moment apart would both send ``POST /jobs``. Closing that window is not
the engine's business (it knows one run), so before every trigger it asks a :class:`TriggerHook` to
*claim* the connection, much as arq asks ``on_job_start`` and stamina its hooks. The worker's
in-process claims implement it today; a store shared by several workers can implement it tomorrow, so
every call is a coroutine that may wait (another run is triggering) or fail (the store cannot be
reached). The engine cancels a waiting claim when the run stops.

The engine tells the hook when it starts following a job for a connection (triggered or adopted, from
whatever source) and when it stops following it (a final state, a retry, a detach, a failed trigger);
it asks before cancelling a job, so a run that is cancelled does not cancel a job another run still
follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from airbyte_fleet.errors import FleetError

__all__ = ["Adopt", "Claim", "ClaimError", "NoHook", "Skip", "Trigger", "TriggerHook"]


@dataclass(frozen=True, slots=True)
class Trigger:
    """This run holds the connection: send ``POST /jobs``."""


@dataclass(frozen=True, slots=True)
class Adopt:
    """Another run follows *job_id* for the connection: follow that job instead of triggering.

    The run's ``if_running`` policy still decides (adopt, skip or fail), exactly as for Airbyte's own
    409 "already running"."""

    job_id: int
    owner: str


@dataclass(frozen=True, slots=True)
class Skip:
    """Do not run the connection in this run; *reason* is shown in the result."""

    reason: str


Claim = Trigger | Adopt | Skip


class ClaimError(FleetError):
    """The hook could not answer (its store is unreachable, say): nothing is triggered."""


class TriggerHook(Protocol):
    async def claim(self, run_id: str, connection_id: str, *, seen: frozenset[int]) -> Claim:
        """Before each trigger. *seen* are the jobs this run already followed for the connection
        (one that failed is never handed back). May wait; raises :class:`ClaimError` on failure."""
        ...

    async def following(self, run_id: str, connection_id: str, job_id: int) -> None:
        """The run now follows *job_id* for the connection (triggered or adopted)."""
        ...

    async def released(self, run_id: str, connection_id: str) -> None:
        """The run no longer follows a job for the connection, nor is it triggering one."""
        ...

    async def may_cancel(self, run_id: str, connection_id: str, job_id: int) -> str | None:
        """``None``: cancel the job. A reason: leave it running (another run follows it)."""
        ...

    async def run_ended(self, run_id: str) -> None:
        """The run is over, or let go: whatever it still holds is released."""
        ...


class NoHook:
    """One run on its own (the CLI, the Python API): every claim is granted at once."""

    async def claim(self, run_id: str, connection_id: str, *, seen: frozenset[int]) -> Claim:
        return Trigger()

    async def following(self, run_id: str, connection_id: str, job_id: int) -> None:
        return None

    async def released(self, run_id: str, connection_id: str) -> None:
        return None

    async def may_cancel(self, run_id: str, connection_id: str, job_id: int) -> str | None:
        return None

    async def run_ended(self, run_id: str) -> None:
        return None
