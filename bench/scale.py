"""airbyte-fleet alone at scale: 100, 1,000, 10,000 and 100,000 syncs in one process.

Each case gets a fresh simulator in its own process (so the server's CPU is never charged to
airbyte-fleet) and one ``airbyte-fleet run --all --max-concurrency N --poll-interval P
--output json`` (plus ``--poll-mode M`` when the CLI offers it), with its journal and JSON log
lines on, as a user runs it. Figures:

* wall: spawn to exit of the airbyte-fleet process; ``in-run``: the run's own ``duration_s``;
* slowest sync: the simulator's longest job, creation to terminal (exact, from its seeded plan);
* wall ÷ (slowest + poll): the physical floor of polling is slowest sync + one poll interval;
* HTTP requests per sync: counted at the simulator for the whole process (selection, token,
  triggers, polls), divided by the number of syncs;
* CPU seconds (user + system) and peak RSS of the airbyte-fleet process, from ``wait4``;
* first trigger: from the ``run_started`` log line's timestamp to the simulator's answer to the
  first ``POST /jobs`` (its clock, the same machine's), so it holds whatever the log level makes
  of ``sync_triggered`` lines; the first ``sync_triggered`` line's own delay is kept in the JSON
  too, when there is one;
* first trigger from start: from the process's spawn to that answer, planning included (a build
  that triggers while it still reads the connection list starts the run before the plan is
  complete, so ``run_started`` alone no longer marks the end of the planning);
* a least-squares fit over the batched cases: peak RSS = intercept + slope × syncs.

Prints Markdown tables and writes ``bench/out/scale.json`` (and ``scale.md``).

    .venv/bin/python bench/scale.py                          # 100, 1,000 and 10,000 (~3 min)
    .venv/bin/python bench/scale.py --sizes 100,1000,10000,100000
    .venv/bin/python bench/scale.py --sizes 1000 --modes batched,per-job

``--compare PATH`` also runs every case with another build's ``airbyte-fleet`` (say, a clone of
the commit before a change, set up with ``make setup``), the two alternating case by case, so a
before/after ratio comes from one run on one (noisy) machine.

``--database-url URL`` runs every case with the PostgreSQL run store instead of the SQLite
journal (``airbyte-fleet run --database-url URL``; every build run must offer the flag). Each run
adds its rows to that database, so give each benchmark a fresh, empty one.

    .venv/bin/python bench/scale.py --database-url postgresql://postgres@127.0.0.1:5432/fleet_scale
    .venv/bin/python bench/scale.py --sizes 1000 --side-by-side --database-url URL
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import (
    FLEET,
    OUT,
    SimProcess,
    SimSpec,
    clean_env,
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


@dataclass(frozen=True)
class Size:
    """One case's world: syncs, how they are spread and how long they last."""

    syncs: int
    workspaces: int
    sync_seconds: tuple[float, float]
    poll_s: float = 10.0
    timeout_s: float = 900.0

    @property
    def name(self) -> str:
        return f"{self.syncs // 1000}k" if self.syncs >= 1000 else str(self.syncs)


# 1,000 keeps the 5–60 s syncs its wall ÷ (slowest + poll) figure has always been measured with;
# 100,000 spreads over 20 workspaces (5,000 jobs each), as the issue asks.
SIZES: dict[int, Size] = {
    100: Size(100, 5, (5.0, 30.0)),
    1_000: Size(1_000, 5, (5.0, 60.0)),
    10_000: Size(10_000, 5, (5.0, 30.0)),
    100_000: Size(100_000, 20, (5.0, 30.0), timeout_s=2400.0),
}
DEFAULT_SIZES = (100, 1_000, 10_000)

# The targets (issue 13, "A lean engine").
MAX_RSS_MB_10K = 100.0
MAX_CPU_S_10K = 12.0
MAX_FIRST_TRIGGER_S_10K = 1.0
MAX_RSS_MB_100K = 300.0
MAX_REQUESTS_PER_SYNC = 1.05  # batched, from 1,000 syncs on (below, the fixed requests weigh)
MAX_WALL_OVER_FLOOR_1K = 1.02


@dataclass
class Case:
    size: Size
    mode: str | None
    seed: int = 1
    fleet: Path = FLEET
    build: str = "this"
    database_url: str | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> SimSpec:
        size = self.size
        return SimSpec(size.syncs, size.sync_seconds, size.workspaces, self.seed)

    @property
    def store(self) -> str:
        return "postgresql" if self.database_url else "sqlite"

    @property
    def label(self) -> str:
        label = f"{self.size.name} / {self.mode or 'default polling'} / {self.build}"
        return f"{label} / {self.store}" if self.database_url else label


