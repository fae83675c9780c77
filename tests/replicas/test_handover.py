"""SIGTERM hands a replica's runs over at once: the replica leaves its jobs running (``serve``'s
default ``--on-shutdown detach``) and lets go of its leases, and another replica carries the run
on within seconds, long before the lease would have expired, without triggering anything twice."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .harness import Fleet, Replica, owner_pid, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CONNECTIONS = 30
CONCURRENCY = 15
# Far longer than the handover may take: a run taken over in time was handed over, not expired.
LEASE = 30.0
HANDOVER_WITHIN = 10.0


async def _finished(replica: Replica, run_id: str, within: float) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        status = await replica.status(run_id)
        return status if status["state"] == "finished" else None

    status: dict[str, Any] = await until(done, within, f"run {run_id} finished")
    return status


async def test_sigterm_hands_the_run_to_the_other_replica_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    async with Fleet(tmp_path) as fleet:
        sim = await fleet.simulator(connections=CONNECTIONS, sync_seconds=(10, 20))
        ids = await sim.connection_ids()
        lease = f"{LEASE:g}s"
        a = await fleet.replica(sim, database_url=pg_url, lease=lease, name="a")
        run_id = await a.submit({"all": True}, max_concurrency=CONCURRENCY, poll_interval=0.5)
        # B starts only once A holds the run, so the run starts on A.
        held = await until(lambda: a.owner(run_id), 20, "replica A holds the run")
        assert owner_pid(held) == a.pid
        b = await fleet.replica(sim, database_url=pg_url, lease=lease, name="b")

        async def first_wave_sent() -> bool:
            return await sim.posts() >= CONCURRENCY

        await until(first_wave_sent, 30, "the first wave of triggers")
        # Every replica tells who holds a run.
        seen_by_b = await b.owner(run_id)
        assert seen_by_b is not None
        assert owner_pid(seen_by_b) == a.pid

        a.proc.process.terminate()
        stopped = time.monotonic()

        async def held_by_b() -> bool:
            owner = await b.owner(run_id)
            return owner is not None and owner_pid(owner) == b.pid

        await until(held_by_b, LEASE, "replica B took the run over")
        handover = time.monotonic() - stopped
        code = await a.proc.wait(30)
        status = await _finished(b, run_id, 90)
        jobs = await sim.jobs()
        posts = await sim.posts()
        await b.proc.term()

    print(f"handover after SIGTERM: {handover:.1f}s (lease {LEASE:g}s)")
    assert handover < HANDOVER_WITHIN, f"taken over after {handover:.1f}s: expiry, not handover"
    assert code == 0, a.proc.stderr()[-4000:]
    a.proc.assert_no_traceback()
    b.proc.assert_no_traceback()
    result = status["result"]
    assert result["outcome"] == "succeeded"
    assert sorted(s["connection_id"] for s in result["syncs"]) == sorted(ids)
    assert {s["outcome"] for s in result["syncs"]} == {"succeeded"}
    assert status["owner"] is None
    # B followed A's jobs instead of sending its own.
    assert sorted(j["connectionId"] for j in jobs) == sorted(ids)
    assert posts == CONNECTIONS
