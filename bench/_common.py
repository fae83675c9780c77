"""Shared helpers for the benchmark scripts (standard library only).

Standard library only on purpose: ``peers.py`` re-runs itself under the peers' own virtualenvs
(Dagster's), where airbyte-fleet and its dependencies are not installed.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
VENVS = OUT / "venvs"
FLEET = REPO / ".venv" / "bin" / "airbyte-fleet"

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-secret"  # the simulator's own, nothing real

# Nothing here may leave the machine: every HTTP client that honours proxy variables is sent to a
# closed local port for anything but loopback, so a forgotten call home fails at once instead.
_TRAP_PROXY = "http://127.0.0.1:9"
_LOOPBACK = "127.0.0.1,localhost,::1"

# An opener that never uses a proxy, for the harness's own calls to the simulator.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a measured tool: none of the caller's Airbyte or proxy settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("AIRBYTE_", "PARADIME_", "DAGSTER_"))
        and key.upper() not in {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}
        and key not in {"USE_SERVER_AUTH", "API_ENDPOINT", "API_KEY", "API_SECRET"}
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = _TRAP_PROXY
    env["NO_PROXY"] = env["no_proxy"] = _LOOPBACK
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


# -- the simulator, in its own process -------------------------------------------------------


def _get_json(url: str, token: str | None = None, timeout: float = 120.0) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with _DIRECT.open(request, timeout=timeout) as response:
        return json.loads(response.read())


def _post_json(url: str, body: Mapping[str, Any], timeout: float = 30.0) -> Any:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with _DIRECT.open(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass(frozen=True)
class SimSpec:
    connections: int
    sync_seconds: tuple[float, float]
    workspaces: int = 1
    seed: int = 1
    # Another build's airbyte-fleet to run the simulator from (sim_load.py --simulator).
    simulator: Path | None = None

    def argv(self) -> list[str]:
        low, high = self.sync_seconds
        return [
            str(self.simulator or FLEET),
            "simulate",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--connections",
            str(self.connections),
            "--workspaces",
            str(self.workspaces),
            "--sync-seconds",
            f"{low:g}:{high:g}",
            "--failure-rate",
            "0",
            "--incomplete-rate",
            "0",
            "--seed",
            str(self.seed),
            "--client-id",
            CLIENT_ID,
            "--client-secret",
            CLIENT_SECRET,
        ]


class SimProcess:
    """``airbyte-fleet simulate`` in a child process, so its CPU is never charged to a tool."""

    def __init__(self, spec: SimSpec, log_dir: Path) -> None:
        self.spec = spec
        log_dir.mkdir(parents=True, exist_ok=True)
        self._out_path = log_dir / "simulator.out"
        self._err_path = log_dir / "simulator.err"
        self._proc: subprocess.Popen[bytes] | None = None
        self.root = ""
        self.cpu_s: float | None = None
        self.max_rss_mb: float | None = None
        self.start_s: float | None = None

    # Seeding 100,000 connections takes seconds (more on a busy machine).
    def start(self, timeout: float = 180.0) -> str:
        started = time.perf_counter()
        with self._out_path.open("wb") as out, self._err_path.open("wb") as err:
            self._proc = subprocess.Popen(
                self.spec.argv(), stdout=out, stderr=err, env=clean_env(), start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._out_path.read_text(errors="replace")
            match = re.search(r"listening on (\S+)", text)
            if match:
                self.root = match.group(1)
                self.start_s = time.perf_counter() - started
                return self.root
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"simulator did not start: {self._err_path.read_text(errors='replace')[-2000:]}"
        )

    @property
    def api(self) -> str:
        return f"{self.root}/api/public/v1"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stats(self, *, jobs: bool = True) -> dict[str, Any]:
        """The simulator's counts; ``jobs=False`` leaves out every job's view (25 MB at 100,000
        jobs; a simulator older than that flag sends them anyway)."""
        query = "" if jobs else "?jobs=false"
        result: dict[str, Any] = _get_json(f"{self.root}/_simulator/stats{query}")
        return result

    def cpu_now(self) -> float:
        """CPU seconds (user + system) the simulator has used so far, from /proc."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mb(self) -> tuple[float, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM), in MB."""
        return proc_memory_mb(self.pid)

    def token(self) -> str:
        body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        return str(_post_json(f"{self.api}/applications/token", body)["access_token"])

    def connections(self) -> list[dict[str, Any]]:
        """Every connection, through the public API (the harness's own requests)."""
        token = self.token()
        found: list[dict[str, Any]] = []
        url: str | None = f"{self.api}/connections?limit=100"
        while url:
            page = _get_json(url, token)
            found.extend(page.get("data", []))
            url = page.get("next") or None
        return found

    def stop(self) -> None:
        proc = self._proc
        if proc is None or self.cpu_s is not None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, status, usage = _wait4(proc.pid, timeout=15.0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu_s = usage.ru_utime + usage.ru_stime
            self.max_rss_mb = usage.ru_maxrss / 1024  # KiB on Linux
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self.cpu_s = math.nan

    def __enter__(self) -> SimProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def proc_memory_mb(pid: int) -> tuple[float, float]:
    """A live process's resident memory now and at its peak (VmRSS, VmHWM), in MB."""
    found = {"VmRSS": math.nan, "VmHWM": math.nan}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in found:
            found[name] = int(value.split()[0]) / 1024  # kB
    return found["VmRSS"], found["VmHWM"]


def request_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, int]:
    """Requests per route between two stats snapshots (only routes that changed)."""
    old: Mapping[str, int] = before.get("requests", {})
    new: Mapping[str, int] = after.get("requests", {})
    delta = {route: n - old.get(route, 0) for route, n in new.items()}
    return {route: n for route, n in sorted(delta.items()) if n}