def _log_times(stderr: Path) -> tuple[float | None, float | None]:
    """Epoch seconds of the ``run_started`` line and of the first ``sync_triggered`` line."""
    started = triggered = None
    with stderr.open(errors="replace") as lines:
        for line in lines:
            if '"run_started"' not in line and '"sync_triggered"' not in line:
                continue
            try:
                record = json.loads(line)
                at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if record.get("event") == "run_started" and started is None:
                started = at.timestamp()
            elif record.get("event") == "sync_triggered" and triggered is None:
                triggered = at.timestamp()
            if started is not None and triggered is not None:
                break
    return started, triggered


def _delay(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else round(later - earlier, 3)


def run_case(case: Case) -> dict[str, Any]:
    size = case.size
    workdir = WORK / f"{size.name}-{case.mode or 'default'}-{case.build}"
    # A journal left by an earlier run (perhaps of another build) must not be read by this one.
    shutil.rmtree(workdir / "state", ignore_errors=True)
    with SimProcess(case.spec, workdir) as sim:
        before = sim.stats(jobs=False)
        argv = [
            str(case.fleet),
            "run",
            "--all",
            "--poll-interval",
            f"{size.poll_s:g}s",
            "--max-concurrency",
            str(size.syncs),
            "--output",
            "json",
            "--state-dir",
            str(workdir / "state"),
        ]
        if case.mode:
            argv += ["--poll-mode", case.mode]
        if case.database_url:
            argv += ["--database-url", case.database_url]
        usage = run_measured(
            argv,
            env=fleet_env(sim),
            cwd=workdir / "cwd",
            stdout=workdir / "stdout",
            stderr=workdir / "stderr",
            timeout=size.timeout_s,
        )
        after = sim.stats()
    result = fleet_result(workdir / "stdout")
    by_route = request_delta(before, after)
    requests = sum(by_route.values())
    jobs = after.get("jobs", [])
    slowest, slowest_source = slowest_sync(case.spec, jobs)
    floor = slowest + size.poll_s
    in_run = result.get("duration_s")
    succeeded = int(result.get("counts", {}).get("succeeded", 0))
    run_started, first_logged = _log_times(workdir / "stderr")
    out: dict[str, Any] = {
        "case": size.name,
        "build": case.build,
        "poll_mode": case.mode,
        "store": case.store,
        "connections": size.syncs,
        "workspaces": size.workspaces,
        "sync_seconds": list(size.sync_seconds),
        "poll_interval_s": size.poll_s,
        "max_concurrency": size.syncs,
        "ok": bool(result) and succeeded == size.syncs and not usage.timed_out,
        "returncode": usage.returncode,
        "timed_out": usage.timed_out,
        "succeeded": succeeded,
        "jobs_created": len(jobs),
        "wall_s": round(usage.wall_s, 3),
        "in_run_s": in_run,
        "slowest_sync_s": round(slowest, 3),
        "slowest_sync_source": slowest_source,
        "wall_over_slowest_plus_poll": round(usage.wall_s / floor, 4),
        "in_run_over_slowest_plus_poll": None if in_run is None else round(in_run / floor, 4),
        "http_requests": requests,
        "requests_per_sync": round(requests / size.syncs, 3),
        "by_route": by_route,
        "cpu_s": round(usage.cpu_s, 3),
        "user_s": round(usage.user_s, 3),
        "sys_s": round(usage.sys_s, 3),
        "peak_rss_mb": round(usage.max_rss_mb, 1),
        # run_started to the simulator's answer to the first POST /jobs (same machine's clock).
        "first_trigger_s": _delay(after.get("first_job_answered_at"), run_started),
        # ... and to the first sync_triggered log line, when the log level shows one.
        "first_trigger_logged_s": _delay(first_logged, run_started),
        # The process's spawn to the simulator's answer to the first POST /jobs.
        "first_trigger_from_start_s": _delay(after.get("first_job_answered_at"), usage.spawned_at),
        "simulator_cpu_s": None if sim.cpu_s is None else round(sim.cpu_s, 2),
        "simulator_peak_rss_mb": None if sim.max_rss_mb is None else round(sim.max_rss_mb, 1),
    }
    if not out["ok"]:
        tail = (workdir / "stderr").read_text(errors="replace").strip().splitlines()[-2:]
        out["error"] = " | ".join(tail)[-600:]
    return out


def fit(results: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Least squares of peak RSS on syncs over completed cases; None with fewer than 2 sizes."""
    points = [(float(r["connections"]), float(r["peak_rss_mb"])) for r in results if r["ok"]]
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    residual = max(abs(y - (intercept + slope * x)) for x, y in points)
    return {
        "points": n,
        "sizes": sorted({int(x) for x, _ in points}),
        "intercept_mb": round(intercept, 1),
        "mb_per_1000_syncs": round(slope * 1000, 2),
        "largest_residual_mb": round(residual, 1),
    }


def _fits(results: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any] | None]:
    # Batched (or the build's only) polling: per-job rows measure another thing.
    builds = sorted({r["build"] for r in results})
    return {
        build: fit(
            [r for r in results if r["build"] == build and r["poll_mode"] in (None, "batched")]
        )
        for build in builds
    }


def _row(r: Mapping[str, Any] | None, key: str, fmt: str) -> str:
    if r is None or r.get(key) is None:
        return "–"
    return format(r[key], fmt)


def targets(results: Sequence[Mapping[str, Any]]) -> list[list[object]]:
    """One row per target and case: the compared build's figure (before), this build's, and
    this build's verdict."""
    rows: list[list[object]] = []
    batched = [r for r in results if r["poll_mode"] in (None, "batched")]
    this = {r["case"]: r for r in batched if r["build"] == "this"}
    other = {r["case"]: r for r in batched if r["build"] != "this"}

    def add(case: str, what: str, key: str, fmt: str, limit: float) -> None:
        if case not in this:
            return
        mine = this[case]
        value = mine.get(key)
        passed = value is not None and value <= limit and mine["ok"]
        rows.append(
            [
                f"{mine['connections']:,} syncs",
                what,
                _row(other.get(case), key, fmt),
                _row(mine, key, fmt),
                "pass" if passed else "FAIL",
            ]
        )

    add("10k", f"peak RSS ≤ {MAX_RSS_MB_10K:g} MB", "peak_rss_mb", ".1f", MAX_RSS_MB_10K)
    add("10k", f"CPU ≤ {MAX_CPU_S_10K:g} s", "cpu_s", ".2f", MAX_CPU_S_10K)
    add(
        "10k",
        f"first trigger answered ≤ {MAX_FIRST_TRIGGER_S_10K:g} s after run_started",
        "first_trigger_s",
        ".2f",
        MAX_FIRST_TRIGGER_S_10K,
    )
    add(
        "100k",
        f"peak RSS ≤ {MAX_RSS_MB_100K:g} MB, all succeed",
        "peak_rss_mb",
        ".1f",
        MAX_RSS_MB_100K,
    )
    for case in ("1k", "10k", "100k"):
        add(
            case,
            f"requests per sync ≤ {MAX_REQUESTS_PER_SYNC:g}",
            "requests_per_sync",
            ".3f",
            MAX_REQUESTS_PER_SYNC,
        )
    add(
        "1k",
        f"wall ÷ (slowest + poll) ≤ {MAX_WALL_OVER_FLOOR_1K:g}",
        "wall_over_slowest_plus_poll",
        ".3f",
        MAX_WALL_OVER_FLOOR_1K,
    )
    for r in results:
        if not r["ok"]:
            rows.append(
                [
                    f"{r['connections']:,} syncs",
                    f"all succeeded ({r['build']}, {r['poll_mode'] or 'default'})",
                    "",
                    f"{r['succeeded']:,}",
                    "FAIL",
                ]
            )
    return rows


def report(results: Sequence[Mapping[str, Any]]) -> str:
    headers = [
        "case",
        "build",
        "polling",
        "store",
        "ok",
        "wall s",
        "in-run s",
        "slowest s",
        "wall ÷ (slowest+poll)",
        "req/sync",
        "CPU s",
        "peak RSS MB",
        "first trigger s",
        "first trigger from start s",
        "sim CPU s",
    ]
    rows = [
        [
            f"{r['connections']:,} × {r['sync_seconds'][0]:g}–{r['sync_seconds'][1]:g} s, "
            f"{r['workspaces']} ws, poll {r['poll_interval_s']:g} s",
            r.get("build", "this"),
            r["poll_mode"] or "default",
            r.get("store", "sqlite"),
            f"{r['succeeded']:,}",
            r["wall_s"],
            r["in_run_s"],
            r["slowest_sync_s"],
            f"{r['wall_over_slowest_plus_poll']:.3f}",
            f"{r['requests_per_sync']:.3f}",
            r["cpu_s"],
            r["peak_rss_mb"],
            r["first_trigger_s"],
            r.get("first_trigger_from_start_s"),
            r["simulator_cpu_s"],
        ]
        for r in results
    ]
    lines = ["## Scale: airbyte-fleet alone, one process, fresh simulator per case", ""]
    lines += [table(headers, rows), "", "Requests by route (counted at the simulator):", ""]
    for r in results:
        routes = ", ".join(f"{n:,} {route}" for route, n in r["by_route"].items())
        where = f"{r['case']} / {r['poll_mode'] or 'default'} / {r['build']} / {r.get('store', 'sqlite')}"
        lines.append(f"- {where}: {routes}")
    lines.append("")
    for r in results:
        if not r["ok"]:
            lines.append(
                f"- {r['case']} / {r['build']} did not complete (rc {r['returncode']}): "
                f"{r.get('error')}"
            )
    lines += ["", "Peak RSS = intercept + slope × syncs (least squares, batched cases):", ""]
    for build, line in _fits(results).items():
        if line is None:
            lines.append(f"- {build}: needs two sizes that completed")
        else:
            lines.append(
                f"- {build}: **{line['intercept_mb']:g} MB + {line['mb_per_1000_syncs']:g} MB "
                f"per 1,000 syncs** (sizes {', '.join(f'{s:,}' for s in line['sizes'])}; "
                f"largest residual {line['largest_residual_mb']:g} MB)"
            )
    lines += [
        "",
        table(["case", "target", "compared (before)", "this build", "verdict"], targets(results)),
        "",
    ]
    return "\n".join(lines)


def offers_database_url(fleet: Path) -> bool:
    """Whether *fleet*'s ``run --help`` lists ``--database-url``."""
    help_text = subprocess.run(
        [str(fleet), "run", "--help"],
        capture_output=True,
        text=True,
        env=clean_env({"COLUMNS": "200"}),
        check=False,
    ).stdout
    return "--database-url" in help_text


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "").replace(",", "")) for part in text.split(",") if part]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"sizes are {', '.join(str(s) for s in SIZES)}; not {unknown}"
        )
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=list(DEFAULT_SIZES),
        metavar="N,N",
        help="comma list of 100, 1000, 10000, 100000 (default: 100,1000,10000)",
    )
    parser.add_argument(
        "--modes",
        default="batched",
        help="comma list of poll modes to run each size with (default: batched)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run every case N times (with --compare, the two builds alternating each time)",
    )
    parser.add_argument(
        "--sync-seconds",
        type=_pair,
        metavar="LOW:HIGH",
        help="override every size's sync durations (quick checks of the script itself)",
    )
    parser.add_argument(
        "--poll", type=float, metavar="SECONDS", help="override every size's poll interval"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="PATH",
        help="another build's airbyte-fleet executable, run case by case beside this one",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="run every case with the PostgreSQL run store at URL (a fresh, empty database); "
        "default: the SQLite journal in each case's state directory",
    )
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="with --database-url: run each case on the SQLite journal too, just before it, so "
        "both stores meet the same machine load",
    )
    args = parser.parse_args(argv)
    if args.side_by_side and not args.database_url:
        print("--side-by-side compares with PostgreSQL: give --database-url too", file=sys.stderr)
        return 2
    if args.database_url:
        # Measured with SQLite, a build without the flag would only look like a PostgreSQL row.
        for fleet in [FLEET, *([args.compare] if args.compare is not None else [])]:
            if not offers_database_url(fleet):
                print(
                    f"{fleet} run does not offer --database-url; leave --database-url out, or "
                    "compare with a build that has it",
                    file=sys.stderr,
                )
                return 2

    offered = fleet_poll_modes()
    wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    # A build without --poll-mode polls its own way: one row, no flag.
    modes: list[str | None] = [m for m in wanted if m in offered] or [None]
    sizes = [
        replace(
            SIZES[n],
            sync_seconds=args.sync_seconds or SIZES[n].sync_seconds,
            poll_s=args.poll or SIZES[n].poll_s,
        )
        for n in args.sizes
    ]
    stores: list[str | None] = [args.database_url or None]
    if args.side_by_side:
        stores.insert(0, None)
    cases = [
        Case(size, mode, args.seed, database_url=url)
        for size in sizes
        for mode in modes
        for url in stores
    ]
    if args.compare is not None:
        cases = [
            c
            for case in cases
            for c in (
                Case(
                    case.size,
                    case.mode,
                    case.seed,
                    args.compare,
                    "compared",
                    database_url=case.database_url,
                ),
                case,
            )
        ]
    cases = cases * max(1, args.repeat)
    results = []
    for case in cases:
        with step(f"airbyte-fleet {case.label}"):
            results.append(run_case(case))
    text = report(results)
    print(text)
    (OUT / "scale.md").write_text(text + "\n")
    write_json(
        OUT / "scale.json",
        {
            "fleet_poll_modes_offered": offered,
            "machine": machine(),
            "cases": results,
            "fit": _fits(results),
        },
    )
    print(f"(written to {OUT / 'scale.json'})", file=sys.stderr)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
