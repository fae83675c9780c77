"""The worker with one large run: what its store costs, SQLite against PostgreSQL.

Starts a fresh simulator and ``airbyte-fleet serve`` (real processes) per case, submits one run
of every connection (``POST /runs``, ``max_concurrency`` = all of them, the worker's default
polling) and waits for its end. Each sync of a worker run is claimed in the store's database (``connection_claims``: the
claim, the job followed, the release) besides being journaled, so this is where a database-backed
store costs most. Reported per case: wall time from the submit to the run's end, the worker's
CPU-seconds over that time (``/proc/PID/stat``), its peak RSS, and requests per sync at the
simulator.

Cases alternate store by store, round by round (``--rounds``), on one machine in one run;
``--compare PATH`` adds another build's worker (SQLite, its own claims) to each round.

    .venv/bin/python bench/worker_scale.py --database-url postgresql://postgres@127.0.0.1:5432/x
    .venv/bin/python bench/worker_scale.py --syncs 2000 --compare /tmp/before/.venv/bin/airbyte-fleet

The database at ``--database-url`` must be a fresh, empty one (each case adds its runs to it).
Writes ``bench/out/worker_scale.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import FLEET, OUT, SimProcess, SimSpec, fleet_env, machine, table, write_json
from worker_memory import TOKEN, Worker

WORK = OUT / "worker_scale"
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_case(
    label: str, fleet: Path, store: str, url: str | None, syncs: int, seed: int
) -> dict[str, Any]:
    spec = SimSpec(connections=syncs, sync_seconds=(5, 15), workspaces=5, seed=seed)
    work = WORK / f"{label}-{store}"
    with SimProcess(spec, work) as sim:
        sim.start()
        env = fleet_env(sim) | {"AIRBYTE_FLEET_API_TOKEN": TOKEN}
        extra = ["--database-url", url] if url else []
        worker = Worker(env, work, fleet, extra)
        try:
            ids = [c["connectionId"] for c in sim.connections()]
            before = sim.stats(jobs=False)
            cpu_before = _cpu_s(worker.proc.pid)
            started = time.perf_counter()
            result = worker.run(ids, "5s")
            wall = time.perf_counter() - started
            cpu = _cpu_s(worker.proc.pid) - cpu_before
            rss = _peak_rss_mb(worker.proc.pid)
            after = sim.stats(jobs=False)
        finally:
            worker.stop()
    requests = sum(after["requests"].values()) - sum(before["requests"].values())
    return {
        "build": label,
        "store": store,
        "syncs": syncs,
        "ok": result["counts"].get("succeeded", 0),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_sync": round(1000 * cpu / syncs, 3),
        "peak_rss_mb": round(rss, 1),
        "requests_per_sync": round(requests / syncs, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url", metavar="URL", help="a fresh, empty PostgreSQL database")
    parser.add_argument("--compare", type=Path, metavar="PATH", help="another build's executable")
    args = parser.parse_args(argv)
    cases: list[tuple[str, Path, str, str | None]] = []
    if args.compare is not None:
        cases.append(("compared", args.compare, "sqlite", None))
    cases.append(("this", FLEET, "sqlite", None))
    if args.database_url:
        cases.append(("this", FLEET, "postgresql", args.database_url))
    results = []
    for round_ in range(args.rounds):
        for label, fleet, store, url in cases:
            print(f"… round {round_ + 1}: {label} / {store}", file=sys.stderr, flush=True)
            results.append(run_case(label, fleet, store, url, args.syncs, args.seed))
    headers = ["build", "store", "syncs", "ok", "wall s", "CPU s", "CPU ms/sync", "peak RSS MB"]
    headers.append("req/sync")
    rows = [
        [
            r["build"],
            r["store"],
            r["syncs"],
            r["ok"],
            r["wall_s"],
            r["cpu_s"],
            r["cpu_ms_per_sync"],
            r["peak_rss_mb"],
            r["requests_per_sync"],
        ]
        for r in results
    ]
    text = "## The worker with one large run\n\n" + table(headers, rows)
    print(text)
    (OUT / "worker_scale.md").write_text(text + "\n")
    write_json(OUT / "worker_scale.json", {"machine": machine(), "cases": results})
    return 0 if all(r["ok"] == r["syncs"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
