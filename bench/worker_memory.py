"""The worker's memory over many small runs: does ``airbyte-fleet serve`` stay flat?

Starts a simulator and ``airbyte-fleet serve`` (real processes, the worker with its journal in
a scratch folder), then submits ``--runs`` small runs one after another over HTTP (``POST
/runs``, 2 or 3 quick syncs each, alternating), waiting for each to finish (``GET /runs/{id}``)
before the next. The worker's resident memory (``VmRSS`` from ``/proc/PID/status``) is sampled
every ``--every`` runs. Reported: the samples, and the least-squares slope in KB per run after
the warm-up (the first ``--warm-up`` runs), which is flat when below ``--flat-kb``.

At the end of the warm-up, halfway and at the end, the worker also accounts for its memory
(``bench/_trace/sitecustomize.py``, loaded through its ``PYTHONPATH``, on SIGUSR1, after the RSS
sample): resident size (anonymous and file-backed), glibc's malloc (in use, freed but kept), the
bytes SQLite holds (libsqlite3's own count) and Python's live blocks. The worker imports the
tree on the caller's ``PYTHONPATH`` (behind the hook), so a before and an after can be measured
one after the other: ``PYTHONPATH=OTHER/src .venv/bin/python bench/worker_memory.py``.

``--trace`` also runs the worker under tracemalloc: at the same three marks, a snapshot and a
census of live objects by type; the allocation sites and the types that grew in both halves are
printed, with tracebacks and who holds the newest objects. Tracing slows the worker and adds to
its RSS, so the RSS figures of a traced run are not the ones to quote.

    .venv/bin/python bench/worker_memory.py                 # 500 runs, ~2–4 min
    .venv/bin/python bench/worker_memory.py --trace         # what grows, file and line

Writes ``bench/out/worker_memory.json`` (and ``.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import (
    FLEET,
    OUT,
    SimProcess,
    SimSpec,
    fleet_env,
    machine,
    proc_memory_mb,
    table,
    write_json,
)

WORK = OUT / "worker_memory"
TRACE_HOOK = Path(__file__).resolve().parent / "_trace"
TOKEN = "bench-worker-token-0123456789abcdef"  # a throwaway for a loopback worker

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Worker:
    """``airbyte-fleet serve`` in its own process, on a free loopback port."""

    def __init__(
        self, env: dict[str, str], workdir: Path, fleet: Path, extra: Sequence[str] = ()
    ) -> None:
        self.workdir = workdir
        shutil.rmtree(workdir / "state", ignore_errors=True)
        (workdir / "cwd").mkdir(parents=True, exist_ok=True)
        self._out = (workdir / "worker.out").open("wb")
        self._err = (workdir / "worker.err").open("wb")
        self.proc = subprocess.Popen(
            [
                str(fleet),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--state-dir",
                str(workdir / "state"),
                *extra,
            ],
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=workdir / "cwd",
            start_new_session=True,
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"listening on (\S+)", (self.workdir / "worker.out").read_text())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = (self.workdir / "worker.err").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the worker did not start: {tail}")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with _DIRECT.open(request, timeout=60) as reply:
            return json.loads(reply.read())

    def run(self, connection_ids: Sequence[str], poll: str) -> dict[str, Any]:
        """Submit one run and wait for its end; returns its result."""
        body = {
            "selection": {"connections": list(connection_ids)},
            "options": {"poll_interval": poll, "max_concurrency": len(connection_ids)},
        }
        run_id = self.call("POST", "/runs", body)["run_id"]
        wait = 0.01
        while True:
            view = self.call("GET", f"/runs/{run_id}")
            if view["state"] == "finished":
                result: dict[str, Any] = view["result"]
                return result
            # A harness waiting for a run, not a test: back off gently up to the syncs' scale.
            time.sleep(wait)
            wait = min(wait * 2, 0.1)

    def rss_mb(self) -> float:
        return proc_memory_mb(self.proc.pid)[0]

    def anon_mb(self) -> float:
        """The resident pages no file backs (the heap), without the libraries' code paged in."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def snapshot(self, trace_dir: Path, number: int, timeout: float = 300.0) -> Path:
        self.proc.send_signal(signal.SIGUSR1)
        done = trace_dir / f"snapshot-{number}.done"
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the worker wrote no tracemalloc snapshot")
            time.sleep(0.1)
        return trace_dir / f"snapshot-{number}.pickle"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()
        self._err.close()


