"""A second process for the race tests: ``python racer.py MODE DATABASE NAME [N]``.

DATABASE is a PostgreSQL URL or a state dir. The process opens its coordinator, prints ``ready``,
waits for ``go`` on stdin (so that both racers start together), does MODE and prints its answer
as one JSON line:

* ``take``: takes queued runs until none is left; the ids it took.
* ``fire``: fires ticks 0..N-1 of schedule ``s``, each with run ``NAME-i``; the ids that fired.
* ``claim``: holds run NAME and claims connections ``c0``..``cN-1`` at once; for each, what the
  claim answered (``trigger``, or the adopted job); it follows job 1000+i of each connection it
  triggers, after a moment, and keeps its claims until ``end`` arrives on stdin.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import anyio.to_thread

from airbyte_fleet.coordination import QueuedRun, StoreClaims, open_coordinator
from airbyte_fleet.engine.hooks import Adopt, Trigger


def main() -> None:
    mode, database, name = sys.argv[1:4]
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    url = database if database.startswith("postgresql://") else None
    coordinator = open_coordinator(
        database_url=url, state_dir=Path(database), lease_seconds=30, owner=name
    )
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
    if mode == "take":
        taken = []
        while (run := coordinator.take_next()) is not None:
            taken.append(run.run_id)
            time.sleep(0.002)  # starting the run: lets the other racer in
        print(json.dumps(taken), flush=True)
    elif mode == "fire":
        t0 = datetime(2030, 1, 1, tzinfo=UTC)
        fired = [
            coordinator.fire_once(
                "s", t0 + timedelta(minutes=i), QueuedRun(f"{name}-{i}", t0, "{}", "s")
            )
            for i in range(count)
        ]
        print(json.dumps(fired), flush=True)
    elif mode == "claim":
        coordinator.acquire(name)
        anyio.run(_claim_all, StoreClaims(coordinator, poll_interval=0.02), name, count)
    coordinator.close()


async def _claim_all(claims: StoreClaims, run_id: str, count: int) -> None:
    answers: dict[str, object] = {}

    async def one(i: int) -> None:
        answer = await claims.claim(run_id, f"c{i}", seen=frozenset())
        if isinstance(answer, Trigger):
            answers[f"c{i}"] = "trigger"
            await anyio.sleep(0.2)  # the POST /jobs in flight
            await claims.following(run_id, f"c{i}", 1000 + i)
        else:
            assert isinstance(answer, Adopt), answer
            answers[f"c{i}"] = answer.job_id

    async with anyio.create_task_group() as group:
        for i in range(count):
            group.start_soon(one, i)
    print(json.dumps(answers), flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)
    await claims.run_ended(run_id)


if __name__ == "__main__":
    main()
