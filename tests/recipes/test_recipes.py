"""The orchestrator recipes in examples/, run for real against the simulator.

Each orchestrator runs in a virtualenv of its own (``venvs.py``: built in parallel on first use,
reused while pyproject.toml is unchanged). For each: ``mypy --strict`` on its example, and one
driver process (``drive_<name>.py``, run in that venv) that runs the example the orchestrator's
way, scenario after scenario, against a simulator this test started on loopback, and writes what
the orchestrator recorded. Every scenario is checked from both sides: the simulator saw each
selected sync triggered once (and cancelled, when the orchestrator stopped the step), and the
orchestrator recorded the metadata on success, and its own failure carrying the run's summary
when a sync failed.

Where a venv cannot be built (no PyPI) these tests skip and say how to run them; under CI=true
that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory

from .venvs import (
    AIRFLOW,
    DAGSTER,
    PREFECT,
    RECIPES,
    ROOT,
    Built,
    Recipe,
    build_all,
    clean_env,
    orchestrator_env,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.recipes]

HERE = Path(__file__).resolve().parent
SECRET = "recipe-Secret-5678-qwer"
IN_CI = os.environ.get("CI", "").strip().lower() == "true"
RUN_TIMEOUT_S = 300.0
MYPY_TIMEOUT_S = 600.0
SERVER_START_S = 120.0
# A sync that would outlive the test: only a cancel ends it.
LONG = JobScript(seconds=3600)
FAILS = JobScript(seconds=0.05, final="failed")


# --------------------------------------------------------------------------- venvs and mypy


@pytest.fixture(scope="session")
def recipe_venvs() -> dict[str, Built]:
    return build_all()


@dataclass
class Typecheck:
    process: subprocess.Popen[bytes]
    output: Path


@dataclass
class PrefectServer:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    async def ready(self) -> str:
        """The API's URL once it answers (its start takes 10-30 s: it began long before)."""
        async with aiohttp.ClientSession() as session:
            with anyio.fail_after(SERVER_START_S):
                while self.process.poll() is None:
                    try:
                        async with session.get(f"{self.url}/health") as reply:
                            if reply.status == 200:
                                return self.url
                    except aiohttp.ClientConnectionError:
                        pass
                    await anyio.sleep(0.2)
        pytest.fail(f"prefect server exited:\n{self.log.read_text(errors='replace')[-3000:]}")


@dataclass
class Background:
    """Slow work started at the first recipe test and left to run beside the others: mypy over
    each example (its first run over an orchestrator's packages takes a minute), and a Prefect
    server for the Prefect tests (each flow run would otherwise start a temporary one)."""

    typechecks: dict[str, Typecheck]
    prefect: PrefectServer | None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def background(
    recipe_venvs: dict[str, Built], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Background]:
    folder = tmp_path_factory.mktemp("background")
    processes: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with log.open("wb") as sink:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        processes.append(process)
        return process

    typechecks: dict[str, Typecheck] = {}
    for recipe in RECIPES:
        if recipe_venvs[recipe.name].error:
            continue
        output = folder / f"mypy-{recipe.name}.txt"
        argv = [
            str(recipe.bin("mypy")),
            "--strict",
            "--cache-dir",
            str(recipe.home / "mypy-cache"),
            recipe.example,
        ]
        # From the checkout, so pyproject.toml's [tool.mypy] applies (the pydantic plugin).
        typechecks[recipe.name] = Typecheck(start(argv, output, clean_env()), output)
    prefect = None
    if not recipe_venvs[PREFECT.name].error:
        home = folder / "prefect-home"
        home.mkdir()
        shutil.copy2(PREFECT.template / "prefect.db", home / "prefect.db")
        port = _free_port()
        argv = [
            str(PREFECT.bin("prefect")),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
            "--no-services",
        ]
        log = folder / "prefect-server.txt"
        env = {**clean_env(), **orchestrator_env(home)}
        prefect = PrefectServer(start(argv, log, env), f"http://127.0.0.1:{port}/api", log)
    yield Background(typechecks, prefect)
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _venv(recipe_venvs: dict[str, Built], recipe: Recipe) -> Built:
    built = recipe_venvs[recipe.name]
    if built.error:
        message = f"no {recipe.name} virtualenv: {built.error}"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        pytest.skip(f"{message}; {recipe.how_to_run}")
    return built


# --------------------------------------------------------------------------- driving a recipe


@dataclass
class Driven:
    """What one driver process reported (one entry per scenario) and printed."""

    reports: list[dict[str, Any]]
    printed: str


