"""Fan-out measurement: N connections with S1–S2 s syncs at --max-concurrency N on the simulator.

Reports wall time against the slowest single sync (the floor no tool can beat) and the HTTP
requests the run made, counted at the simulator. Not a test: numbers go into BENCHMARKS.md.

    .venv/bin/python bench/fanout.py --connections 200 --sync-seconds 5:20 --poll-interval 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from pydantic import SecretStr, TypeAdapter

from airbyte_fleet.api import AirbyteClient, ClientCredentials, plan_url
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import build_plan
from airbyte_fleet.runner import RunSession
from airbyte_fleet.simulator import Simulator, SimulatorOptions

_duration = TypeAdapter(timedelta)


async def measure(
    connections: int, sync_seconds: tuple[float, float], poll: float, seed: int
) -> dict[str, Any]:
    sim = Simulator(
        SimulatorOptions(
            connections=connections,
            workspaces=2,
            sync_seconds=sync_seconds,
            failure_rate=0.0,
            incomplete_rate=0.1,
            seed=seed,
        )
    )
    root = await sim.start("127.0.0.1", 0)
    try:
        api = plan_url(root + "/api/public/v1").candidates[0]
        auth = ClientCredentials("sim-client", SecretStr("sim-secret"), api.token_url)
        async with AirbyteClient(api, auth, max_connections=connections) as client:
            plan = await build_plan(client, Selection(all=True))
            before = len(sim.exchanges)
            options = RunOptions(max_concurrency=connections, poll_interval=poll)
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = await RunSession(client, plan, options).run()
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        run_exchanges = sim.exchanges[before:]
        slowest = max(_duration.validate_python(j["duration"]).total_seconds() for j in sim.jobs)
        by_route = Counter(f"{e.method} {e.route}" for e in run_exchanges)
        return {
            "connections": connections,
            "sync_seconds": list(sync_seconds),
            "poll_interval_s": poll,
            "outcome": result.outcome,
            "succeeded": result.counts["succeeded"],
            "wall_s": round(wall, 2),
            "slowest_sync_s": round(slowest, 2),
            "wall_over_slowest": round(wall / slowest, 3),
            "wall_over_slowest_plus_poll": round(wall / (slowest + poll), 3),
            "http_requests": len(run_exchanges),
            "requests_per_sync": round(len(run_exchanges) / connections, 2),
            "by_route": dict(by_route),
            "client_cpu_s": round(cpu, 2),
        }
    finally:
        await sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--sync-seconds", default="5:20")
    parser.add_argument("--poll-interval", type=float, action="append")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    low, high = (float(x) for x in args.sync_seconds.split(":"))
    for poll in args.poll_interval or [10.0]:
        print(json.dumps(asyncio.run(measure(args.connections, (low, high), poll, args.seed))))


if __name__ == "__main__":
    main()
