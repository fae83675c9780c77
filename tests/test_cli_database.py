"""The command line on a shared store: ``--database-url`` (never shown with its password),
``migrate``, and the lease ``run`` holds on its run (``--resume`` waits for a dead holder's lease,
refuses a live one; a run whose lease passed to another process stops without touching its jobs).

Real processes, the simulator over loopback, a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from airbyte_fleet.coordination import Coordinator, open_coordinator
from airbyte_fleet.journal import FILE_NAME, SCHEMA_VERSION
from airbyte_fleet.simulator import JobScript
from conftest import SimFactory

pytestmark = pytest.mark.anyio

PASSWORD = "SECRETPW-7731"
# Nothing listens on port 1 of the loopback address: every connection is refused at once.
NO_DATABASE = f"postgresql://fleet:{PASSWORD}@127.0.0.1:1/runs"
NOWHERE = "http://127.0.0.1:9"
RUN = ["run", "--all", "--output", "json", "--poll-interval", "0.05"]


def _env(root: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET="sim-secret",
        **extra,
    )
    return env


async def _cli(*args: str, env: dict[str, str], cwd: Path | None = None) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "airbyte_fleet", *args], env=env, check=False, cwd=cwd
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def _not_info(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if '"level": "info"' not in line]


def _events(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


# ----------------------------------------------------------------------------- the password


EVERY_COMMAND = (
    ("runs",),
    ("runs", "show", "last"),
    ("migrate",),
    ("migrate", "--output", "json"),
    ("run", "--all"),
    ("run", "--resume", "last"),
    ("serve", "--port", "0"),
)


@pytest.mark.parametrize(
    ("given", "commands"),
    [
        pytest.param({"flag": NO_DATABASE}, EVERY_COMMAND, id="flag"),
        # The other ways in reach the same code: one reader, one writer each.
        pytest.param({"env": NO_DATABASE}, EVERY_COMMAND[::4], id="variable"),
        pytest.param({"file": NO_DATABASE}, EVERY_COMMAND[::4], id="file"),
        pytest.param(
            {"flag": f"postgresql://fleet@127.0.0.1:1/runs?password={PASSWORD}"},
            EVERY_COMMAND[::2],
            id="query",
        ),
    ],
)
async def test_the_database_password_is_never_shown(
    tmp_path: Path, given: dict[str, str], commands: tuple[tuple[str, ...], ...]
) -> None:
    env = _env(NOWHERE, AIRBYTE_AUTH_TYPE="none", AIRBYTE_FLEET_STATE_DIR=str(tmp_path / "s"))
    flags: list[str] = []
    if "flag" in given:
        flags = ["--database-url", given["flag"]]
    if "env" in given:
        env["AIRBYTE_FLEET_DATABASE_URL"] = given["env"]
    if "file" in given:
        config = tmp_path / "fleet.toml"
        config.write_text(f'database_url = "{given["file"]}"\n')
        env["AIRBYTE_FLEET_CONFIG"] = str(config)
    for command in commands:
        code, out, err = await _cli(*command, *flags, "--log-level", "debug", env=env)
        assert code == 2, (command, err)
        assert PASSWORD not in out + err, command
        assert "Traceback" not in err
        (line,) = _not_info(err)
        assert "127.0.0.1:1/runs" in line, (command, line)  # the database, by its URL
    assert not (tmp_path / "s").exists()  # nothing fell back to the SQLite journal


async def test_help_shows_no_database_url(tmp_path: Path) -> None:
    env = _env(NOWHERE, AIRBYTE_FLEET_DATABASE_URL=NO_DATABASE)
    for command in ("run", "runs", "serve", "migrate"):
        code, out, err = await _cli(command, "--help", env=env)
        assert code == 0, err
        assert "--database-url URL" in out
        assert PASSWORD not in out + err


# ----------------------------------------------------------------------------- migrate


async def test_migrate_creates_the_sqlite_journal_then_finds_it_current(tmp_path: Path) -> None:
    env = _env(NOWHERE, AIRBYTE_FLEET_STATE_DIR=str(tmp_path / "state"))
    code, out, err = await _cli("migrate", env=env)
    assert code == 0, err
    assert out == f"schema at version {SCHEMA_VERSION} (was 0)\n"
    assert (tmp_path / "state" / FILE_NAME).is_file()
    code, out, err = await _cli("migrate", "--output", "json", env=env)
    assert code == 0, err
    assert json.loads(out) == {
        "store": str(tmp_path / "state" / FILE_NAME),
        "version": SCHEMA_VERSION,
        "was": SCHEMA_VERSION,
    }


async def test_migrate_on_postgres(pg_url: str) -> None:
    env = _env(NOWHERE)
    code, out, err = await _cli("migrate", "--database-url", pg_url, "--output", "json", env=env)
    assert code == 0, err
    first = json.loads(out)
    assert first["was"] == 0
    assert first["version"] >= 2  # the journal's tables, then the coordination tables
    assert first["store"] == pg_url  # no password in the test server's URL to hide
    with psycopg.connect(pg_url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert {"runs", "syncs", "events", "run_leases", "worker_runs"} <= tables
    code, out, err = await _cli("migrate", env=env | {"AIRBYTE_FLEET_DATABASE_URL": pg_url})
    assert code == 0, err
    assert out == f"schema at version {first['version']} (was {first['version']})\n"


async def test_migrate_that_cannot_write_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = await _cli("migrate", "--state-dir", str(blocker / "state"), env=_env(NOWHERE))
    assert code == 2
    assert out == ""
    (line,) = _not_info(err)
    assert f"Cannot use the state directory '{blocker / 'state'}'" in line


# ----------------------------------------------------------------------------- the backends


@dataclass
class Backend:
    """One store, as the command line and the test reach it."""

    name: str
    state: Path
    url: str | None

    def env(self, root: str, **extra: str) -> dict[str, str]:
        found = {"AIRBYTE_FLEET_STATE_DIR": str(self.state)}
        if self.url is not None:
            found["AIRBYTE_FLEET_DATABASE_URL"] = self.url
        return _env(root, **found, **extra)

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run *statement* behind the command line's back (no parameters: both dialects)."""
        if self.url is None:
            conn = sqlite3.connect(self.state / FILE_NAME)
            try:
                with conn:
                    return conn.execute(statement).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.url, autocommit=True) as pg:
            cursor = pg.execute(statement.encode())
            return cursor.fetchall() if cursor.description else []

    def coordinator(self, lease_seconds: float) -> Coordinator:
        return open_coordinator(
            database_url=self.url, state_dir=self.state, lease_seconds=lease_seconds
        )


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    return Backend(request.param, tmp_path / "state", url)


