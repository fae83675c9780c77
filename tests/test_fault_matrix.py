"""The reliability fault matrix: the real CLI against the simulator's fault injection.

Every case asserts the same four things, each against the simulator's own record: no connection
got a second job, every connection the simulator holds has exactly one outcome in the result and
every job it holds is the one the result names for its connection, no job is left running where
policy says cancel, and the exit code is the documented one. Each case also proves its fault fired.
A known secret set in the environment must never appear in any output.

The simulator runs on a FakeClock that stands still until the CLI has triggered what the case needs
(so a job is still running when the CLI, a new process, gets to it, however busy the machine), and
then moves in jumps until the CLI exits: no test waits for a job in real time.
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

from airbyte_fleet.simulator import FakeClock, JobScript, Simulator
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


#: Simulated seconds per jump once a case lets the clock go, and the real pause between jumps.
STEP = 1.0
TICK = 0.02


@dataclass
class Case:
    name: str
    sim: dict[str, Any]
    exit_code: int
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    setup: Callable[[Simulator], None] | None = None
    # Runs once every connection has a POST (the clock still stands), before the clock goes.
    during: Callable[[Simulator, FakeClock, float], Awaitable[None]] | None = None
    check: Callable[[Simulator, dict[str, Any]], None] | None = None
    step: float = STEP


async def _eventually(condition: Callable[[], bool], what: str, within: float = 20) -> None:
    """Poll *condition* (the simulator serves from this event loop) until it holds."""
    with anyio.move_on_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert condition(), f"not within {within} s: {what}"


def _all_posted(sim: Simulator) -> bool:
    return all(sim.posts_for(c["connectionId"]) for c in sim.connections)


async def _drive(
    sim: Simulator, clock: FakeClock, case: Case, ended: anyio.Event, t0: float
) -> None:
    """Hold the clock until every connection has a POST, run the case's step, then jump ahead
    until the CLI exits."""
    with anyio.move_on_after(30):
        while not (_all_posted(sim) or ended.is_set()):  # noqa: ASYNC110
            await anyio.sleep(0.01)
    if case.during is not None and not ended.is_set():
        await case.during(sim, clock, t0)
    while not ended.is_set():
        clock.advance(case.step)
        with anyio.move_on_after(TICK):
            await ended.wait()


def _faults(sim: Simulator, kind: str) -> list[Any]:
    return [e for e in sim.exchanges if e.fault == kind]


async def _expire_tokens_mid_run(sim: Simulator, clock: FakeClock, t0: float) -> None:
    # Past the token's 1 s life while every job still runs; the next read gets a 401.
    clock.advance(1.1)
    await _eventually(
        lambda: any(e.status == 401 for e in sim.exchanges) and sim.token_requests >= 2,
        "a 401, then a new token",
    )


async def _expire_after_first_poll(sim: Simulator, clock: FakeClock, t0: float) -> None:
    # The first status read: a per-job GET or a batched list, whichever mode auto chose.
    await _eventually(
        lambda: sim.count("GET", "/jobs/{jobId}") + sim.count("GET", "/jobs") > 0, "a poll"
    )
    sim.expire_tokens()
    await _eventually(lambda: any(e.status == 401 for e in sim.exchanges), "a 401")


def _start_two_jobs(sim: Simulator) -> None:
    for c in sim.connections[:2]:
        # Running until the clock moves, which it does only once the CLI has posted for both.
        sim.script(c["connectionId"], JobScript(seconds=4.0))
        sim.start_job(c["connectionId"])


ODD = "paused_by_admin"


def _odd_status(sim: Simulator) -> None:
    for c in sim.connections[:3]:
        sim.script(c["connectionId"], JobScript(seconds=2.0, pending_seconds=0.1, odd_status=ODD))


def _seen_odd(sim: Simulator) -> set[str]:
    """Connections whose job the simulator answered with the odd status."""
    seen: set[str] = set()
    for exchange in _faults(sim, "odd_status"):
        body = json.loads(exchange.response_body)
        for job in body.get("data", [body]):
            if job.get("status") == ODD:
                seen.add(job["connectionId"])
    return seen


async def _show_odd_status(sim: Simulator, clock: FakeClock, t0: float) -> None:
    clock.advance(0.5)  # past pending: the three scripted jobs now report ODD
    odd = {c["connectionId"] for c in sim.connections[:3]}
    await _eventually(lambda: _seen_odd(sim) >= odd, "the CLI read every odd status")


async def _outage(sim: Simulator, clock: FakeClock, t0: float) -> None:
    clock.set(t0 + 1.0)  # inside down_window (1.0, 4.0); every job still runs
    # More dropped requests than one request's retries (8): the run itself rode out the outage.
    await _eventually(lambda: len(_faults(sim, "down")) >= 12, "the CLI met the outage")
    clock.set(t0 + 4.0)


def _token_refreshed(sim: Simulator, doc: dict[str, Any]) -> None:
    assert any(e.status == 401 for e in sim.exchanges)
    assert sim.token_requests >= 2


def _saw_401_then_recovered(sim: Simulator, doc: dict[str, Any]) -> None:
    assert any(e.status == 401 for e in sim.exchanges)
    assert sim.token_requests == 2


def _token_502s(sim: Simulator, doc: dict[str, Any]) -> None:
    statuses = [e.status for e in sim.exchanges if e.route == "/applications/token"]
    assert statuses[:3] == [502, 502, 200]


def _faults_happened(kind: str) -> Callable[[Simulator, dict[str, Any]], None]:
    def check(sim: Simulator, doc: dict[str, Any]) -> None:
        assert _faults(sim, kind), kind

    return check


def _slow_posts_timed_out(sim: Simulator, doc: dict[str, Any]) -> None:
    # Every POST /jobs was held 1 s, three times the CLI's read timeout ...
    slow = _faults(sim, "slow_post")
    assert len(slow) == len(sim.connections) == sim.count("POST", "/jobs")
    order = {id(e): i for i, e in enumerate(sim.exchanges)}
    for post in slow:
        cid = json.loads(post.request_body)["connectionId"]
        # ... so the CLI gave up waiting and looked for the job: a job list for this connection
        # answered while its POST was still held (exchanges are recorded as they complete),
        lookups = [
            e
            for e in sim.exchanges[: order[id(post)]]
            if e.method == "GET" and e.route == "/jobs" and cid in e.query
        ]
        assert lookups, f"no job lookup for {cid} before its slow POST answered"
        # ... and found the job the POST created instead of posting again.
        assert len(sim.posts_for(cid)) == 1


def _adopted(sim: Simulator, doc: dict[str, Any]) -> None:
    adopted = {s["connection_id"] for s in doc["syncs"] if any(h["adopted"] for h in s["history"])}
    assert adopted == {c["connectionId"] for c in sim.connections[:2]}
    for cid in adopted:
        assert [e.status for e in sim.posts_for(cid)] == [409]


def _inactive_is_error(sim: Simulator, doc: dict[str, Any]) -> None:
    errors = [s for s in doc["syncs"] if s["outcome"] == "error"]
    assert len(errors) == 1
    assert "inactive" in errors[0]["error"]
    inactive = [c["connectionId"] for c in sim.connections if c["status"] != "active"]
    assert [s["connection_id"] for s in errors] == inactive


def _odd_status_followed(sim: Simulator, doc: dict[str, Any]) -> None:
    odd = {c["connectionId"] for c in sim.connections[:3]}
    assert _seen_odd(sim) == odd
    by_id = {s["connection_id"]: s for s in doc["syncs"]}
    assert all(by_id[cid]["outcome"] == "succeeded" for cid in odd)


CASES = [
    Case(
        "01 token expires mid-run",
        {"token_ttl": 1, "sync_seconds": (1.5, 2.5)},
        0,
        during=_expire_tokens_mid_run,
        check=_token_refreshed,
        step=0.25,  # several reads per token life
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
        check=_slow_posts_timed_out,
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
    Case(
        "10 unknown status value",
        {},
        0,
        setup=_odd_status,
        during=_show_odd_status,
        check=_odd_status_followed,
    ),
    Case(
        "11 malformed JSON body",
        {"malformed_rate": 0.2, "seed": 11},
        0,
        check=_faults_happened("malformed"),
    ),
    Case(
        "12 server down mid-run",
        {"down_window": (1.0, 4.0), "sync_seconds": (1.5, 2.5)},
        0,
        during=_outage,
        check=_faults_happened("down"),
    ),
]


#: The simulator's job status each final outcome stands for.
JOB_STATUS_OF = {
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
    "timed_out": "cancelled",
}


def _assert_invariants(sim: Simulator, doc: dict[str, Any], *, selected: int) -> None:
    """The result against the simulator's own record, connection by connection."""
    ids = [s["connection_id"] for s in doc["syncs"]]
    assert len(ids) == len(set(ids)) == selected, ids
    assert set(ids) == {c["connectionId"] for c in sim.connections}
    by_id = {s["connection_id"]: s for s in doc["syncs"]}
    for c in sim.connections:
        cid = c["connectionId"]
        sync = by_id[cid]
        assert sync["outcome"], sync
        jobs = sim.jobs_for(cid)
        assert len(jobs) <= 1, f"{cid} got {len(jobs)} jobs"
        accepted = [
            e for e in sim.posts_for(cid) if e.status == 200 and e.fault in (None, "slow_post")
        ]
        assert len(accepted) <= 1
        if jobs:
            # Every job the simulator holds is accounted for, under its own connection.
            (job,) = jobs
            assert sync["job_id"] == job["jobId"], (sync, job)
            if sync["outcome"] in JOB_STATUS_OF:
                assert job["status"] == JOB_STATUS_OF[sync["outcome"]], (sync, job)
        else:
            assert sync["job_id"] is None, sync
            assert sync["outcome"] not in JOB_STATUS_OF, sync
    # Nothing is left running: every job ended by itself or was cancelled.
    assert all(j["status"] in TERMINAL for j in sim.jobs)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_fault_matrix(make_sim: SimFactory, tmp_path: Path, case: Case) -> None:
    t0 = time.time()  # the CLI's filters use real time: the simulator's starts there too
    clock = FakeClock(start=t0)
    options = {"connections": 8, "sync_seconds": (0.2, 0.6), "client_secret": SECRET} | case.sim
    sim, root = await make_sim(clock=clock, **options)
    if case.setup is not None:
        case.setup(sim)
    result: Any = None
    ended = anyio.Event()

    async def run() -> None:
        nonlocal result
        try:
            result = await anyio.run_process(
                [sys.executable, "-m", "airbyte_fleet", *RUN, *case.args],
                env=_env(root, tmp_path, **case.env),
                check=False,
            )
        finally:
            ended.set()

    started = time.perf_counter()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await _drive(sim, clock, case, ended, t0)
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
        # To the end: the result is written one sync at a time, so one read may get a part.
        out = b""
        assert process.stdout is not None
        async for chunk in process.stdout:
            out += chunk
        code = await process.wait()
    assert code == 130, err.decode()[-2000:]
    doc = json.loads(out)
    assert doc["outcome"] == "interrupted"
    # Three jobs at the simulator, all cancelled, and the other three connections never posted.
    assert len(sim.jobs) == sim.count("POST", "/jobs") == 3
    assert [j["status"] for j in sim.jobs] == ["cancelled"] * 3
    cancelled = {s["connection_id"] for s in doc["syncs"] if s["outcome"] == "cancelled"}
    skipped = {s["connection_id"] for s in doc["syncs"] if s["outcome"] == "skipped"}
    assert cancelled == {j["connectionId"] for j in sim.jobs}
    assert skipped == {c["connectionId"] for c in sim.connections} - cancelled
    assert doc["counts"]["cancelled"] == 3
    assert doc["counts"]["skipped"] == 3
    _assert_invariants(sim, doc, selected=6)
    _report("13 SIGTERM mid-run", code, doc, sim, 0.0)
    assert SECRET not in out.decode() + err.decode()


