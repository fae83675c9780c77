"""The reliability fault matrix: the real CLI against the simulator's fault injection.

Every case asserts the same four things: no connection got a second job (counted at the
simulator), every selected connection has an outcome in the result, no job is left running where
policy says cancel, and the exit code is the documented one. A known secret set in the environment
must never appear in any output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory

pytestmark = pytest.mark.anyio

SECRET = "matrix-Secret-5150-qrst"
TERMINAL = {"succeeded", "failed", "cancelled"}
RUN = ["run", "--all", "--output", "json", "--poll-interval", "0.05", "--retry-backoff", "0"]


def _env(root: str, state_dir: Path, **over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        AIRBYTE_FLEET_STATE_DIR=str(state_dir),
        # Real retries, short waits: the CLI is not under stamina's testing mode.
        AIRBYTE_RETRY_WAIT_INITIAL="0.01",
        AIRBYTE_RETRY_WAIT_MAX="0.05",
        AIRBYTE_RETRY_WAIT_JITTER="0",
    )
    env.update(over)
    return env


@dataclass
class Case:
    name: str
    sim: dict[str, Any]
    exit_code: int
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Simulator], None] | None = None
    during: Callable[[Simulator], Awaitable[None]] | None = None
    check: Callable[[Simulator, dict[str, Any]], None] | None = None


async def _expire_after_first_poll(sim: Simulator) -> None:
    with anyio.fail_after(10):
        # The simulator serves from this event loop; a short yield lets it take the poll.
        # The first status read: a per-job GET or a batched list, whichever mode auto chose.
        while sim.count("GET", "/jobs/{jobId}") + sim.count("GET", "/jobs") == 0:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    sim.expire_tokens()


def _start_two_jobs(sim: Simulator) -> None:
    for c in sim.connections[:2]:
        # Long enough to still run when the CLI, a new process, gets to it on a busy machine.
        sim.script(c["connectionId"], JobScript(seconds=4.0))
        sim.start_job(c["connectionId"])


def _odd_status(sim: Simulator) -> None:
    for c in sim.connections[:3]:
        sim.script(c["connectionId"], JobScript(seconds=0.6, odd_status="paused_by_admin"))


def _token_refreshed(sim: Simulator, doc: dict[str, Any]) -> None:
    assert sim.token_requests >= 2


def _saw_401_then_recovered(sim: Simulator, doc: dict[str, Any]) -> None:
    assert any(e.status == 401 for e in sim.exchanges)
    assert sim.token_requests == 2


def _token_502s(sim: Simulator, doc: dict[str, Any]) -> None:
    statuses = [e.status for e in sim.exchanges if e.route == "/applications/token"]
    assert statuses[:3] == [502, 502, 200]


def _faults_happened(kind: str) -> Callable[[Simulator, dict[str, Any]], None]:
    def check(sim: Simulator, doc: dict[str, Any]) -> None:
        assert any(getattr(e, "fault", None) == kind for e in sim.exchanges), kind

    return check


def _adopted(sim: Simulator, doc: dict[str, Any]) -> None:
    adopted = [s for s in doc["syncs"] if any(h["adopted"] for h in s["history"])]
    assert len(adopted) == 2


def _inactive_is_error(sim: Simulator, doc: dict[str, Any]) -> None:
    errors = [s for s in doc["syncs"] if s["outcome"] == "error"]
    assert len(errors) == 1
    assert "inactive" in errors[0]["error"]


CASES = [
    Case(
        "01 token expires mid-run",
        {"token_ttl": 1, "sync_seconds": (1.5, 2.5)},
        0,
        check=_token_refreshed,
    ),
    Case("02 token endpoint 502 twice", {"token_failures": 2}, 0, check=_token_502s),
    Case(
        "03 a poll gets 401",
        {"sync_seconds": (0.8, 1.2)},
        0,
        during=_expire_after_first_poll,
        check=_saw_401_then_recovered,
    ),
    Case(
        "04 429 on 20% without Retry-After",
        {"rate_429": 0.2, "seed": 4},
        0,
        check=_faults_happened("429"),
    ),
    Case(
        "05 5xx bursts",
        {"rate_5xx": 0.25, "error_status": 503, "seed": 5},
        0,
        check=_faults_happened("5xx"),
    ),
    Case(
        "06 slow POST /jobs times out but creates the job",
        {"slow_post_seconds": 1.0, "sync_seconds": (1.5, 2.0)},
        0,
        env={"AIRBYTE_READ_TIMEOUT": "0.3"},
    ),
    Case(
        "07 connection resets", {"reset_rate": 0.2, "seed": 7}, 0, check=_faults_happened("reset")
    ),
    Case("08 409 already running", {}, 0, setup=_start_two_jobs, check=_adopted),
    Case(
        "09 409 inactive connection",
        {"inactive_connections": 1},
        1,
        args=["--include-inactive"],
        check=_inactive_is_error,
    ),
    Case("10 unknown status value", {}, 0, setup=_odd_status),
    Case(
        "11 malformed JSON body",
        {"malformed_rate": 0.2, "seed": 11},
        0,
        check=_faults_happened("malformed"),
    ),
    Case(
        "12 server down mid-run (3 s for 60 s)",
        {"down_window": (1.0, 4.0), "sync_seconds": (1.5, 2.5)},
        0,
        check=_faults_happened("down"),
    ),
]


def _assert_invariants(sim: Simulator, doc: dict[str, Any], *, selected: int) -> None:
    assert len(doc["syncs"]) == selected
    assert all(s["outcome"] for s in doc["syncs"])
    for c in sim.connections:
        jobs = sim.jobs_for(c["connectionId"])
        assert len(jobs) <= 1, f"{c['connectionId']} got {len(jobs)} jobs"
        accepted = [
            e
            for e in sim.posts_for(c["connectionId"])
            if e.status == 200 and e.fault in (None, "slow_post")
        ]
        assert len(accepted) <= 1
    # Nothing is left running: every job ended by itself or was cancelled.
    assert all(j["status"] in TERMINAL for j in sim.jobs)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_fault_matrix(make_sim: SimFactory, tmp_path: Path, case: Case) -> None:
    options = {"connections": 8, "sync_seconds": (0.2, 0.6), "client_secret": SECRET} | case.sim
    sim, root = await make_sim(**options)
    if case.setup is not None:
        case.setup(sim)
    result: Any = None

    async def run() -> None:
        nonlocal result
        result = await anyio.run_process(
            [sys.executable, "-m", "airbyte_fleet", *RUN, *case.args],
            env=_env(root, tmp_path, **case.env),
            check=False,
        )

    started = time.perf_counter()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            if case.during is not None:
                await case.during(sim)
    wall = time.perf_counter() - started
    out, err = result.stdout.decode(), result.stderr.decode()
    assert SECRET not in out + err
    assert "Traceback" not in err
    assert result.returncode == case.exit_code, err[-3000:]
    doc = json.loads(out)
    _assert_invariants(sim, doc, selected=len(sim.connections))
    if case.check is not None:
        case.check(sim, doc)
    _report(case.name, result.returncode, doc, sim, wall)


def _report(name: str, code: int, doc: dict[str, Any], sim: Simulator, wall: float) -> None:
    """With AIRBYTE_FLEET_MATRIX_REPORT=FILE, one JSON line per case: the table in RELIABILITY.md."""
    target = os.environ.get("AIRBYTE_FLEET_MATRIX_REPORT")
    if not target:
        return
    faults = Counter(e.fault for e in sim.exchanges if e.fault)
    row = {
        "case": name,
        "exit": code,
        "outcomes": {k: v for k, v in doc["counts"].items() if v},
        "syncs": len(doc["syncs"]),
        "jobs": len(sim.jobs),
        "posts": sim.count("POST", "/jobs"),
        "requests": len(sim.exchanges),
        "faults": dict(faults),
        "max_jobs_per_connection": max(
            len(sim.jobs_for(c["connectionId"])) for c in sim.connections
        ),
        "left_running": sum(1 for j in sim.jobs if j["status"] not in TERMINAL),
        "wall_s": round(wall, 2),
    }
    with open(target, "a") as handle:
        handle.write(json.dumps(row) + "\n")


async def _until(process: anyio.abc.Process, marker: bytes, count: int) -> bytes:
    assert process.stderr is not None
    seen = b""
    async for chunk in process.stderr:
        seen += chunk
        if seen.count(marker) >= count:
            return seen
    raise AssertionError(f"the run ended before {count} x {marker!r}:\n{seen.decode()[-2000:]}")


async def test_13_sigterm_mid_run(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=6, client_secret=SECRET)
    for c in sim.connections:
        sim.script(c["connectionId"], JobScript(seconds=600))
    process = await anyio.open_process(
        [sys.executable, "-m", "airbyte_fleet", *RUN, "--max-concurrency", "3"],
        env=_env(root, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with anyio.fail_after(30):
        err = await _until(process, b'"sync_triggered"', 3)
        process.send_signal(signal.SIGTERM)
        out = await process.stdout.receive(1 << 20) if process.stdout else b""
        code = await process.wait()
    assert code == 130, err.decode()[-2000:]
    doc = json.loads(out)
    assert doc["outcome"] == "interrupted"
    assert doc["counts"]["cancelled"] == 3
    assert doc["counts"]["skipped"] == 3
    _assert_invariants(sim, doc, selected=6)
    _report("13 SIGTERM mid-run", code, doc, sim, 0.0)
    assert SECRET not in out.decode() + err.decode()


async def test_14_kill_9_then_resume(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=6, client_secret=SECRET)
    ids = [c["connectionId"] for c in sim.connections]
    for cid in ids[:3]:
        sim.script(cid, JobScript(seconds=1.5))
    process = await anyio.open_process(
        [sys.executable, "-m", "airbyte_fleet", *RUN, "--max-concurrency", "3"],
        env=_env(root, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with anyio.fail_after(30):
        await _until(process, b'"sync_triggered"', 3)
        process.kill()  # SIGKILL: no cleanup, no result, nothing cancelled
        await process.wait()
    posts_before = sim.count("POST", "/jobs")
    assert posts_before == 3
    triggered = {j["connectionId"] for j in sim.jobs}
    resumed = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "airbyte_fleet",
            "run",
            "--resume",
            "last",
            "--output",
            "json",
            "--poll-interval",
            "0.05",
        ],
        env=_env(root, tmp_path),
        check=False,
    )
    out, err = resumed.stdout.decode(), resumed.stderr.decode()
    assert resumed.returncode == 0, err[-3000:]
    assert SECRET not in out + err
    doc = json.loads(out)
    _assert_invariants(sim, doc, selected=6)
    # Not one POST /jobs for a connection whose trigger was journaled; one for each of the others.
    for cid in triggered:
        assert len(sim.posts_for(cid)) == 1
    assert sim.count("POST", "/jobs") == 6
    assert doc["counts"]["succeeded"] == 6
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert events.count("sync_adopted") == 3
    _report("14 kill -9 mid-run, then --resume last", resumed.returncode, doc, sim, 0.0)


async def test_detached_interrupt_can_be_resumed(make_sim: SimFactory, tmp_path: Path) -> None:
    """SIGTERM with --on-interrupt detach leaves jobs running; --resume follows them and runs
    the syncs the interrupt kept from starting, without a second job anywhere."""
    sim, root = await make_sim(connections=4, client_secret=SECRET)
    for c in sim.connections:
        sim.script(c["connectionId"], JobScript(seconds=2.0))
    process = await anyio.open_process(
        [
            sys.executable,
            "-m",
            "airbyte_fleet",
            *RUN,
            "--max-concurrency",
            "2",
            "--on-interrupt",
            "detach",
        ],
        env=_env(root, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with anyio.fail_after(30):
        await _until(process, b'"sync_triggered"', 2)
        process.send_signal(signal.SIGTERM)
        code = await process.wait()
    assert code == 130
    assert sorted(j["status"] for j in sim.jobs) in (
        ["pending", "pending"],
        ["pending", "running"],
        ["running", "running"],
    )
    resumed = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "airbyte_fleet",
            "run",
            "--resume",
            "last",
            "--output",
            "json",
            "--poll-interval",
            "0.05",
        ],
        env=_env(root, tmp_path),
        check=False,
    )
    out, err = resumed.stdout.decode(), resumed.stderr.decode()
    assert resumed.returncode == 0, err[-3000:]
    doc = json.loads(out)
    assert doc["counts"]["succeeded"] == 4
    _assert_invariants(sim, doc, selected=4)
    assert sim.count("POST", "/jobs") == 4
