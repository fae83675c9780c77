"""The simulator alone under a fleet's load: can it serve N syncs (100,000 by default)?

Starts ``airbyte-fleet simulate`` in its own process and plays the client's part with a plain
aiohttp client, the way ``airbyte-fleet run --all --poll-mode batched`` talks to Airbyte:

1. a token, then every connection, 100 a page (``GET /connections``, as ``--all`` lists them);
2. ``POST /jobs`` for every connection, ``--concurrency`` at a time;
3. meanwhile, every ``--poll`` seconds, each workspace's changed jobs, as the batched watcher
   reads them: ``GET /jobs?workspaceIds=W&updatedAtStart=T&orderBy=updatedAt|DESC``, 100 a
   page, each page starting 90 after the last (10 re-read), until a short page;
4. until every job has been seen to end.

Reported: start-up (seeding), the simulator's CPU per phase and per request (whole process,
from /proc; and in each route's handler, from its stats), its resident memory, the latency of
each route as the client saw it, each poll tick's pages and time, and whether every sync
succeeded. The client shares the machine: on 2 cores it competes with the simulator, so the
phases' wall times are upper bounds.

    .venv/bin/python bench/sim_load.py                          # 100,000 syncs, 20 workspaces
    .venv/bin/python bench/sim_load.py --syncs 10000 --workspaces 5
    .venv/bin/python bench/sim_load.py --simulator /path/to/other/.venv/bin/airbyte-fleet

Writes ``bench/out/sim_load.json`` and ``bench/out/sim_load.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from _common import (
    CLIENT_ID,
    CLIENT_SECRET,
    OUT,
    SimProcess,
    SimSpec,
    machine,
    table,
    write_json,
)

TERMINAL = {"succeeded", "failed", "cancelled"}
PAGE = 100
OVERLAP = 10  # the client re-reads this many jobs at each page boundary
SINCE_OVERLAP_S = 2.0  # the watcher asks for changes since its last tick, less this


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def _stamp(epoch: float) -> str:
    # As the client sends it: whole seconds, UTC.
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Tick:
    at_s: float
    wall_s: float
    pages: int
    changed: int
    terminal_after: int


@dataclass
class Load:
    sim: SimProcess
    http: aiohttp.ClientSession
    token: str = ""
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    status: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    async def call(self, method: str, route: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        started = time.perf_counter()
        async with self.http.request(
            method, f"{self.sim.api}{path}", headers=headers, **kwargs
        ) as reply:
            raw = await reply.read()
            self.latencies[f"{method} {route}"].append(time.perf_counter() - started)
            body = json.loads(raw) if raw else None
            if reply.status != 200 and len(self.errors) < 20:
                self.errors.append(f"{method} {path}: {reply.status} {raw[:200]!r}")
            return reply.status, body

    async def get_token(self) -> None:
        body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        _, reply = await self.call("POST", "/applications/token", "/applications/token", json=body)
        self.token = reply["access_token"]

    async def connections(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            _, page = await self.call(
                "GET", "/connections", "/connections", params={"limit": PAGE, "offset": offset}
            )
            found.extend(page["data"])
            if len(page["data"]) < PAGE:
                return found
            offset += PAGE

    async def trigger(self, connection_ids: Sequence[str], concurrency: int) -> None:
        queue = iter(connection_ids)

        async def worker() -> None:
            for cid in queue:
                status, job = await self.call(
                    "POST", "/jobs", "/jobs", json={"connectionId": cid, "jobType": "sync"}
                )
                if status == 200:
                    self.status.setdefault(job["jobId"], job["status"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def list_changed(self, workspace_id: str, since: float) -> tuple[int, int]:
        """One workspace's changed jobs, page by page; returns (pages, jobs changed)."""
        pages = changed = offset = 0
        while True:
            _, page = await self.call(
                "GET",
                "/jobs",
                "/jobs",
                params={
                    "workspaceIds": workspace_id,
                    "updatedAtStart": _stamp(since),
                    "orderBy": "updatedAt|DESC",
                    "limit": PAGE,
                    "offset": offset,
                },
            )
            pages += 1
            for job in page["data"]:
                if self.status.get(job["jobId"]) != job["status"]:
                    changed += 1
                self.status[job["jobId"]] = job["status"]
            if len(page["data"]) < PAGE:
                return pages, changed
            offset += PAGE - OVERLAP

    def terminal(self) -> int:
        return sum(1 for status in self.status.values() if status in TERMINAL)