def slope_kb_per_run(samples: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares slope of RSS (MB) on runs, in KB per run."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_x = sum(x for x, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in samples)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in samples)
    return sxy / sxx * 1024


def growth(snapshots: Sequence[Path], top: int) -> list[dict[str, Any]]:
    """The allocation sites (by traceback) whose live memory grew in both halves of the
    measured runs, most growth first: something that keeps growing, not a cache filling up."""
    first, middle, last = (tracemalloc.Snapshot.load(str(path)) for path in snapshots)
    early = {stat.traceback: stat for stat in middle.compare_to(first, "traceback")}
    rows = []
    for stat in last.compare_to(middle, "traceback"):
        before = early.get(stat.traceback)
        if stat.size_diff <= 0 or before is None or before.size_diff <= 0:
            continue
        frames = [f"{frame.filename}:{frame.lineno}" for frame in stat.traceback]
        rows.append(
            {
                "grew_kb_first_half": round(before.size_diff / 1024, 1),
                "grew_kb_second_half": round(stat.size_diff / 1024, 1),
                "blocks_grew": before.count_diff + stat.count_diff,
                "now_kb": round(stat.size / 1024, 1),
                # Oldest frame first, as tracemalloc (and a Python traceback) lists them.
                "where": frames[-1] if frames else "?",
                "traceback": frames,
            }
        )
    rows.sort(key=lambda row: -row["grew_kb_second_half"])
    return rows[:top]


def type_growth(trace_dir: Path, top: int) -> list[dict[str, Any]]:
    """Types whose live objects grew in number in both halves of the measured runs."""
    first, middle, last = (
        json.loads((trace_dir / f"types-{n}.json").read_text()) for n in (1, 2, 3)
    )
    rows = [
        {
            "type": name,
            "more_first_half": middle.get(name, 0) - first.get(name, 0),
            "more_second_half": count - middle.get(name, 0),
            "now": count,
        }
        for name, count in last.items()
    ]
    rows = [r for r in rows if r["more_first_half"] > 0 and r["more_second_half"] > 0]
    rows.sort(key=lambda r: -r["more_second_half"])
    return rows[:top]


def _chains(node: dict[str, Any], prefix: str = "") -> list[str]:
    """Referrer chains as lines: object <- holder <- its holder ..."""
    here = f"{prefix} <- {node['held_by']}"
    if not node["which"]:
        return [here]
    return [line for child in node["which"] for line in _chains(child, here)]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    spec = SimSpec(args.connections, (args.sync_min, args.sync_max), 1, args.seed)
    WORK.mkdir(parents=True, exist_ok=True)
    trace_dir = WORK / "trace"
    shutil.rmtree(trace_dir, ignore_errors=True)
    samples: list[tuple[int, float]] = []
    anon: list[tuple[int, float]] = []
    failures: list[str] = []
    growth_rows: list[dict[str, Any]] = []
    type_rows: list[dict[str, Any]] = []
    holders: list[dict[str, Any]] = []
    accounts: list[dict[str, Any]] = []
    started = time.perf_counter()
    with SimProcess(spec, WORK) as sim:
        ids = [c["connectionId"] for c in sim.connections()]
        trace_dir.mkdir(parents=True)
        env = fleet_env(sim) | {
            "AIRBYTE_FLEET_API_TOKEN": TOKEN,
            # The hook accounts for the memory at three marks (and traces it with --trace).
            # The caller's PYTHONPATH kept after it: a tree other than the installed one can be
            # measured (PYTHONPATH=OTHER/src), the before and after of a change side by side.
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(TRACE_HOOK), os.environ.get("PYTHONPATH", "")) if p
            ),
            "AIRBYTE_FLEET_BENCH_TRACE_DIR": str(trace_dir),
            "AIRBYTE_FLEET_BENCH_TRACE": "1" if args.trace else "0",
        }
        if args.sqlite_cache_kib is not None:
            env["AIRBYTE_FLEET_BENCH_SQLITE_CACHE_KIB"] = str(args.sqlite_cache_kib)
        worker = Worker(env, WORK, args.fleet)
        try:
            samples.append((0, worker.rss_mb()))
            anon.append((0, worker.anon_mb()))
            snapshots: list[Path] = []
            cursor = 0
            for number in range(1, args.runs + 1):
                size = 2 if number % 2 else 3
                chosen = [ids[(cursor + i) % len(ids)] for i in range(size)]
                cursor += size
                result = worker.run(chosen, args.poll)
                if result.get("counts", {}).get("succeeded") != size and len(failures) < 10:
                    failures.append(f"run {number}: {result.get('counts')}")
                if number % args.every == 0:
                    samples.append((number, worker.rss_mb()))
                    anon.append((number, worker.anon_mb()))
                    print(f"  run {number}: {samples[-1][1]:.1f} MB", file=sys.stderr)
                halfway = args.warm_up + (args.runs - args.warm_up) // 2
                # After the RSS sample: the account's full collection must not shape it.
                if number in (args.warm_up, halfway, args.runs):
                    snapshots.append(worker.snapshot(trace_dir, len(snapshots) + 1))
            if len(snapshots) == 3:
                accounts = [
                    json.loads((trace_dir / f"memory-{n}.json").read_text()) for n in (1, 2, 3)
                ]
            if args.trace and len(snapshots) == 3:
                growth_rows = growth(snapshots, args.top)
                type_rows = type_growth(trace_dir, args.top)
                holders = json.loads((trace_dir / "holders-3.json").read_text())
        finally:
            worker.stop()
    after_warm_up = [(n, mb) for n, mb in samples if n >= args.warm_up]
    slope = slope_kb_per_run(after_warm_up)
    anon_slope = slope_kb_per_run([(n, mb) for n, mb in anon if n >= args.warm_up])
    return {
        "runs": args.runs,
        "syncs_per_run": "2 and 3, alternating",
        "sync_seconds": [args.sync_min, args.sync_max],
        "poll_interval": args.poll,
        "warm_up_runs": args.warm_up,
        "traced": args.trace,
        "sqlite_cache_kib": args.sqlite_cache_kib,
        "wall_s": round(time.perf_counter() - started, 1),
        "failures": failures,
        "samples": [
            {"after_runs": n, "rss_mb": round(mb, 2), "anon_mb": round(a, 2)}
            for (n, mb), (_, a) in zip(samples, anon, strict=True)
        ],
        "kb_per_run_after_warm_up": None if slope is None else round(slope, 2),
        "anon_kb_per_run_after_warm_up": None if anon_slope is None else round(anon_slope, 2),
        "flat_kb_per_run": args.flat_kb,
        "flat": slope is not None and slope <= args.flat_kb,
        "growth": growth_rows,
        "type_growth": type_rows,
        "memory_at_snapshots": accounts,
        "package": accounts[0].get("package") if accounts else None,
        "holders": holders,
    }


