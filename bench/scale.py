"""airbyte-fleet alone at scale: 1,000 and 10,000 syncs in one process.

Each case gets a fresh simulator in its own process (so the server's CPU is never charged to
airbyte-fleet) and one ``airbyte-fleet run --all --max-concurrency N --poll-interval P
--output json`` (plus ``--poll-mode M`` when the CLI offers it). Figures:

* wall: spawn to exit of the airbyte-fleet process; ``in-run``: the run's own ``duration_s``;
* slowest sync: the simulator's longest job, creation to terminal (exact, from its seeded plan);
* wall ÷ (slowest + poll): the physical floor of polling is slowest sync + one poll interval;
* HTTP requests per sync: counted at the simulator for the whole process (selection, token,
  triggers, polls), divided by the number of syncs;
* CPU seconds (user + system) and peak RSS of the airbyte-fleet process, from ``wait4``.

Prints Markdown tables and writes ``bench/out/scale.json``.

    .venv/bin/python bench/scale.py            # or: make bench

``--compare PATH`` also runs every case with another build's ``airbyte-fleet`` (say, a clone of
the commit before a change, set up with ``make setup``), the two alternating case by case, so a
before/after ratio comes from one run on one (noisy) machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    FLEET,
    OUT,
    SimProcess,
    SimSpec,
    fleet_env,
    fleet_poll_modes,
    fleet_result,
    machine,
    request_delta,
    run_measured,
    slowest_sync,
    step,
    table,
    write_json,
)

WORK = OUT / "scale"
RUN_TIMEOUT_S = 900.0

# The targets.
MAX_REQUESTS_PER_SYNC = 3.0
MAX_WALL_OVER_FLOOR = 1.05
MAX_RSS_MB_10K = 200.0
MAX_CPU_S_10K = 30.0


@dataclass
class Case:
    name: str
    spec: SimSpec
    poll_s: float
    mode: str | None
    fleet: Path = FLEET
    build: str = "this"
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} / {self.mode or 'default polling'} / {self.build}"


def run_case(case: Case) -> dict[str, Any]:
    workdir = WORK / f"{case.name}-{case.mode or 'default'}-{case.build}"
    # A journal left by an earlier run (perhaps of another build) must not be read by this one.
    shutil.rmtree(workdir / "state", ignore_errors=True)
    with SimProcess(case.spec, workdir) as sim:
        before = sim.stats()
        argv = [
            str(case.fleet),
            "run",
            "--all",
            "--poll-interval",
            f"{case.poll_s:g}s",
            "--max-concurrency",
            str(case.spec.connections),
            "--output",
            "json",
            "--state-dir",
            str(workdir / "state"),
        ]
        if case.mode:
            argv += ["--poll-mode", case.mode]
        usage = run_measured(
            argv,
            env=fleet_env(sim),
            cwd=workdir / "cwd",
            stdout=workdir / "stdout",
            stderr=workdir / "stderr",
            timeout=RUN_TIMEOUT_S,
        )
        after = sim.stats()
    result = fleet_result(workdir / "stdout")
    by_route = request_delta(before, after)
    requests = sum(by_route.values())
    jobs = after.get("jobs", [])
    slowest, slowest_source = slowest_sync(case.spec, jobs)
    floor = slowest + case.poll_s
    in_run = result.get("duration_s")
    succeeded = int(result.get("counts", {}).get("succeeded", 0))
    out: dict[str, Any] = {
        "case": case.name,
        "build": case.build,
        "poll_mode": case.mode,
        "connections": case.spec.connections,
        "workspaces": case.spec.workspaces,
        "sync_seconds": list(case.spec.sync_seconds),
        "poll_interval_s": case.poll_s,
        "max_concurrency": case.spec.connections,
        "ok": bool(result) and succeeded == case.spec.connections and not usage.timed_out,
        "returncode": usage.returncode,
        "succeeded": succeeded,
        "jobs_created": len(jobs),
        "wall_s": round(usage.wall_s, 3),
        "in_run_s": in_run,
        "slowest_sync_s": round(slowest, 3),
        "slowest_sync_source": slowest_source,
        "wall_over_slowest_plus_poll": round(usage.wall_s / floor, 4),
        "in_run_over_slowest_plus_poll": None if in_run is None else round(in_run / floor, 4),
        "http_requests": requests,
        "requests_per_sync": round(requests / case.spec.connections, 3),
        "by_route": by_route,
        "cpu_s": round(usage.cpu_s, 3),
        "user_s": round(usage.user_s, 3),
        "sys_s": round(usage.sys_s, 3),
        "peak_rss_mb": round(usage.max_rss_mb, 1),
        "simulator_cpu_s": None if sim.cpu_s is None else round(sim.cpu_s, 2),
    }
    if not out["ok"]:
        tail = (workdir / "stderr").read_text(errors="replace").strip().splitlines()[-2:]
        out["error"] = " | ".join(tail)[-600:]
    return out


def targets(results: Sequence[Mapping[str, Any]]) -> list[list[object]]:
    rows: list[list[object]] = []
    for r in results:
        where = f"{r['case']} / {r['poll_mode'] or 'default'}"
        if r["case"] == "1k":
            rows.append(
                [
                    where,
                    f"HTTP requests per sync ≤ {MAX_REQUESTS_PER_SYNC:g}",
                    f"{r['requests_per_sync']:.2f}",
                    _verdict(r["requests_per_sync"] <= MAX_REQUESTS_PER_SYNC),
                ]
            )
            rows.append(
                [
                    where,
                    f"wall ≤ {MAX_WALL_OVER_FLOOR:g} × (slowest + poll)",
                    f"{r['wall_over_slowest_plus_poll']:.3f} (in-run "
                    f"{_num(r['in_run_over_slowest_plus_poll'], '.3f')})",
                    _verdict(r["wall_over_slowest_plus_poll"] <= MAX_WALL_OVER_FLOOR),
                ]
            )
        if r["case"] == "10k":
            rows.append(
                [
                    where,
                    f"peak RSS < {MAX_RSS_MB_10K:g} MB",
                    f"{r['peak_rss_mb']:.1f}",
                    _verdict(r["peak_rss_mb"] < MAX_RSS_MB_10K),
                ]
            )
            rows.append(
                [
                    where,
                    f"CPU < {MAX_CPU_S_10K:g} s",
                    f"{r['cpu_s']:.2f}",
                    _verdict(r["cpu_s"] < MAX_CPU_S_10K),
                ]
            )
        if not r["ok"]:
            rows.append([where, "all syncs succeeded", f"{r['succeeded']:,}", "FAIL"])
    return rows


def _verdict(passed: bool) -> str:
    return "pass" if passed else "FAIL"


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def report(results: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "case",
        "build",
        "polling",
        "syncs",
        "ok",
        "wall s",
        "in-run s",
        "slowest s",
        "wall ÷ (slowest+poll)",
        "HTTP req",
        "req/sync",
        "CPU s",
        "peak RSS MB",
        "sim CPU s",
    ]
    rows = [
        [
            f"{r['connections']:,} × {r['sync_seconds'][0]:g}–{r['sync_seconds'][1]:g} s, "
            f"poll {r['poll_interval_s']:g} s",
            r.get("build", "this"),
            r["poll_mode"] or "default",
            r["connections"],
            f"{r['succeeded']:,}",
            r["wall_s"],
            r["in_run_s"],
            r["slowest_sync_s"],
            f"{r['wall_over_slowest_plus_poll']:.3f}",
            r["http_requests"],
            r["requests_per_sync"],
            r["cpu_s"],
            r["peak_rss_mb"],
            r["simulator_cpu_s"],
        ]
        for r in results
    ]
    lines = ["## Scale: airbyte-fleet alone, one process, fresh simulator per case", ""]
    lines += [table(headers, rows), "", "Requests by route (counted at the simulator):", ""]
    for r in results:
        routes = ", ".join(f"{n:,} {route}" for route, n in r["by_route"].items())
        lines.append(f"- {r['case']} / {r['poll_mode'] or 'default'}: {routes}")
    lines.append("")
    failed = [r for r in results if not r["ok"]]
    for r in failed:
        lines.append(f"- {r['case']} did not complete (rc {r['returncode']}): {r.get('error')}")
    lines += ["", table(["case", "target", "measured", "verdict"], targets(results)), ""]
    return "\n".join(lines)


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thousand", type=int, default=1000, metavar="N")
    parser.add_argument("--thousand-sync-seconds", type=_pair, default=(5.0, 60.0))
    parser.add_argument("--thousand-poll", type=float, default=10.0)
    parser.add_argument("--ten-thousand", type=int, default=10_000, metavar="N")
    parser.add_argument("--ten-thousand-sync-seconds", type=_pair, default=(5.0, 30.0))
    parser.add_argument("--ten-thousand-poll", type=float, default=10.0)
    parser.add_argument("--workspaces", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-1k", action="store_true")
    parser.add_argument("--skip-10k", action="store_true")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="PATH",
        help="another build's airbyte-fleet executable, run case by case beside this one",
    )
    args = parser.parse_args(argv)

    modes = fleet_poll_modes()
    # 1,000: every mode worth comparing; 10,000: the batched mode (the one built for it).
    thousand_modes: list[str | None] = [m for m in ("batched", "per-job") if m in modes] or [None]
    ten_thousand_modes: list[str | None] = ["batched"] if "batched" in modes else [None]
    cases = [
        Case(
            "1k",
            SimSpec(args.thousand, args.thousand_sync_seconds, args.workspaces, args.seed),
            args.thousand_poll,
            mode,
        )
        for mode in thousand_modes
        if not args.skip_1k
    ]
    if not args.skip_10k:
        spec = SimSpec(
            args.ten_thousand, args.ten_thousand_sync_seconds, args.workspaces, args.seed
        )
        cases += [Case("10k", spec, args.ten_thousand_poll, mode) for mode in ten_thousand_modes]

    if args.compare is not None:
        cases = [
            c
            for case in cases
            for c in (
                Case(case.name, case.spec, case.poll_s, case.mode, args.compare, "compared"),
                case,
            )
        ]
    results = []
    for case in cases:
        with step(f"airbyte-fleet {case.label}"):
            results.append(run_case(case))
    text = report(results)
    print(text)
    (OUT / "scale.md").write_text(text + "\n")
    write_json(
        OUT / "scale.json",
        {"fleet_poll_modes_offered": modes, "machine": machine(), "cases": results},
    )
    print(f"(written to {OUT / 'scale.json'})", file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
