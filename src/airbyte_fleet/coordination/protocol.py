"""What several processes sharing one database agree on: who runs a run, and what is queued.

A run is *held* by one process at a time through a lease (``run_leases``): the holder renews it
while it runs the run; once its time has passed without a renewal anyone may take it, and the old
holder must stop (its store is fenced by the lease, so it cannot trigger any more). The worker's
accepted runs wait in ``worker_runs`` until they are finished; a schedule's tick fires once across
every process (``schedule_fires``); and runs claim connections in ``connection_claims`` (the
trigger hook of :mod:`airbyte_fleet.coordination.claims`).

Every method is synchronous and may block on the database: async callers use
``anyio.to_thread.run_sync``.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from airbyte_fleet.engine.hooks import Claim
from airbyte_fleet.errors import FleetError

__all__ = [
    "CoordinationError",
    "Coordinator",
    "Lease",
    "LeaseHeldError",
    "QueuedRun",
    "Renewal",
    "new_owner",
]


def new_owner() -> str:
    """An id for this process instance: its host and pid, and a random tail for a reused pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Lease:
    """*owner* holds *run_id* until *until* (UTC), unless it renews the lease first."""

    run_id: str
    owner: str
    until: datetime


@dataclass(frozen=True, slots=True)
class QueuedRun:
    """A run the worker accepted and has not finished; *entry* is the service's own JSON."""

    run_id: str
    submitted_at: datetime
    entry: str
    submitted_by: str | None = None
    cancel_requested: bool = False
    holder: Lease | None = None


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a renewal found: runs no longer ours (stop them), and runs someone asked to cancel."""

    lost: frozenset[str]
    cancel_requested: frozenset[str]


class CoordinationError(FleetError):
    """The shared database could not be read or written; the message names it (no password)."""


class LeaseHeldError(FleetError):
    """Another live process holds the run."""

    def __init__(self, holder: Lease) -> None:
        self.holder = holder
        super().__init__(
            f"run {holder.run_id} is held by process {holder.owner} until "
            f"{holder.until.isoformat(timespec='seconds')}; stop that process or wait until then"
        )


class Coordinator(Protocol):
    """Leases, the worker's queue, schedule fires and state, and connection claims, in one
    database. Every method raises :class:`CoordinationError` when the database fails."""

    owner: str
    lease_seconds: float

    def acquire(self, run_id: str) -> Lease:
        """Take the run's lease when it is free, expired or already ours; else raise
        :class:`LeaseHeldError`."""
        ...

    def renew(self, run_ids: Iterable[str]) -> Renewal:
        """Extend every lease of *run_ids* that is still ours; the others are ``lost``."""
        ...

    def release(self, run_ids: Iterable[str]) -> None:
        """Let go of our leases of *run_ids* now, so another process may take the runs at once."""
        ...

    def holder(self, run_id: str) -> Lease | None:
        """The run's live lease, or None when nobody holds it."""
        ...

    def submit(self, run: QueuedRun) -> None:
        """Accept *run* (durable on return); a run already accepted stays as it is."""
        ...

    def take_next(self, *, exclude: Collection[str] = ()) -> QueuedRun | None:
        """The oldest accepted run nobody holds, now leased to us; None when there is none."""
        ...

    def finish(self, run_id: str) -> None:
        """The run is over: forget it, its lease and its connection claims."""
        ...

    def request_cancel(self, run_id: str) -> bool:
        """Flag the run for its holder to cancel; False when it is not an unfinished run."""
        ...

    def queued(self) -> list[QueuedRun]:
        """Every accepted unfinished run, oldest first, with its live holder."""
        ...

    def fire_once(self, schedule: str, tick: datetime, run: QueuedRun) -> str:
        """Submit *run* for *schedule*'s *tick* unless that tick fired already: the id of the run
        that fired it (*run*'s, or the one that came first; then nothing is submitted)."""
        ...

    def submitters(self, run_ids: Iterable[str]) -> dict[str, str]:
        """The schedule that submitted each of *run_ids* that a schedule submitted (the others,
        submitted through the API, are left out)."""
        ...

    def schedule_states(self) -> dict[str, str]:
        """Each schedule's saved state (the scheduler's own JSON)."""
        ...

    def save_schedule_state(self, schedule: str, state: str) -> None: ...

    def claim_connection(
        self, run_id: str, connection_id: str, seen: frozenset[int]
    ) -> Claim | None:
        """One attempt of the trigger hook's claim (see ``claims.py``): None means wait."""
        ...

    def follow_connection(self, run_id: str, connection_id: str, job_id: int) -> None: ...

    def release_connection(self, run_id: str, connection_id: str | None) -> None:
        """Drop the run's claim of the connection (None: of every connection)."""
        ...

    def connection_followers(self, run_id: str, connection_id: str, job_id: int) -> list[str]:
        """Other runs, with a live lease, that follow *job_id* for the connection."""
        ...

    def close(self) -> None: ...
