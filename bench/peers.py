"""airbyte-fleet against its peers, side by side in one run on the same simulator.

Each tool gets a fresh simulator process (48 connections, 10 s syncs, one workspace, seed 1)
and is driven the way its users drive it, polling every 5 s:

* airbyte-fleet: ``airbyte-fleet run --connection id,... --poll-interval 5s
  --max-concurrency 48 --output json`` (and ``--poll-mode batched|per-job`` when the CLI
  offers it; each mode is a row);
* Paradime: ``paradime run airbyte-sync --connection-ids id,... --job-type sync --json``
  (PyPI ``paradime-io``, own virtualenv; it polls every 5 s, fixed);
* Dagster: ``AirbyteWorkspace(...).get_client().sync_and_poll(connection_id)`` once per
  connection from a ``ThreadPoolExecutor`` (default size and 48 threads), ``poll_interval=5``
  (PyPI ``dagster-airbyte``, own virtualenv).

HTTP requests are counted at the simulator (``GET /_simulator/stats`` before and after; the
harness's own listing is outside that window). Wall time is spawn to exit of the tool's process;
CPU and peak RSS come from ``wait4``. Prints Markdown tables and writes ``bench/out/peers.json``.

    .venv/bin/python bench/peers.py            # or: make bench
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _common import (
    CLIENT_ID,
    CLIENT_SECRET,
    FLEET,
    OUT,
    SimProcess,
    SimSpec,
    Usage,
    Venv,
    clean_env,
    ensure_venv,
    fleet_env,
    fleet_poll_modes,
    fleet_result,
    machine,
    ratio,
    request_delta,
    run_measured,
    step,
    table,
    write_json,
)

PARADIME = Venv("paradime", ["paradime-io==6.9.0"])
DAGSTER = Venv("dagster", ["dagster-airbyte==0.29.27", "dagster==1.13.27"])
WORK = OUT / "peers"
RUN_TIMEOUT_S = 900.0
MIN_SPEEDUP_VS_PARADIME = 5.0  # the target


@dataclass
class Row:
    """One measured (or impossible) run of one tool."""

    tool: str
    how: str
    ok: bool = False
    reason: str | None = None
    wall_s: float | None = None
    in_run_s: float | None = None  # the tool's own sync-phase time, where it reports one
    requests: int | None = None
    by_route: dict[str, int] = field(default_factory=dict)
    outside_simulator: dict[str, int] = field(default_factory=dict)
    succeeded: int | None = None
    syncs: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    simulator_cpu_s: float | None = None
    note: str | None = None

    @property
    def per_sync(self) -> float | None:
        if self.requests is None or not self.syncs:
            return None
        return self.requests / self.syncs

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["requests_per_sync"] = None if self.per_sync is None else round(self.per_sync, 2)
        for key in ("wall_s", "in_run_s", "simulator_cpu_s"):
            if isinstance(data[key], float):
                data[key] = round(data[key], 3)
        return data


Build = Callable[[SimProcess, list[dict[str, Any]], Path], tuple[list[str], dict[str, str]]]
Parse = Callable[[Row, Path, Path, Usage], None]


def measure(
    row: Row,
    spec: SimSpec,
    build: Build,
    parse: Parse,
    *,
    shim: ConfigApiShim | None = None,
) -> Row:
    """Fresh simulator, the tool's run between two stats snapshots, then its own figures."""
    workdir = WORK / _slug(f"{row.tool}-{row.how}")
    with SimProcess(spec, workdir) as sim:
        connections = sim.connections()
        if shim is not None:
            shim.load(connections)
        argv, env = build(sim, connections, workdir)
        before = sim.stats()
        usage = run_measured(
            argv,
            env=env,
            cwd=workdir / "cwd",
            stdout=workdir / "stdout",
            stderr=workdir / "stderr",
            timeout=RUN_TIMEOUT_S,
        )
        after = sim.stats()
    row.simulator_cpu_s = sim.cpu_s
    row.usage = usage.as_dict()
    row.wall_s = usage.wall_s
    row.by_route = request_delta(before, after)
    row.requests = sum(row.by_route.values())
    row.syncs = len(connections)
    if shim is not None:
        row.outside_simulator = shim.take_counts()
    parse(row, workdir / "stdout", workdir / "stderr", usage)
    if usage.timed_out:
        row.ok, row.reason = False, f"killed after {RUN_TIMEOUT_S:.0f} s"
    return row


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text).strip("-").lower()