def _env(home: Path, root: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in clean_env().items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(orchestrator_env(home))
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        USE_SERVER_AUTH="TRUE",
        AIRBYTE_AUTH_TYPE="client_credentials",
        # The recipes leave the poll interval to the environment, as the CLI does.
        AIRBYTE_FLEET_POLL_INTERVAL="0.05",
        AIRBYTE_FLEET_RETRY_BACKOFF="0",
    )
    env.update(extra)
    return env


async def _drive(
    recipe: Recipe,
    tmp_path: Path,
    root: str,
    scenarios: list[dict[str, Any]],
    *,
    interrupt: tuple[int, signal.Signals] | None = None,
    **extra_env: str,
) -> Driven:
    """Run the recipe's driver in its venv, scenario after scenario.

    With *interrupt* ``(n, signum)``, the driver gets *signum* once the library has logged its
    n-th ``sync_triggered`` (its records reach the orchestrator's log, which the driver prints):
    the way the orchestrator stops a step, sent while the last scenario's syncs run.
    """
    home = tmp_path / "home"
    home.mkdir()
    if recipe.database:
        # A copy of the database the build migrated: a fresh one, without the migration's time.
        # (Only the database: the orchestrator writes its other files anew, with paths in home.)
        shutil.copy2(recipe.template / recipe.database, home / recipe.database)
    target = ROOT / recipe.example
    if recipe is AIRFLOW:
        # dag.test() writes the DAG folder's DAGs to the metadata database: the example alone.
        dags = tmp_path / "dags"
        dags.mkdir()
        target = dags / "airflow_dag.py"
        shutil.copy2(ROOT / recipe.example, target)
        extra_env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    out = tmp_path / "report.json"
    argv = [
        str(recipe.bin("python")),
        str(HERE / f"drive_{recipe.name}.py"),
        str(target),
        json.dumps(scenarios),
        str(out),
    ]
    # cwd: a folder of its own, so no config/airbyte-fleet.toml is found by accident.
    process = await anyio.open_process(
        argv,
        cwd=tmp_path,
        env=_env(home, root, extra_env),
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen = b""
    try:
        with anyio.fail_after(RUN_TIMEOUT_S):
            async for chunk in process.stdout:
                seen += chunk
                if interrupt and seen.count(b"sync_triggered") >= interrupt[0]:
                    process.send_signal(interrupt[1])
                    interrupt = None
            code = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"{recipe.name} driver still running:\n{seen.decode(errors='replace')[-5000:]}")
    printed = seen.decode(errors="replace")
    assert SECRET not in printed
    assert code == 0, printed[-5000:]
    assert interrupt is None, "the driver ended before the syncs to interrupt were triggered"
    return Driven(json.loads(out.read_text()), printed)


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


def _names(sim: Simulator) -> dict[str, str]:
    return {c["connectionId"]: c["name"] for c in sim.connections}


def _scripted(sim: Simulator, scripts: dict[int, JobScript]) -> list[str]:
    ids = _ids(sim)
    for index, script in scripts.items():
        sim.script(ids[index], script)
    return ids


def _triggered_once_each(sim: Simulator, ids: list[str]) -> None:
    assert sim.count("POST", "/jobs") == len(ids)
    assert {cid: len(sim.posts_for(cid)) for cid in ids} == dict.fromkeys(ids, 1)


def _statuses(sim: Simulator, ids: list[str]) -> list[str]:
    return [job["status"] for cid in ids for job in sim.jobs_for(cid)]


