"""The journal from the command line: `runs`, `runs show`, and what `--resume` refuses."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import anyio
import pytest

from airbyte_fleet.journal import FILE_NAME
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
    assert len(_not_info(err)) == 1
    assert sim.count("POST", "/jobs") == 0


def _not_info(err: str) -> list[str]:
    """stderr's lines but the informational log lines (the config file it read, and such)."""
    return [line for line in err.strip().splitlines() if '"level": "info"' not in line]


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


# ----------------------------------------------------------------------------- reading creates nothing


@pytest.mark.parametrize("output", ["table", "json"])
async def test_runs_without_a_journal_creates_nothing(
    make_sim: SimFactory, tmp_path: Path, output: str
) -> None:
    _, root = await make_sim(connections=1)
    state = tmp_path / "never-used"
    code, out, err = await _cli("runs", "--output", output, root=root, state=state)
    assert code == 0, err
    if output == "json":
        assert json.loads(out) == []
    else:
        assert out.strip() == f"no runs yet in {state}"
    code, out, err = await _cli("runs", "show", "last", root=root, state=state)
    assert code == 2
    assert f"no runs yet in {state}" in err
    code, out, err = await _cli("run", "--resume", "last", root=root, state=state)
    assert code == 2
    assert "There is no run 'last'" in err
    assert not state.exists()


# ----------------------------------------------------------------------------- damaged journals


async def _one_finished_run(root: str, state: Path) -> str:
    code, out, err = await _cli(
        "run", "--all", "--poll-interval", "0.05", "--output", "json", root=root, state=state
    )
    assert code == 0, err
    run_id: str = json.loads(out)["run_id"]
    return run_id


def _behind_its_back(state: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(state / FILE_NAME)
    with db:
        db.execute(sql, args)
    db.close()


@pytest.mark.parametrize(
    ("damage", "what", "refused"),
    [
        ("UPDATE runs SET options = '{not json'", "Expecting property name", {"runs", "run"}),
        ("UPDATE runs SET started_at = 'yesterday'", "Invalid isoformat", {"runs", "run"}),
        ("UPDATE syncs SET intent_at = 'soon'", "Invalid isoformat", {"run"}),
    ],
)
async def test_unreadable_journal_content_is_one_sentence_and_exit_2(
    make_sim: SimFactory, tmp_path: Path, damage: str, what: str, refused: set[str]
) -> None:
    """Each command reads what it needs: ``runs`` the run rows, ``runs show`` the events (which
    the damage spares), ``run --resume`` both; what it cannot read is one sentence, exit 2."""
    sim, root = await make_sim(connections=2)
    run_id = await _one_finished_run(root, tmp_path)
    # The run is made resumable first, so that --resume has to read it.
    _behind_its_back(tmp_path, "UPDATE runs SET finished_at = NULL, outcome = NULL")
    _behind_its_back(tmp_path, damage)
    for args in (("runs",), ("runs", "show", run_id), ("run", "--resume", "last")):
        code, out, err = await _cli(*args, root=root, state=tmp_path)
        assert "Traceback" not in err
        if args[0] not in refused or args[1:2] == ("show",):
            assert code == 0, (args, err)
            continue
        assert code == 2, (args, err)
        assert out == ""
        (line,) = _not_info(err)
        assert str(tmp_path / FILE_NAME) in line
        assert what in line
        assert "move it aside" in line
    assert sim.count("POST", "/jobs") == 2


async def test_a_file_that_is_not_a_journal_is_named_with_what_to_do(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    (tmp_path / FILE_NAME).write_bytes(b"these are my notes, not a database\n" * 200)
    for args in (
        ("runs",),
        ("runs", "show", "last"),
        ("run", "--resume", "last"),
        ("run", "--all"),
    ):
        code, out, err = await _cli(*args, root=root, state=tmp_path)
        assert code == 2, (args, err)
        assert out == ""
        (line,) = _not_info(err)
        assert f"The journal at {tmp_path / FILE_NAME} cannot be read" in line
        assert "not a database" in line
        assert "move it aside" in line
    assert sim.count("POST", "/jobs") == 0
    assert (tmp_path / FILE_NAME).read_bytes().startswith(b"these are my notes")


async def test_events_of_unknown_kinds_or_bad_json_are_skipped_with_a_warning(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=2)
    run_id = await _one_finished_run(root, tmp_path)
    _behind_its_back(
        tmp_path,
        "INSERT INTO events (run_id, seq, kind, data) VALUES (?, 1000, 'sync_paused', "
        '\'{"event": "sync_paused"}\')',
        run_id,
    )
    _behind_its_back(
        tmp_path,
        "UPDATE events SET data = '{oops' WHERE run_id = ? AND kind = 'sync_succeeded'",
        run_id,
    )
    code, out, err = await _cli(
        "runs", "show", run_id, "--output", "json", root=root, state=tmp_path
    )
    assert code == 0, err
    assert "Traceback" not in err
    assert len(json.loads(out)["syncs"]) == 2
    warned = [json.loads(line)["event"] for line in err.splitlines() if '"warning"' in line]
    assert "journal_event_kind_unknown" in warned
    assert "journal_event_unreadable" in warned