def _stderr_tail(path: Path, lines: int = 3) -> str:
    tail = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(tail[-lines:])[-600:]


# -- airbyte-fleet ----------------------------------------------------------------------------


def fleet_row(spec: SimSpec, poll_s: float, mode: str | None) -> Row:
    how = f"--poll-mode {mode}" if mode else "per-job (no --poll-mode yet)"

    def build(
        sim: SimProcess, connections: list[dict[str, Any]], workdir: Path
    ) -> tuple[list[str], dict[str, str]]:
        ids = ",".join(c["connectionId"] for c in connections)
        argv = [
            str(FLEET),
            "run",
            "--connection",
            ids,
            "--poll-interval",
            f"{poll_s:g}s",
            "--max-concurrency",
            str(len(connections)),
            "--output",
            "json",
            "--state-dir",
            str(workdir / "state"),
        ]
        if mode:
            argv += ["--poll-mode", mode]
        return argv, fleet_env(sim)

    def parse(row: Row, stdout: Path, stderr: Path, usage: Usage) -> None:
        result = fleet_result(stdout)
        counts = result.get("counts", {})
        row.succeeded = int(counts.get("succeeded", 0))
        row.in_run_s = result.get("duration_s")
        row.ok = bool(result) and row.succeeded == row.syncs
        if not row.ok:
            row.reason = f"rc {usage.returncode}: {_stderr_tail(stderr)}"

    return measure(Row("airbyte-fleet", how), spec, build, parse)


# -- Paradime -----------------------------------------------------------------------------


def paradime_row(spec: SimSpec) -> Row:
    row = Row("paradime", "run airbyte-sync (6 threads = cpu+4)")
    if PARADIME.error:
        row.reason = f"not installed: {PARADIME.error}"
        return row
    row.how = f"paradime-io {PARADIME.versions.get('paradime-io', '?')} run airbyte-sync"

    def build(
        sim: SimProcess, connections: list[dict[str, Any]], workdir: Path
    ) -> tuple[list[str], dict[str, str]]:
        home = workdir / "home"  # no ~/.paradime credentials file, no version cache elsewhere
        home.mkdir(parents=True, exist_ok=True)
        env = clean_env(
            {
                "HOME": str(home),
                "AIRBYTE_CLIENT_ID": CLIENT_ID,
                "AIRBYTE_CLIENT_SECRET": CLIENT_SECRET,
                "AIRBYTE_BASE_URL": sim.api,
                "PARADIME_DISABLE_VERSION_CHECK": "1",
                "COLUMNS": "120",
            }
        )
        ids = ",".join(c["connectionId"] for c in connections)
        paradime = PARADIME.python.parent / "paradime"
        argv = [str(paradime), "run", "airbyte-sync", "--connection-ids", ids]
        return [*argv, "--job-type", "sync", "--json"], env

    def parse(row: Row, stdout: Path, stderr: Path, usage: Usage) -> None:
        # --json prints a banner and a table first; the JSON object is the last line.
        lines = [ln for ln in stdout.read_text(errors="replace").splitlines() if ln.strip()]
        result: dict[str, Any] = {}
        if lines and lines[-1].lstrip().startswith("{"):
            result = json.loads(lines[-1])
        results = result.get("results", [])
        row.succeeded = sum("SUCCESS" in str(text) for text in results)
        row.ok = bool(result.get("success")) and row.succeeded == row.syncs
        if not row.ok:
            error = result.get("error") or _stderr_tail(stderr)
            row.reason = f"rc {usage.returncode}: {error}"

    return measure(row, spec, build, parse)


# -- Dagster ------------------------------------------------------------------------------