def _outcomes(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {row["connection_id"]: row["outcome"] for row in rows}


# --------------------------------------------------------------------------- Dagster


async def test_dagster_assets_report_materializations_failures_and_cancel_on_termination(
    make_sim: SimFactory,
    tmp_path: Path,
    recipe_venvs: dict[str, Built],
    background: Background,
) -> None:
    built = _venv(recipe_venvs, DAGSTER)
    sim, root = await make_sim(connections=11, client_secret=SECRET)
    ids = _scripted(sim, {5: FAILS, 7: FAILS, 8: LONG, 9: LONG, 10: LONG})
    names = _names(sim)
    scenarios = [
        {"asset": "airbyte_syncs", "connections": ids[0:2]},
        {"asset": "airbyte_syncs_async", "connections": ids[2:4]},
        {"asset": "airbyte_syncs", "connections": ids[4:6]},  # ids[5] fails
        {"asset": "airbyte_syncs_async", "connections": ids[6:8]},  # ids[7] fails
        {"asset": "airbyte_syncs", "connections": ids[8:11]},  # the run is terminated
    ]
    # Dagster stops a step with SIGINT (its run worker turns a SIGTERM into it too) and raises
    # DagsterExecutionInterruptedError in it.
    driven = await _drive(DAGSTER, tmp_path, root, scenarios, interrupt=(11, signal.SIGINT))
    _triggered_once_each(sim, ids)
    context = f"dagster {built.versions}"
    # The library's records, through managed_python_loggers, in Dagster's run logs.
    assert driven.printed.count("sync_triggered") == len(ids), driven.printed[-3000:]
    reports = driven.reports
    for report, scenario in zip(reports[:2], scenarios[:2], strict=True):
        assert report["success"], (context, report)
        metadata = report["metadata"]
        assert metadata["airbyte_fleet/outcome"] == "succeeded"
        assert metadata["airbyte_fleet/counts"] == {"succeeded": 2}
        assert metadata["airbyte_fleet/run_id"]
        assert metadata["dagster/row_count"] > 0
        table = metadata["airbyte_fleet/syncs"]
        assert [row["connection_id"] for row in table] == scenario["connections"]
        assert all(row["outcome"] == "succeeded" and row["job_id"] for row in table)
    for report, failed in zip(reports[2:4], (ids[5], ids[7]), strict=True):
        assert not report["success"], (context, report)
        assert "metadata" not in report  # nothing materialized
        assert report["failure"].startswith("Run ")
        assert names[failed] in report["failure"]
        metadata = report["failure_metadata"]
        assert metadata["airbyte_fleet/counts"] == {"succeeded": 1, "failed": 1}
        assert _outcomes(metadata["airbyte_fleet/syncs"])[failed] == "failed"
    terminated = reports[4]
    assert not terminated["success"], (context, terminated)
    assert "DagsterExecutionInterruptedError" in terminated["error"]
    assert _statuses(sim, ids[8:11]) == ["cancelled"] * 3


async def test_terminating_the_async_dagster_asset_cancels_its_jobs(
    make_sim: SimFactory,
    tmp_path: Path,
    recipe_venvs: dict[str, Built],
    background: Background,
) -> None:
    _venv(recipe_venvs, DAGSTER)
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    ids = _scripted(sim, dict.fromkeys(range(3), LONG))
    scenarios = [{"asset": "airbyte_syncs_async", "connections": ids}]
    driven = await _drive(DAGSTER, tmp_path, root, scenarios, interrupt=(3, signal.SIGINT))
    assert not driven.reports[0]["success"]
    assert _statuses(sim, ids) == ["cancelled"] * 3, driven.printed[-3000:]


# --------------------------------------------------------------------------- Airflow


async def test_airflow_task_returns_xcom_fails_without_retry_and_cancels_when_stopped(
    make_sim: SimFactory,
    tmp_path: Path,
    recipe_venvs: dict[str, Built],
    background: Background,
) -> None:
    built = _venv(recipe_venvs, AIRFLOW)
    sim, root = await make_sim(connections=8, client_secret=SECRET)
    ids = _scripted(sim, {4: FAILS, 5: LONG, 6: LONG, 7: LONG})
    names = _names(sim)
    scenarios = [
        {"connections": ids[0:2]},
        {"connections": ids[2:5]},  # ids[4] fails
        {"connections": ids[5:8]},  # the task is stopped
    ]
    # Airflow stops a task (marked failed, cleared, its DAG run stopped) with SIGTERM.
    driven = await _drive(AIRFLOW, tmp_path, root, scenarios, interrupt=(8, signal.SIGTERM))
    _triggered_once_each(sim, ids)
    context = f"airflow {built.versions}"
    # The library's records in the task's log, with nothing configured.
    assert driven.printed.count("sync_triggered") == len(ids), driven.printed[-3000:]
    ok, failed, stopped = driven.reports
    assert (ok["dag_run"], ok["task"]) == ("success", "success"), (context, ok)
    assert ok["xcom"]["outcome"] == "succeeded"
    assert ok["xcom"]["counts"] == {"succeeded": 2}
    assert ok["xcom"]["rows_synced"] > 0
    assert [s["connection_id"] for s in ok["xcom"]["syncs"]] == ids[0:2]
    assert ok["failure_xcom"] is None
    assert (failed["dag_run"], failed["task"]) == ("failed", "failed"), (context, failed)
    # The DAG allows retries; these runs were not retried (and triggered nothing again).
    assert failed["max_tries"] == 2
    assert failed["try_number"] == 1
    assert failed["xcom"] is None
    metadata = failed["failure_xcom"]
    assert metadata["counts"] == {"succeeded": 2, "failed": 1}
    assert _outcomes(metadata["syncs"])[ids[4]] == "failed"
    assert names[ids[4]] in metadata["summary"]
    assert f"AirflowFailException: {metadata['summary']}" in driven.printed
    assert (stopped["dag_run"], stopped["task"]) == ("failed", "failed"), (context, stopped)
    assert stopped["try_number"] == 1
    assert "AirflowTaskTerminated" in driven.printed
    assert _statuses(sim, ids[5:8]) == ["cancelled"] * 3


# --------------------------------------------------------------------------- Prefect


async def test_prefect_flows_create_artifacts_fail_and_cancel_on_timeout(
    make_sim: SimFactory,
    tmp_path: Path,
    recipe_venvs: dict[str, Built],
    background: Background,
) -> None:
    built = _venv(recipe_venvs, PREFECT)
    sim, root = await make_sim(connections=10, client_secret=SECRET)
    ids = _scripted(sim, {5: FAILS, 7: FAILS, 8: LONG, 9: LONG})
    names = _names(sim)
    scenarios: list[dict[str, Any]] = [
        {"flow": "airbyte_syncs", "connections": ids[0:2]},
        {"flow": "airbyte_syncs_async", "connections": ids[2:4]},
        {"flow": "airbyte_syncs", "connections": ids[4:6]},  # ids[5] fails
        {"flow": "airbyte_syncs_async", "connections": ids[6:8]},  # ids[7] fails
        {"flow": "airbyte_syncs", "connections": ids[8:10], "timeout_seconds": 4},
    ]
    assert background.prefect is not None
    driven = await _drive(
        PREFECT,
        tmp_path,
        root,
        scenarios,
        PREFECT_API_URL=await background.prefect.ready(),
        PREFECT_LOGGING_EXTRA_LOGGERS="airbyte_fleet",
    )
    _triggered_once_each(sim, ids)
    context = f"prefect {built.versions}"
    # The library's records in the flow runs' logs, as the example's docstring says.
    assert driven.printed.count("sync_triggered") == len(ids), driven.printed[-3000:]
    reports = driven.reports
    for report, scenario in zip(reports[:2], scenarios[:2], strict=True):
        assert report["state"] == "COMPLETED", (context, report)
        assert report["result"]["outcome"] == "succeeded"
        assert report["result"]["counts"] == {"succeeded": 2}
        assert report["result"]["rows_synced"] > 0
        (artifact,) = report["artifacts"]
        assert artifact["key"] == "airbyte-syncs"
        assert [row["connection_id"] for row in artifact["data"]] == scenario["connections"]
        assert artifact["description"].startswith(f"Run {report['result']['run_id']} succeeded")
    for report, failed in zip(reports[2:4], (ids[5], ids[7]), strict=True):
        assert report["state"] == "FAILED", (context, report)
        assert report["result"] is None
        (artifact,) = report["artifacts"]
        summary = artifact["description"]
        assert names[failed] in summary
        assert summary in report["message"]
        assert _outcomes(artifact["data"])[failed] == "failed"
    timed_out = reports[4]
    assert timed_out["state"] == "FAILED", (context, timed_out)
    assert "timeout" in timed_out["message"]
    assert _statuses(sim, ids[8:10]) == ["cancelled"] * 2


async def test_a_timed_out_async_prefect_flow_cancels_its_jobs(
    make_sim: SimFactory,
    tmp_path: Path,
    recipe_venvs: dict[str, Built],
    background: Background,
) -> None:
    _venv(recipe_venvs, PREFECT)
    sim, root = await make_sim(connections=2, client_secret=SECRET)
    ids = _scripted(sim, {0: LONG, 1: LONG})
    scenarios = [{"flow": "airbyte_syncs_async", "connections": ids, "timeout_seconds": 4}]
    assert background.prefect is not None
    driven = await _drive(
        PREFECT,
        tmp_path,
        root,
        scenarios,
        PREFECT_API_URL=await background.prefect.ready(),
        PREFECT_LOGGING_EXTRA_LOGGERS="airbyte_fleet",
    )
    assert driven.reports[0]["state"] == "FAILED"
    assert "jobs_left_running" not in driven.printed
    assert _statuses(sim, ids) == ["cancelled"] * 2


# --------------------------------------------------------------------------- mypy


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_the_example_passes_mypy_strict(
    recipe: Recipe, recipe_venvs: dict[str, Built], background: Background
) -> None:
    built = _venv(recipe_venvs, recipe)
    check = background.typechecks[recipe.name]
    try:
        check.process.wait(timeout=MYPY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mypy on {recipe.example} took over {MYPY_TIMEOUT_S:.0f} s")
    output = check.output.read_text(errors="replace")
    assert check.process.returncode == 0, f"{built.versions}\n{output}"
    assert "Success: no issues found in 1 source file" in output