def _mb(value: int | None, unit: int) -> float | None:
    return None if value is None else round(value / unit, 2)


def report(r: dict[str, Any]) -> str:
    verdict = "flat" if r["flat"] else "GROWS"
    lines = [
        f"## Worker memory: {r['runs']} runs in a row ({r['syncs_per_run']} syncs of "
        f"{r['sync_seconds'][0]:g}–{r['sync_seconds'][1]:g} s, poll {r['poll_interval']})"
        + (" — traced, RSS inflated by tracemalloc" if r["traced"] else "")
        + (
            f" — experiment: SQLite page cache {r['sqlite_cache_kib']} KiB"
            if r["sqlite_cache_kib"] is not None
            else ""
        ),
        "",
        table(
            ["after runs", "worker RSS MB", "of it anonymous MB"],
            [[s["after_runs"], s["rss_mb"], s.get("anon_mb", "–")] for s in r["samples"]],
        ),
        "",
        f"- after the first {r['warm_up_runs']} runs: **{r['kb_per_run_after_warm_up']} KB per "
        f"run** (least squares), {verdict} (flat: ≤ {r['flat_kb_per_run']:g} KB per run); "
        f"anonymous pages alone {r['anon_kb_per_run_after_warm_up']} KB per run",
        f"- wall {r['wall_s']} s; failed runs: {len(r['failures'])}",
        f"- measured: `{r['package']}`",
    ]
    lines += [f"  - {f}" for f in r["failures"]]
    halfway = r["warm_up_runs"] + (r["runs"] - r["warm_up_runs"]) // 2
    marks = [r["warm_up_runs"], halfway, r["runs"]]
    accounts = r["memory_at_snapshots"]
    if accounts:
        lines += [
            "",
            "Where the memory is, after a full collection at three marks (resident anonymous "
            "and file-backed pages from /proc; glibc's malloc from mallinfo2; SQLite's from "
            "libsqlite3's own count; Python's live blocks from the interpreter"
            + (", bytes from tracemalloc" if r["traced"] else "")
            + "):",
            "",
            table(
                [
                    "after run",
                    "RSS MB",
                    "anon / file MB",
                    "malloc in use / free kept MB",
                    "SQLite MB",
                    "Python blocks",
                    "Python MB (traced)",
                ],
                [
                    [
                        mark,
                        _mb(a["rss_kb"], 1024),
                        f"{_mb(a.get('rss_anon_kb'), 1024)} / {_mb(a.get('rss_file_kb'), 1024)}",
                        f"{_mb(a['malloc']['in_use'], 1024 * 1024)} / "
                        f"{_mb(a['malloc']['free_kept'], 1024 * 1024)}"
                        if a.get("malloc")
                        else "–",
                        _mb(a["sqlite_bytes"], 1024 * 1024),
                        a["python_blocks"],
                        _mb(a["python_traced_bytes"], 1024 * 1024),
                    ]
                    for mark, a in zip(marks, accounts, strict=True)
                ],
            ),
        ]
    if r["traced"]:
        lines += [
            "",
            f"Live Python memory that grew in both halves, runs {r['warm_up_runs']}–{halfway} "
            f"and {halfway}–{r['runs']} (tracemalloc after a full collection, by traceback):",
            "",
            table(
                ["grew KB (1st half)", "grew KB (2nd half)", "blocks", "now KB", "allocated at"],
                [
                    [
                        g["grew_kb_first_half"],
                        g["grew_kb_second_half"],
                        g["blocks_grew"],
                        g["now_kb"],
                        g["where"],
                    ]
                    for g in r["growth"]
                ],
            )
            if r["growth"]
            else "(nothing: no site grew in both halves)",
            "",
        ]
        for g in r["growth"][:5]:
            lines.append(f"- {g['grew_kb_second_half']} KB at {g['where']}, called from:")
            lines += [f"    {frame}" for frame in g["traceback"][-2:-9:-1]]
        lines += [
            "",
            "Live objects that grew in number in both halves (gc census, by type):",
            "",
            table(
                ["type", "more (1st half)", "more (2nd half)", "now"],
                [
                    [t["type"], t["more_first_half"], t["more_second_half"], t["now"]]
                    for t in r["type_growth"]
                ],
            )
            if r["type_growth"]
            else "(none)",
            "",
            "Who holds the newest objects of the types that gained most in the second half "
            "(referrer chains, 3 deep; `bench/out/worker_memory/trace/holders-3.json`):",
            "",
        ]
        for entry in r["holders"][:6]:
            lines.append(f"- {entry['type']} (+{entry['more']}):")
            for newest in entry["newest"][-1:]:
                for chain in [c for node in newest["held_by"] for c in _chains(node)][:4]:
                    lines.append(f"    {newest['object'][:60]}{chain}")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--every", type=int, default=50, help="sample RSS every N runs")
    parser.add_argument("--warm-up", type=int, default=100, metavar="RUNS")
    parser.add_argument("--connections", type=int, default=30)
    parser.add_argument("--sync-min", type=float, default=0.05, metavar="SECONDS")
    parser.add_argument("--sync-max", type=float, default=0.2, metavar="SECONDS")
    parser.add_argument("--poll", default="100ms", help="the runs' poll interval")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flat-kb", type=float, default=0.5, metavar="KB")
    parser.add_argument("--trace", action="store_true", help="tracemalloc: what grows")
    parser.add_argument("--top", type=int, default=15, help="lines shown with --trace")
    parser.add_argument("--fleet", type=Path, default=FLEET, help="the airbyte-fleet to run")
    parser.add_argument(
        "--sqlite-cache-kib",
        type=int,
        metavar="KIB",
        help="an experiment: open the worker's SQLite connections with this page cache size "
        "(SQLite's default is 2,000 KiB per connection)",
    )
    args = parser.parse_args(argv)
    result = measure(args)
    result["machine"] = machine()
    text = report(result)
    print(text)
    name = "worker_memory_traced" if args.trace else "worker_memory"
    (OUT / f"{name}.md").write_text(text + "\n")
    write_json(OUT / f"{name}.json", result)
    print(f"(written to {OUT / f'{name}.json'})", file=sys.stderr)
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