async def poll(
    load: Load, workspaces: Sequence[str], interval: float, expected: int, began: float
) -> list[Tick]:
    ticks: list[Tick] = []
    since = began - SINCE_OVERLAP_S
    while True:
        await asyncio.sleep(interval)
        tick_began = time.time()
        started = time.perf_counter()
        counts = await asyncio.gather(*(load.list_changed(w, since) for w in workspaces))
        since = tick_began - SINCE_OVERLAP_S
        ticks.append(
            Tick(
                at_s=round(tick_began - began, 2),
                wall_s=round(time.perf_counter() - started, 3),
                pages=sum(pages for pages, _ in counts),
                changed=sum(changed for _, changed in counts),
                terminal_after=load.terminal(),
            )
        )
        if len(load.status) >= expected and load.terminal() >= expected:
            return ticks


def _latency(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    spec = SimSpec(args.syncs, args.sync_seconds, args.workspaces, args.seed, args.simulator)
    out: dict[str, Any] = {
        "syncs": args.syncs,
        "workspaces": args.workspaces,
        "sync_seconds": list(args.sync_seconds),
        "poll_s": args.poll,
        "concurrency": args.concurrency,
        "simulator": str(args.simulator or "this build"),
    }
    with SimProcess(spec, OUT / "sim_load") as sim:
        out["start_s"] = round(sim.start_s or 0.0, 2)
        out["rss_after_seed_mb"] = round(sim.rss_mb()[0], 1)
        phases: dict[str, dict[str, float]] = {}
        connector = aiohttp.TCPConnector(limit=args.concurrency + args.workspaces)
        async with aiohttp.ClientSession(connector=connector) as http:
            load = Load(sim, http)
            cpu, wall = sim.cpu_now(), time.perf_counter()
            await load.get_token()
            connections = await load.connections()
            phases["list connections"] = {
                "wall_s": round(time.perf_counter() - wall, 2),
                "sim_cpu_s": round(sim.cpu_now() - cpu, 2),
                "requests": len(load.latencies["GET /connections"]) + 1,
            }
            active = [c["connectionId"] for c in connections if c["status"] == "active"]

            cpu, wall, began = sim.cpu_now(), time.perf_counter(), time.time()
            poller = asyncio.create_task(
                poll(load, [w for w in _workspaces(connections)], args.poll, len(active), began)
            )
            await load.trigger(active, args.concurrency)
            triggered_s = time.perf_counter() - wall
            triggered_cpu = sim.cpu_now() - cpu
            rss_after_trigger = sim.rss_mb()[0]
            try:
                ticks = await asyncio.wait_for(poller, timeout=args.timeout)
            except TimeoutError:
                ticks = []
                load.errors.append(f"not every job ended within {args.timeout:g} s")
            run_cpu = sim.cpu_now() - cpu
            phases["trigger (polls running)"] = {
                "wall_s": round(triggered_s, 2),
                "sim_cpu_s": round(triggered_cpu, 2),
                "requests": len(load.latencies["POST /jobs"]),
            }
            list_pages = len(load.latencies["GET /jobs"])
            phases["trigger to last job ended"] = {
                "wall_s": round(time.perf_counter() - wall, 2),
                "sim_cpu_s": round(run_cpu, 2),
                "requests": len(active) + list_pages,
            }
        stats = sim.stats(jobs=False)
        now_rss, peak_rss = sim.rss_mb()
    succeeded = sum(1 for status in load.status.values() if status == "succeeded")
    handler_cpu: dict[str, float] = stats.get("handler_cpu_s", {})
    requests: dict[str, int] = stats.get("requests", {})
    out.update(
        {
            "ok": succeeded == len(active) and not load.errors,
            "active_connections": len(active),
            "jobs_created": len(load.status),
            "succeeded": succeeded,
            "errors": load.errors,
            "phases": phases,
            "requests": requests,
            "handler_cpu_ms_per_request": {
                route: round(1000 * cpu_s / requests[route], 3)
                for route, cpu_s in handler_cpu.items()
                if requests.get(route)
            },
            "sim_cpu_ms_per_request_whole_run": round(
                1000 * run_cpu / max(1, len(active) + list_pages), 3
            ),
            "latency": {route: _latency(v) for route, v in load.latencies.items() if v},
            "ticks": [tick.__dict__ for tick in ticks],
            "rss_after_trigger_mb": round(rss_after_trigger, 1),
            "rss_end_mb": round(now_rss, 1),
            "peak_rss_mb": round(peak_rss, 1),
            "sim_cpu_total_s": None if sim.cpu_s is None else round(sim.cpu_s, 2),
            "rss_per_job_kb": round(
                1024 * (rss_after_trigger - out["rss_after_seed_mb"]) / max(1, len(load.status)),
                2,
            ),
        }
    )
    return out


def _workspaces(connections: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({c["workspaceId"] for c in connections})


def report(r: dict[str, Any]) -> str:
    lines = [
        f"## Simulator alone: {r['syncs']:,} syncs in {r['workspaces']} workspaces, "
        f"{r['sync_seconds'][0]:g}–{r['sync_seconds'][1]:g} s, poll {r['poll_s']:g} s "
        f"({r['simulator']})",
        "",
        f"- all {r['active_connections']:,} syncs succeeded: "
        f"{'yes' if r['ok'] else 'NO'} ({r['succeeded']:,})",
        f"- start-up (seeding the world): {r['start_s']} s; RSS {r['rss_after_seed_mb']} MB after "
        f"it, {r['rss_after_trigger_mb']} MB once every job exists, peak {r['peak_rss_mb']} MB "
        f"({r['rss_per_job_kb']} KB per job)",
        f"- simulator CPU per request over the run (whole process): "
        f"{r['sim_cpu_ms_per_request_whole_run']} ms",
        "",
        table(
            ["phase", "wall s", "simulator CPU s", "requests"],
            [[name, p["wall_s"], p["sim_cpu_s"], p["requests"]] for name, p in r["phases"].items()],
        ),
        "",
        table(
            ["route", "requests", "handler CPU ms/req", "p50 ms", "p95 ms", "max ms"],
            [
                [
                    route,
                    r["requests"].get(route, 0),
                    r["handler_cpu_ms_per_request"].get(route),
                    lat["p50_ms"],
                    lat["p95_ms"],
                    lat["max_ms"],
                ]
                for route, lat in r["latency"].items()
            ],
        ),
        "",
        table(
            ["tick at s", "wall s", "pages", "jobs changed", "jobs ended so far"],
            [
                [t["at_s"], t["wall_s"], t["pages"], t["changed"], t["terminal_after"]]
                for t in r["ticks"]
            ],
        ),
        "",
    ]
    lines += [f"- error: {e}" for e in r["errors"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncs", type=int, default=100_000)
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--sync-seconds", type=_pair, default=(5.0, 30.0), metavar="LOW:HIGH")
    parser.add_argument("--poll", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--concurrency", type=int, default=64, help="POST /jobs in flight")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS")
    parser.add_argument(
        "--simulator", type=Path, help="another build's airbyte-fleet to run the simulator from"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    result["machine"] = machine()
    text = report(result)
    print(text)
    (OUT / "sim_load.md").write_text(text + "\n")
    write_json(OUT / "sim_load.json", result)
    print(f"(written to {OUT / 'sim_load.json'})", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