async def _an_unfinished_run(backend: Backend, root: str) -> str:
    """A run every sync of which ended, left unfinished as a killed process leaves it."""
    code, out, err = await _cli(*RUN, env=backend.env(root))
    assert code == 0, err
    run_id = str(json.loads(out)["run_id"])
    backend.sql("UPDATE runs SET finished_at = NULL, outcome = NULL")
    return run_id


async def test_runs_lists_what_run_stored(backend: Backend, make_sim: SimFactory) -> None:
    _, root = await make_sim(connections=3)
    code, out, err = await _cli("runs", env=backend.env(root))
    assert code == 0, err
    shown = str(backend.state) if backend.url is None else backend.url
    assert out == f"no runs yet in {shown}\n"
    code, out, err = await _cli(*RUN, env=backend.env(root))
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    code, out, err = await _cli("runs", "--output", "json", env=backend.env(root))
    assert code == 0, err
    (listed,) = json.loads(out)
    assert listed["run_id"] == run_id
    assert listed["counts"]["succeeded"] == 3
    # The run's lease went with its end: nothing holds it.
    assert backend.sql("SELECT run_id FROM run_leases") == []


async def test_resume_refuses_a_run_another_live_process_holds(
    backend: Backend, make_sim: SimFactory
) -> None:
    sim, root = await make_sim(connections=2)
    run_id = await _an_unfinished_run(backend, root)
    holder = backend.coordinator(lease_seconds=60)
    try:
        holder.acquire(run_id)
        code, out, err = await _cli(
            "run", "--resume", run_id, "--lease", "300ms", env=backend.env(root)
        )
    finally:
        holder.close()
    assert code == 2, err
    assert out == ""
    (line,) = _not_info(err)
    assert (
        f"Run {run_id} is being run by {holder.owner}; stop that process or wait for it to end."
    ) in line
    (waiting,) = [e for e in _events(err) if e["event"] == "waiting_for_lease"]
    assert waiting["message"].startswith(
        f"waiting for run {run_id}'s lease, held by {holder.owner}"
    )
    assert sim.count("POST", "/jobs") == 2  # the first run's, nothing more


async def test_resume_waits_for_a_dead_holders_lease_then_carries_on(
    backend: Backend, make_sim: SimFactory
) -> None:
    sim, root = await make_sim(connections=2)
    run_id = await _an_unfinished_run(backend, root)
    dead = backend.coordinator(lease_seconds=3.0)
    dead.acquire(run_id)
    dead.close()  # never renewed: its lease runs out within 3 s, while the resume waits
    code, out, err = await _cli(
        "run", "--resume", run_id, "--output", "json", "--lease", "2s", env=backend.env(root)
    )
    assert code == 0, err
    assert json.loads(out)["run_id"] == run_id
    assert [e["event"] for e in _events(err)].count("waiting_for_lease") == 1
    assert sim.count("POST", "/jobs") == 2  # nothing triggered twice
    assert backend.sql("SELECT run_id FROM run_leases") == []


async def test_a_run_whose_lease_was_taken_stops_without_touching_its_jobs(
    backend: Backend, make_sim: SimFactory
) -> None:
    sim, root = await make_sim(connections=2)
    for connection in sim.connections:
        sim.script(connection["connectionId"], JobScript(seconds=30))
    env = backend.env(root)
    # Files, not pipes: nobody reads while the test waits, and a full pipe would stall the run.
    out_path, err_path = backend.state.parent / "out", backend.state.parent / "err"
    with out_path.open("wb") as out_file, err_path.open("wb") as err_file:
        process = await anyio.open_process(
            [sys.executable, "-m", "airbyte_fleet", *RUN, "--lease", "600ms"],
            env=env,
            stdout=out_file,
            stderr=err_file,
        )
        try:
            with anyio.fail_after(20):
                while sim.count("POST", "/jobs") < 2:
                    if process.returncode is not None:
                        raise AssertionError(err_path.read_text())
                    await anyio.sleep(0.02)
            ((run_id,),) = backend.sql("SELECT run_id FROM run_leases")
            # Another process takes the run, as if this one had been cut off past its lease.
            backend.sql("DELETE FROM run_leases")
            thief = backend.coordinator(lease_seconds=60)
            try:
                thief.acquire(run_id)
                with anyio.fail_after(20):
                    code = await process.wait()
            finally:
                thief.close()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    err = err_path.read_text()
    assert code == 4, err
    assert out_path.read_text() == ""
    (fatal,) = [e for e in _events(err) if e["event"] == "fatal"]
    assert fatal["error"].startswith(f"Run {run_id} could not keep its lease")
    assert fatal["exit_code"] == 4
    assert sim.count("DELETE", "/jobs/{jobId}") == 0  # the jobs are the new holder's
