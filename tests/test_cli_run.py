"""`airbyte-fleet run` as a subprocess against the simulator over loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from airbyte_fleet.simulator import FakeClock, JobScript, Simulator
from conftest import SimFactory

pytestmark = pytest.mark.anyio

SECRET = "run-Secret-9876-zyxw"
FAST = ["--poll-interval", "0.05", "--retry-backoff", "0", "--output", "json"]


def _env(root: str, **over: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        USE_SERVER_AUTH="TRUE",
        AIRBYTE_AUTH_TYPE="client_credentials",
    )
    env.update(over)
    return env


# Longer than any CLI run here takes on a loaded machine, far shorter than CI's limit.
RUN_LIMIT = 300


async def _run(root: str, *args: str, **env: str) -> tuple[int, str, str]:
    # Bounded: a CLI that hangs fails its test (the cancel kills the process) instead of CI.
    with tempfile.TemporaryDirectory() as state, anyio.fail_after(RUN_LIMIT):
        result = await anyio.run_process(
            [sys.executable, "-m", "airbyte_fleet", "run", *args],
            env=_env(root, AIRBYTE_FLEET_STATE_DIR=state, **env),
            check=False,
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert SECRET not in out + err
    assert "Traceback" not in err
    return result.returncode, out, err


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


def _by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["connection_id"]: s for s in doc["syncs"]}


async def test_fifty_connections_succeed(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=50, workspaces=2, client_secret=SECRET)
    result_file = tmp_path / "out" / "result.json"
    code, out, err = await _run(
        root, "--all", "--max-concurrency", "50", *FAST, "--result-file", str(result_file)
    )
    assert code == 0, err
    doc = json.loads(out)  # stdout is exactly the JSON document
    assert doc == json.loads(result_file.read_text())
    assert doc["outcome"] == "succeeded"
    assert len(doc["syncs"]) == 50
    assert doc["counts"]["succeeded"] == 50
    assert all(s["rows_synced"] > 0 and s["job_id"] for s in doc["syncs"])
    assert doc["totals"]["rows_synced"] > 0
    assert sim.count("POST", "/jobs") == 50
    events = [json.loads(line)["event"] for line in err.splitlines()]
    assert events.count("sync_triggered") == 50
    assert events.count("sync_succeeded") == 50
    assert events[-1] == "run_finished"


async def test_mix_with_failures_exits_1_with_right_counts(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=8, client_secret=SECRET, inactive_connections=1)
    ids = _ids(sim)
    for cid in ids[:2]:
        sim.script(cid, JobScript(seconds=0.1, final="failed"))
    sim.script(ids[2], JobScript(seconds=0.1, final="cancelled"))
    code, out, err = await _run(root, "--all", *FAST)
    assert code == 1, err
    doc = json.loads(out)
    assert doc["outcome"] == "failed"
    assert doc["counts"] == {
        "succeeded": 4,
        "failed": 2,
        "cancelled": 1,
        "timed_out": 0,
        "skipped": 1,
        "triggered": 0,
        "error": 0,
    }
    assert _by_id(doc)[ids[0]]["outcome"] == "failed"
    assert _by_id(doc)[ids[-1]]["outcome"] == "skipped"


async def test_retries_turn_transient_failures_into_successes(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    ids = _ids(sim)
    sim.script(ids[0], JobScript(seconds=0.05, final="failed"))
    sim.script(ids[0], JobScript(seconds=0.05, final="failed"))
    sim.script(ids[1], JobScript(seconds=0.05, final="failed"))
    code, out, err = await _run(root, "--all", "--retries", "2", *FAST)
    assert code == 0, err
    syncs = _by_id(json.loads(out))
    assert syncs[ids[0]]["attempts"] == 3
    assert syncs[ids[1]]["attempts"] == 2
    assert syncs[ids[2]]["attempts"] == 1
    assert all(s["outcome"] == "succeeded" for s in syncs.values())
    assert sim.count("POST", "/jobs") == 6


async def test_timeout_cancels_the_job(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, client_secret=SECRET)
    slow = _ids(sim)[0]
    sim.script(slow, JobScript(seconds=600))
    code, out, err = await _run(root, "--all", "--timeout", "500ms", *FAST)
    assert code == 1, err
    sync = _by_id(json.loads(out))[slow]
    assert sync["outcome"] == "timed_out"
    assert sim.job(sync["job_id"])["status"] == "cancelled"
    assert sim.count("DELETE", "/jobs/{jobId}") == 1


@pytest.mark.parametrize(
    ("policy", "code", "outcome"),
    [("adopt", 0, "succeeded"), ("skip", 0, "skipped"), ("fail", 1, "error")],
)
async def test_if_running_policies(
    make_sim: SimFactory, policy: str, code: int, outcome: str
) -> None:
    # The job runs on the simulator's clock, which stands still until the CLI (a new Python
    # process) has been told "already running": then it jumps past the job's end.
    clock = FakeClock()
    sim, root = await make_sim(clock=clock, connections=2, client_secret=SECRET)
    busy = _ids(sim)[0]
    sim.script(busy, JobScript(seconds=60.0))
    running = sim.start_job(busy)
    async with anyio.create_task_group() as tg:
        answer: list[tuple[int, str, str]] = []

        async def run() -> None:
            answer.append(await _run(root, "--connection", busy, "--if-running", policy, *FAST))

        tg.start_soon(run)

        # Until the CLI has been told "already running" and, unless it fails at once, has looked
        # up the running job (however long a loaded machine takes to start it). A clock moved
        # before that lookup ends the job first: the CLI then sees Airbyte's stale "already
        # running" with no job, triggers its own, and that job waits for a clock that never
        # moves again. Bounded, so a CLI that never asks fails the test (the task group's
        # cancel stops the process) instead of hanging it.
        # Answered exchanges (counts go up on arrival, before the answer is computed).
        def asked() -> bool:
            done = [(e.method, e.route, e.status) for e in sim.exchanges]
            if ("POST", "/jobs", 409) not in done:
                return False
            after = done[done.index(("POST", "/jobs", 409)) :]
            return policy == "fail" or any(m == "GET" and r == "/jobs" for m, r, _ in after)

        with anyio.fail_after(120):
            while not asked():  # noqa: ASYNC110
                await anyio.sleep(0.01)
        clock.advance(120)
    got, out, err = answer[0]
    assert got == code, err
    sync = json.loads(out)["syncs"][0]
    assert sync["outcome"] == outcome
    assert sim.count("POST", "/jobs") == 1
    if policy == "adopt":
        assert sync["job_id"] == running["jobId"]


async def test_unknown_connection_exits_2_and_triggers_nothing(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    unknown = "11111111-2222-4333-8444-555555555555"
    code, out, err = await _run(root, "--connection", f"{_ids(sim)[0]},{unknown}", *FAST)
    assert code == 2
    assert out == ""
    assert unknown in err
    assert sim.count("POST", "/jobs") == 0


async def test_bad_credentials_exit_3_and_trigger_nothing(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    code, out, err = await _run(root, "--all", *FAST, AIRBYTE_CLIENT_SECRET="wrong-secret-1234")
    assert code == 3
    assert out == ""
    assert "AIRBYTE_CLIENT_SECRET" in err
    assert "wrong-secret-1234" not in err
    assert sim.count("POST", "/jobs") == 0


async def test_nothing_selected_exits_2(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    code, out, err = await _run(root, *FAST)
    assert code == 2
    assert out == ""
    assert "Nothing selected" in err
    assert sim.count("POST", "/jobs") == 0
    assert sim.exchanges == []  # not even a health check


@pytest.mark.parametrize(
    "args",
    [
        ["--all", "--timeout", "soon"],
        ["--all", "--max-concurrency", "0"],
        ["--connection", "not-a-uuid"],
    ],
)
async def test_bad_options_exit_2_in_one_sentence(make_sim: SimFactory, args: list[str]) -> None:
    sim, root = await make_sim(connections=1, client_secret=SECRET)
    code, out, err = await _run(root, *args)
    assert code == 2
    assert out == ""
    assert len([line for line in err.splitlines() if '"event": "fatal"' in line]) == 1
    assert sim.count("POST", "/jobs") == 0


async def test_dry_run_prints_the_plan_and_triggers_nothing(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=5, client_secret=SECRET, inactive_connections=1)
    code, out, err = await _run(root, "--all", "--dry-run", "--output", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 5
    assert sim.count("POST", "/jobs") == 0


async def test_no_wait_reports_triggered(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=4, client_secret=SECRET)
    code, out, err = await _run(root, "--all", "--no-wait", *FAST)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["counts"]["triggered"] == 4
    assert doc["counts"]["succeeded"] == 0
    assert sim.count("GET", "/jobs/{jobId}") == 0


async def test_table_output_names_every_connection(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    code, out, err = await _run(root, "--all", "--poll-interval", "0.05", "--log-format", "console")
    assert code == 0, err
    for c in sim.connections:
        assert c["connectionId"] in out
    assert "3 succeeded" in out


async def test_sigterm_cancels_in_flight_jobs_and_exits_130(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=4, client_secret=SECRET)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=600))
    process = await anyio.open_process(
        [sys.executable, "-m", "airbyte_fleet", "run", "--all", "--max-concurrency", "2", *FAST],
        env=_env(root, AIRBYTE_FLEET_STATE_DIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    err = b""
    with anyio.fail_after(20):
        async for chunk in process.stderr:
            err += chunk
            if err.count(b'"sync_triggered"') >= 2:
                break
        process.send_signal(signal.SIGTERM)
        out = b""
        async for chunk in process.stdout:
            out += chunk
        async for chunk in process.stderr:
            err += chunk
        code = await process.wait()
    assert code == 130, err.decode()
    doc = json.loads(out)
    assert doc["outcome"] == "interrupted"
    assert doc["counts"]["cancelled"] == 2
    assert doc["counts"]["skipped"] == 2
    assert len(doc["syncs"]) == 4
    assert sorted(j["status"] for j in sim.jobs) == ["cancelled", "cancelled"]
    assert sim.count("POST", "/jobs") == 2