def _parse_java_duration(text: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", text)
    if not match:
        return math.nan
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def planned_durations(spec: SimSpec, jobs: int) -> list[float]:
    """The simulator's planned creation-to-terminal seconds of its first ``jobs`` jobs.

    Replays the simulator's seeded job stream (six draws per job, the first being the
    duration) so the slowest sync is known to the millisecond rather than to Airbyte's whole
    seconds. :func:`slowest_sync` checks the replay against what the simulator reported.
    """
    rng = random.Random(f"jobs:{spec.seed}")
    low, high = spec.sync_seconds
    out: list[float] = []
    for _ in range(jobs):
        out.append(rng.uniform(low, high))
        rng.random()
        rng.random()
        rng.randint(1_000, 2_000_000)
        rng.randint(120, 900)
        rng.randint(1, 5)
    return out


def slowest_sync(spec: SimSpec, jobs: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
    """The longest job (creation to terminal) and how it was obtained ("replay" or "api")."""
    reported = [_parse_java_duration(str(job.get("duration", ""))) for job in jobs]
    reported = [value for value in reported if not math.isnan(value)]
    if not reported:
        return math.nan, "none"
    api_max = max(reported)
    replay_max = max(planned_durations(spec, len(jobs)))
    # Airbyte's duration is floor(end) - floor(start), so it is within a second of the truth.
    if abs(replay_max - api_max) <= 1.0 + 1e-6:
        return replay_max, "replay"
    return api_max, "api"


# -- measuring a child process ---------------------------------------------------------------


@dataclass
class Usage:
    """What one child process cost, from ``wait4`` (its own rusage, not the harness's)."""

    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mb: float
    returncode: int
    timed_out: bool = False
    # Epoch seconds at spawn: a figure taken by another process's clock (the simulator's) can
    # be measured from the process start.
    spawned_at: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu_s"] = round(self.cpu_s, 3)
        for key in ("wall_s", "user_s", "sys_s", "max_rss_mb"):
            data[key] = round(data[key], 3)
        return data


def _wait4(pid: int, timeout: float) -> tuple[int, int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got:
            return got, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError(pid)
        time.sleep(0.02)


def run_measured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdout: Path,
    stderr: Path,
    timeout: float,
) -> Usage:
    """Run ``argv`` to its end; wall time from spawn to exit, CPU and peak RSS from ``wait4``."""
    cwd.mkdir(parents=True, exist_ok=True)
    stdout.parent.mkdir(parents=True, exist_ok=True)
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        spawned_at = time.time()
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = False
        try:
            _, status, usage = _wait4(proc.pid, timeout)
        except TimeoutError:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Usage(
        wall_s=wall,
        user_s=usage.ru_utime,
        sys_s=usage.ru_stime,
        max_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        returncode=proc.returncode,
        timed_out=timed_out,
        spawned_at=spawned_at,
    )


# -- airbyte-fleet --------------------------------------------------------------------------


def fleet_poll_modes() -> list[str]:
    """``--poll-mode`` choices ``airbyte-fleet run`` offers; empty when it has no such flag."""
    help_text = subprocess.run(
        [str(FLEET), "run", "--help"],
        capture_output=True,
        text=True,
        env=clean_env({"COLUMNS": "200"}),
        check=False,
    ).stdout
    match = re.search(r"--poll-mode\s+\{([^}]*)\}", help_text)
    if match:
        return [mode.strip() for mode in match.group(1).split(",") if mode.strip()]
    return ["batched", "per-job", "auto"] if "--poll-mode" in help_text else []


def fleet_env(sim: SimProcess) -> dict[str, str]:
    return clean_env(
        {
            "AIRBYTE_BASE_URL": sim.api,
            "AIRBYTE_CLIENT_ID": CLIENT_ID,
            "AIRBYTE_CLIENT_SECRET": CLIENT_SECRET,
        }
    )


def fleet_result(stdout: Path) -> dict[str, Any]:
    """The JSON result ``--output json`` printed, or ``{}`` if there is none."""
    try:
        data = json.loads(stdout.read_text(errors="replace"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# -- virtualenvs for the peers ---------------------------------------------------------------


@dataclass
class Venv:
    name: str
    requirements: list[str]
    python: Path = field(init=False)
    error: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.python = VENVS / self.name / "bin" / "python"


def ensure_venv(venv: Venv, dists: Sequence[str], *, log: Path) -> Venv:
    """Create ``bench/out/venvs/<name>`` with the pinned requirements unless it is there."""
    log.parent.mkdir(parents=True, exist_ok=True)
    stamp = venv.python.parent.parent / ".bench-requirements"
    wanted = "\n".join(venv.requirements)
    if not (venv.python.exists() and stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(venv.python.parent.parent, ignore_errors=True)
        with log.open("w") as out:
            steps = [
                [sys.executable, "-m", "venv", str(venv.python.parent.parent)],
                [str(venv.python), "-m", "pip", "install", "--quiet", *venv.requirements],
            ]
            for step in steps:
                done = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False)
                if done.returncode != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    venv.error = f"`{' '.join(step[-3:])}` failed: {' | '.join(tail)}"
                    return venv
        stamp.write_text(wanted)
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    )
    probe = subprocess.run(
        [str(venv.python), "-c", code, *dists], capture_output=True, text=True, check=False
    )
    if probe.returncode == 0:
        venv.versions = json.loads(probe.stdout)
    else:
        venv.error = f"cannot read versions: {probe.stderr.strip()[-300:]}"
    return venv


# -- reporting ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "airbyte_fleet_commit": commit + ("+dirty" if dirty else ""),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, columns padded so it also reads well in a terminal."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(text.ljust(widths[i]) for i, text in enumerate(row)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextmanager
def step(title: str) -> Iterator[None]:
    """Progress on stderr, so stdout keeps only the tables."""
    print(f"… {title}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        yield
    finally:
        print(f"  done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def is_http_error(exc: BaseException) -> bool:
    return isinstance(exc, urllib.error.URLError)