class ConfigApiShim:
    """``POST /api/v1/connections/get`` (Airbyte's Configuration API), which the simulator lacks.

    dagster-airbyte's ``AirbyteClient.sync_and_poll`` starts with that call and retries a 404
    three times, then raises; everything else it does is in the public API the simulator serves.
    This stand-in answers it from the connections the harness listed before the measurement,
    reshaped to the Configuration API's ``ConnectionRead``, and counts what it answered (shown as
    requests outside the simulator). Used only when the unaided probe has failed.
    """

    def __init__(self) -> None:
        self._views: dict[str, dict[str, Any]] = {}
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        shim = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                route = f"POST {self.path} (config API, bench shim)"
                with shim._lock:
                    shim._counts[route] = shim._counts.get(route, 0) + 1
                view = shim._views.get(str(body.get("connectionId")))
                if self.path != "/api/v1/connections/get" or view is None:
                    self._send(404, {"message": "not found"})
                else:
                    self._send(200, _connection_read(view))

            def _send(self, status: int, payload: Mapping[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/api/v1"

    def load(self, connections: Sequence[Mapping[str, Any]]) -> None:
        self._views = {str(c["connectionId"]): dict(c) for c in connections}
        self.take_counts()

    def take_counts(self) -> dict[str, int]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _connection_read(view: Mapping[str, Any]) -> dict[str, Any]:
    streams = view.get("configurations", {}).get("streams", [])
    destination_modes = {
        "full_refresh_overwrite": "overwrite",
        "incremental_append": "append",
        "incremental_deduped_history": "append_dedup",
    }
    return {
        "connectionId": view["connectionId"],
        "name": view.get("name", ""),
        "namespaceDefinition": view.get("namespaceDefinition", "destination"),
        "prefix": "",
        "sourceId": view.get("sourceId"),
        "destinationId": view.get("destinationId"),
        "status": view.get("status", "active"),
        "syncCatalog": {
            "streams": [
                {
                    "stream": {
                        "name": s["name"],
                        "namespace": s.get("namespace"),
                        "jsonSchema": {"type": "object", "properties": {}},
                        "supportedSyncModes": ["full_refresh", "incremental"],
                    },
                    "config": {
                        "syncMode": "incremental"
                        if str(s.get("syncMode", "")).startswith("incremental")
                        else "full_refresh",
                        "destinationSyncMode": destination_modes.get(
                            str(s.get("syncMode")), "overwrite"
                        ),
                        "selected": True,
                        "aliasName": s["name"],
                    },
                }
                for s in streams
            ]
        },
    }


def dagster_row(
    spec: SimSpec, poll_s: float, threads: int | None, shim: ConfigApiShim | None, how: str
) -> Row:
    row = Row("dagster-airbyte", how)
    if DAGSTER.error:
        row.reason = f"not installed: {DAGSTER.error}"
        return row

    def build(
        sim: SimProcess, connections: list[dict[str, Any]], workdir: Path
    ) -> tuple[list[str], dict[str, str]]:
        ids_file = workdir / "connection-ids.txt"
        ids_file.write_text("\n".join(c["connectionId"] for c in connections) + "\n")
        home = workdir / "dagster-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = clean_env({"DAGSTER_HOME": str(home), "HOME": str(workdir / "home")})
        argv = [
            str(DAGSTER.python),
            str(Path(__file__).resolve()),
            "_dagster-worker",
            "--rest-api-base-url",
            sim.api,
            "--configuration-api-base-url",
            shim.url if shim else f"{sim.root}/api/v1",
            "--workspace-id",
            str(connections[0]["workspaceId"]),
            "--poll-interval",
            str(poll_s),
            "--threads",
            str(threads or 0),
            "--ids-file",
            str(ids_file),
        ]
        return argv, env

    def parse(row: Row, stdout: Path, stderr: Path, usage: Usage) -> None:
        lines = [ln for ln in stdout.read_text(errors="replace").splitlines() if ln.strip()]
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        row.succeeded = int(result.get("succeeded", 0))
        row.in_run_s = result.get("sync_phase_wall_s")
        row.ok = usage.returncode == 0 and row.succeeded == row.syncs
        if not row.ok:
            errors = result.get("errors") or [_stderr_tail(stderr)]
            row.reason = f"{row.syncs - row.succeeded} of {row.syncs} raised: {errors[0]}"

    return measure(row, spec, build, parse, shim=shim)


def dagster_worker(argv: Sequence[str]) -> int:
    """Runs under the Dagster virtualenv: one sync_and_poll per connection, in a thread pool."""
    parser = argparse.ArgumentParser(prog="peers.py _dagster-worker")
    parser.add_argument("--rest-api-base-url", required=True)
    parser.add_argument("--configuration-api-base-url", required=True)
    parser.add_argument("--workspace-id", required=True)
    parser.add_argument("--poll-interval", type=float, required=True)
    parser.add_argument("--threads", type=int, default=0, help="0: ThreadPoolExecutor's default")
    parser.add_argument("--ids-file", type=Path, required=True)
    args = parser.parse_args(argv)
    ids = [line.strip() for line in args.ids_file.read_text().splitlines() if line.strip()]

    # Only importable in the Dagster virtualenv this function runs in.
    from dagster_airbyte import AirbyteWorkspace  # type: ignore[import-not-found]
    from dagster_airbyte.translator import AirbyteConnection  # type: ignore[import-not-found]

    # The resource exactly as its docstring shows for self-managed Airbyte, plus poll_interval.
    workspace = AirbyteWorkspace(
        rest_api_base_url=args.rest_api_base_url,
        configuration_api_base_url=args.configuration_api_base_url,
        workspace_id=args.workspace_id,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        poll_interval=args.poll_interval,
    )
    client = workspace.get_client()

    def one(connection_id: str) -> str:
        # What AirbyteWorkspace.sync_and_poll(context), the body of an @airbyte_assets
        # multi-asset, does: the client's sync_and_poll, then read the connection's streams.
        output = client.sync_and_poll(connection_id=connection_id)
        AirbyteConnection.from_connection_details(connection_details=output.connection_details)
        return str(output.job_details.get("status"))

    threads = args.threads or min(32, (os.cpu_count() or 1) + 4)  # the executor's default
    succeeded, errors = 0, []
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.threads or None) as pool:
        futures = [pool.submit(one, connection_id) for connection_id in ids]
        for future in as_completed(futures):
            try:
                status = future.result()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            else:
                succeeded += status == "succeeded"
    wall = time.perf_counter() - started
    unique = list(dict.fromkeys(errors))[:3]
    result = {"succeeded": succeeded, "errors": unique, "threads": threads}
    print(json.dumps({**result, "sync_phase_wall_s": round(wall, 3)}), flush=True)
    return 0 if succeeded == len(ids) else 1


# -- report -------------------------------------------------------------------------------


def _short_routes(by_route: Mapping[str, int], outside: Mapping[str, int]) -> str:
    parts = [f"{n} {route}" for route, n in by_route.items()]
    parts += [f"{n} {route}" for route, n in outside.items()]
    return ", ".join(parts)


def report(rows: Sequence[Row], fleet_rows: Sequence[Row], meta: Mapping[str, Any]) -> str:
    lines = [
        f"## Peers: {meta['connections']} connections, {meta['sync_seconds']} s syncs, "
        f"poll every {meta['poll_interval_s']:g} s, fresh simulator per tool",
        "",
    ]
    body = []
    for row in rows:
        total = None
        if row.requests is not None:
            total = row.requests + sum(row.outside_simulator.values())
        body.append(
            [
                row.tool,
                row.how,
                f"{row.succeeded}/{row.syncs}" if row.syncs else "–",
                row.wall_s,
                row.in_run_s,
                total,
                None if total is None or not row.syncs else total / row.syncs,
                row.usage.get("cpu_s"),
                row.usage.get("max_rss_mb"),
                row.simulator_cpu_s,
            ]
        )
    headers = [
        "tool",
        "how",
        "ok",
        "wall s",
        "in-run s",
        "HTTP req",
        "req/sync",
        "CPU s",
        "peak RSS MB",
        "sim CPU s",
    ]
    lines += [table(headers, body), ""]
    lines += ["Requests by route (counted at the simulator; shim counts marked):", ""]
    for row in rows:
        if row.by_route or row.outside_simulator:
            routes = _short_routes(row.by_route, row.outside_simulator)
            lines.append(f"- {row.tool} ({row.how}): {routes}")
    lines.append("")
    failed = [row for row in rows if not row.ok]
    if failed:
        lines += ["Did not complete:", ""]
        lines += [f"- {row.tool} ({row.how}): {row.reason}" for row in failed]
        lines.append("")

    ratio_rows = []
    for fleet in fleet_rows:
        for peer in rows:
            if peer.tool == "airbyte-fleet":
                continue
            if not (peer.ok and fleet.ok):
                missing = ["n/a: did not complete (above)"] * 3
                ratio_rows.append([fleet.how, f"{peer.tool} ({peer.how})", *missing])
                continue
            peer_total = (peer.requests or 0) + sum(peer.outside_simulator.values())
            ratio_rows.append(
                [
                    fleet.how,
                    f"{peer.tool} ({peer.how})",
                    _times(ratio(peer.wall_s, fleet.wall_s)),
                    _times(ratio(peer.in_run_s, fleet.in_run_s)),
                    _times(ratio(peer_total, fleet.requests)),
                ]
            )
    if ratio_rows:
        headers = ["airbyte-fleet", "peer", "peer wall ÷ fleet wall", "in-run ÷ in-run"]
        headers += ["peer req ÷ fleet req"]
        lines += [table(headers, ratio_rows), ""]
    verdicts = []
    for fleet in fleet_rows:
        for peer in rows:
            if peer.tool == "paradime" and peer.ok and fleet.ok:
                value = ratio(peer.wall_s, fleet.wall_s) or 0.0
                passed = value >= MIN_SPEEDUP_VS_PARADIME
                verdicts.append([fleet.how, f"{value:.2f}×", "pass" if passed else "FAIL"])
    if verdicts:
        headers = ["airbyte-fleet", f"target: ≥ {MIN_SPEEDUP_VS_PARADIME:g}× Paradime's wall"]
        lines += [table([*headers, "verdict"], verdicts), ""]
    return "\n".join(lines)


def _times(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["_dagster-worker"]:
        return dagster_worker(args_in[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--sync-seconds", type=float, default=10.0)
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip", action="append", default=[], choices=("paradime", "dagster"))
    parser.add_argument(
        "--dagster-threads",
        default="default,48",
        help="comma list of pool sizes; 'default' is ThreadPoolExecutor's min(32, cpu+4)",
    )
    args = parser.parse_args(args_in)
    spec = SimSpec(args.connections, (args.sync_seconds, args.sync_seconds), 1, args.seed)
    poll = args.poll_interval
    modes = fleet_poll_modes()
    fleet_modes: list[str | None] = [m for m in ("batched", "per-job") if m in modes] or [None]

    if "paradime" not in args.skip:
        with step("paradime-io virtualenv"):
            ensure_venv(PARADIME, ["paradime-io"], log=WORK / "install-paradime.log")
    if "dagster" not in args.skip:
        with step("dagster-airbyte virtualenv"):
            ensure_venv(DAGSTER, ["dagster-airbyte", "dagster"], log=WORK / "install-dagster.log")

    rows: list[Row] = []
    for mode in fleet_modes:
        with step(f"airbyte-fleet {mode or 'default'}"):
            rows.append(fleet_row(spec, poll, mode))
    if "paradime" not in args.skip:
        with step("paradime"):
            rows.append(paradime_row(spec))
    if "dagster" not in args.skip:
        rows += dagster_rows(spec, poll, args.dagster_threads)

    fleet_rows = [row for row in rows if row.tool == "airbyte-fleet"]
    meta = {
        "connections": args.connections,
        "sync_seconds": args.sync_seconds,
        "poll_interval_s": poll,
        "workspaces": 1,
        "seed": args.seed,
        "fleet_poll_modes_offered": modes,
        "versions": {"paradime": PARADIME.versions, "dagster": DAGSTER.versions},
        "machine": machine(),
    }
    text = report(rows, fleet_rows, meta)
    print(text)
    write_json(OUT / "peers.json", {**meta, "rows": [row.as_dict() for row in rows]})
    (OUT / "peers.md").write_text(text + "\n")
    print(f"(written to {OUT / 'peers.json'})", file=sys.stderr)
    return 0 if all(row.ok for row in fleet_rows) else 1


def dagster_rows(spec: SimSpec, poll: float, threads_arg: str) -> list[Row]:
    sizes: list[int | None] = [
        None if part.strip() == "default" else int(part)
        for part in threads_arg.split(",")
        if part.strip()
    ]
    default_size = min(32, (os.cpu_count() or 1) + 4)

    def label(size: int | None) -> str:
        threads = f"{size} threads" if size else f"default pool = {default_size} threads"
        return f"AirbyteWorkspace.sync_and_poll, {threads}"

    # First as any user would: straight at the simulator. Two connections are enough to see it.
    probe_spec = SimSpec(2, spec.sync_seconds, 1, spec.seed)
    with step("dagster-airbyte probe, unaided"):
        probe = dagster_row(probe_spec, poll, None, None, "unaided probe, 2 connections")
    if probe.ok:
        rows = []
        for size in sizes:
            with step(f"dagster-airbyte {label(size)}"):
                rows.append(dagster_row(spec, poll, size, None, label(size)))
        return rows
    rows = [probe]
    shim = ConfigApiShim()
    try:
        for size in sizes:
            with step(f"dagster-airbyte {label(size)} + config-API shim"):
                rows.append(dagster_row(spec, poll, size, shim, label(size) + " + shim"))
    finally:
        shim.close()
    return rows


if __name__ == "__main__":
    sys.exit(main())