async def _resume(root: str, tmp_path: Path, clock: FakeClock) -> Any:
    """``run --resume last`` while the simulator's clock jumps ahead until it exits."""
    result: Any = None
    ended = anyio.Event()

    async def run() -> None:
        nonlocal result
        try:
            result = await anyio.run_process(
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
        finally:
            ended.set()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            while not ended.is_set():
                clock.advance(STEP)
                with anyio.move_on_after(TICK):
                    await ended.wait()
    return result


async def test_14_kill_9_then_resume(make_sim: SimFactory, tmp_path: Path) -> None:
    # The clock stands while the first process runs: its three jobs are running when it dies.
    clock = FakeClock(start=time.time())
    sim, root = await make_sim(clock=clock, connections=6, client_secret=SECRET)
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
    assert all(j["status"] not in TERMINAL for j in sim.jobs)
    triggered = {j["connectionId"] for j in sim.jobs}
    resumed = await _resume(root, tmp_path, clock)
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
    # The clock stands while the first process runs: its jobs are still live when it detaches.
    clock = FakeClock(start=time.time())
    sim, root = await make_sim(clock=clock, connections=4, client_secret=SECRET)
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
    # Detached, not cancelled: both jobs still live at the simulator.
    assert [j["status"] for j in sim.jobs] == ["pending", "pending"]
    resumed = await _resume(root, tmp_path, clock)
    out, err = resumed.stdout.decode(), resumed.stderr.decode()
    assert resumed.returncode == 0, err[-3000:]
    doc = json.loads(out)
    assert doc["counts"]["succeeded"] == 4
    _assert_invariants(sim, doc, selected=4)
    assert sim.count("POST", "/jobs") == 4
