"""One trigger per connection across every run in the worker: the engine's trigger hook.

Airbyte refuses a second job for a connection (409) only once the first job exists, so two runs
that select the same connection a moment apart would both send ``POST /jobs``. Every run's engine
asks these claims before it triggers:

* nobody holds the connection: this run takes it and triggers;
* another run is triggering: wait until its answer is known (the engine cuts the wait short when
  the run stops);
* another run follows a job this run has not followed yet: follow that job instead (the run's own
  ``if_running`` policy still decides whether to adopt, skip or fail), without asking Airbyte.

A claim lasts from the trigger until every run following the job has let it go (a final state, a
retry, the run's end); the engine reports jobs adopted from Airbyte's own 409 or followed again after
a restart too, so those are shared the same way. Cancelling a run leaves running a job that another
run still follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from airbyte_fleet.engine.hooks import Adopt, Claim, Trigger

__all__ = ["WorkerClaims"]


@dataclass
class _Held:
    triggering: str | None = None  # the run whose trigger is out, or whose answer is unsettled
    job_id: int | None = None  # the newest job any run follows for the connection
    followers: dict[str, int] = field(default_factory=dict)  # run id -> job id it follows


class WorkerClaims:
    """connection id -> the job this worker's runs follow for it, and who may trigger next."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self._waiters: dict[str, anyio.Event] = {}

    async def claim(self, run_id: str, connection_id: str, *, seen: frozenset[int]) -> Claim:
        while True:
            held = self._held.get(connection_id)
            if held is None:
                self._held[connection_id] = _Held(triggering=run_id)
                return Trigger()
            someone_triggers = held.triggering not in (None, run_id)
            others = set(held.followers) - {run_id}
            if not someone_triggers and not others:
                held.triggering = run_id
                return Trigger()
            job_id = held.job_id
            if not someone_triggers and job_id is not None and job_id not in seen:
                owners = sorted(r for r in others if held.followers[r] == job_id)
                owner = f"run {owners[0]} of this worker" if owners else "another run"
                return Adopt(job_id, owner)
            waiter = self._waiters.get(connection_id)
            if waiter is None:
                waiter = self._waiters[connection_id] = anyio.Event()
            await waiter.wait()

    async def following(self, run_id: str, connection_id: str, job_id: int) -> None:
        held = self._held.setdefault(connection_id, _Held())
        if held.triggering == run_id:
            held.triggering = None
        if held.job_id is None or job_id > held.job_id:
            # Airbyte runs one job per connection at a time: the newest one is the live one.
            held.job_id = job_id
        held.followers[run_id] = job_id
        self._changed(connection_id)

    async def released(self, run_id: str, connection_id: str) -> None:
        held = self._held.get(connection_id)
        if held is None:
            return
        held.followers.pop(run_id, None)
        if held.triggering == run_id:
            held.triggering = None
        self._changed(connection_id)

    async def may_cancel(self, run_id: str, connection_id: str, job_id: int) -> str | None:
        held = self._held.get(connection_id)
        others = sorted(
            r for r, j in (held.followers.items() if held else ()) if j == job_id and r != run_id
        )
        return f"run {others[0]} of this worker also follows it" if others else None

    async def run_ended(self, run_id: str) -> None:
        for connection_id, held in list(self._held.items()):
            if held.triggering == run_id or run_id in held.followers:
                await self.released(run_id, connection_id)

    def claimed(self) -> dict[str, int | None]:
        """connection id -> the job id its claim holds (for tests and diagnostics)."""
        return {cid: held.job_id for cid, held in self._held.items()}

    def _changed(self, connection_id: str) -> None:
        held = self._held.get(connection_id)
        if held is not None and held.triggering is None and not held.followers:
            del self._held[connection_id]
        waiter = self._waiters.pop(connection_id, None)
        if waiter is not None:
            waiter.set()
