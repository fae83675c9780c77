"""The journal from the command line: `runs`, `runs show`, and what `--resume` refuses."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from airbyte_fleet.simulator import JobScript
from conftest import SimFactory

pytestmark = pytest.mark.anyio


async def _cli(*args: str, root: str, state: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET="sim-secret",
        AIRBYTE_FLEET_STATE_DIR=str(state),
    )
    done = await anyio.run_process(
        [sys.executable, "-m", "airbyte_fleet", *args], env=env, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_runs_lists_and_shows_what_run_printed(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=4)
    sim.script(sim.connections[0]["connectionId"], JobScript(seconds=0.1, final="failed"))
    code, out, err = await _cli(
        "run", "--all", "--poll-interval", "0.05", "--output", "json", root=root, state=tmp_path
    )
    assert code == 1, err
    printed = json.loads(out)

    code, out, err = await _cli("runs", "--output", "json", root=root, state=tmp_path)
    assert code == 0, err
    (listed,) = json.loads(out)
    assert listed["run_id"] == printed["run_id"]
    assert listed["outcome"] == "failed"
    assert listed["counts"]["failed"] == 1
    assert listed["counts"]["succeeded"] == 3

    code, out, err = await _cli(
        "runs", "show", "last", "--output", "json", root=root, state=tmp_path
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["run_id"] == printed["run_id"]
    assert [(s["connection_id"], s["outcome"], s["job_id"]) for s in shown["syncs"]] == [
        (s["connection_id"], s["outcome"], s["job_id"]) for s in printed["syncs"]
    ]
    assert shown["counts"] == printed["counts"]

    code, out, err = await _cli("runs", "show", printed["run_id"], root=root, state=tmp_path)
    assert code == 0, err
    assert sim.connections[0]["connectionId"] in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("runs", "show", "20990101T000000Z-deadbeef"), "There is no run"),
        (("run", "--resume", "20990101T000000Z-deadbeef"), "There is no run"),
        (("run", "--resume", "last", "--all"), "--resume carries on the run's own selection"),
        (("runs", "--limit", "0"), "expected 1 or more"),
    ],
)
async def test_journal_misuse_is_one_sentence_and_exit_2(
    make_sim: SimFactory, tmp_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    sim, root = await make_sim(connections=1)
    code, out, err = await _cli(*args, root=root, state=tmp_path)
    assert code == 2
    assert out == ""
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert sim.count("POST", "/jobs") == 0


async def test_a_finished_run_is_not_resumed(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=2)
    code, _, err = await _cli(
        "run", "--all", "--poll-interval", "0.05", "--output", "json", root=root, state=tmp_path
    )
    assert code == 0, err
    code, out, err = await _cli("run", "--resume", "last", root=root, state=tmp_path)
    assert code == 2
    assert out == ""
    assert "already finished" in err
    assert sim.count("POST", "/jobs") == 2
