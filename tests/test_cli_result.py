"""What `airbyte-fleet run` writes, end to end against the simulator over loopback: the result
document, streamed to stdout and to --result-file, is the model's own byte for byte; the log has one
line a sync at its end, and each status change only at debug."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.simulator import JobScript, Simulator
from airbyte_fleet.sinks.log import TRIGGERS_AT_INFO
from conftest import SimFactory

pytestmark = pytest.mark.anyio

SECRET = "result-Secret-5678-qwer"
FAST = ["--poll-interval", "0.05", "--retry-backoff", "0"]


async def _cli(root: str, state: Path, *args: str) -> tuple[int, str, list[dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        AIRBYTE_FLEET_STATE_DIR=str(state),
        # The document is UTF-8 whatever the locale would say.
        PYTHONIOENCODING="utf-8",
    )
    done = await anyio.run_process(
        [sys.executable, "-m", "airbyte_fleet", *args], env=env, check=False
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert SECRET not in out + err
    assert "Traceback" not in err
    return done.returncode, out, [json.loads(line) for line in err.splitlines()]


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


async def test_the_streamed_document_is_the_models_and_the_journals(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=6, client_secret=SECRET, inactive_connections=1)
    ids = _ids(sim)
    # One sync fails for good after its retry, one succeeds on its retry: histories of 2 jobs.
    sim.script(ids[0], JobScript(seconds=0.05, final="failed"))
    sim.script(ids[0], JobScript(seconds=0.05, final="failed"))
    sim.script(ids[1], JobScript(seconds=0.05, final="failed"))
    result_file = tmp_path / "out" / "result.json"
    code, out, lines = await _cli(
        root,
        tmp_path / "state",
        "run",
        "--all",
        "--retries",
        "1",
        *FAST,
        "--output",
        "json",
        "--result-file",
        str(result_file),
    )
    assert code == 1, lines[-3:]
    result = RunResult.model_validate_json(out)
    # Byte for byte what the model writes, on stdout and in the file alike.
    assert out == result.model_dump_json(indent=2) + "\n"
    assert result_file.read_bytes() == out.encode()
    # Names are written as they are (the simulator's have an arrow), not escaped.
    assert "→" in out
    assert "\\u2192" not in out
    by_id = {s.connection_id: s for s in result.syncs}
    assert (by_id[ids[0]].outcome, by_id[ids[0]].attempts) == ("failed", 2)
    assert (by_id[ids[1]].outcome, by_id[ids[1]].attempts) == ("succeeded", 2)
    assert [s.outcome for s in result.syncs].count("skipped") == 1
    assert result.counts["succeeded"] == 4

    # The journal's replay of the run prints the very same document.
    code, shown, _ = await _cli(
        root, tmp_path / "state", "runs", "show", "last", "--output", "json"
    )
    assert code == 0
    assert shown == out

    # The log: each sync's trigger and its end at info, no status change.
    kinds = [line["event"] for line in lines]
    assert "sync_status_changed" not in kinds
    assert kinds.count("sync_triggered") == 7  # five syncs, two of them twice
    ends = [line for line in lines if line["event"] in ("sync_succeeded", "sync_failed")]
    assert sorted(line["connection_id"] for line in ends) == sorted(ids[:5])
    assert {line["level"] for line in ends} == {"info", "error"}


async def test_status_changes_are_logged_at_debug(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=2, client_secret=SECRET)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=0.3))
    code, _, lines = await _cli(
        root, tmp_path, "--log-level", "debug", "run", "--all", *FAST, "--output", "json"
    )
    assert code == 0
    changes = [line for line in lines if line["event"] == "sync_status_changed"]
    assert changes
    assert {line["level"] for line in changes} == {"debug"}
    assert {line["connection_id"] for line in changes} == set(_ids(sim))


async def test_a_large_run_logs_one_line_a_sync(make_sim: SimFactory, tmp_path: Path) -> None:
    total = TRIGGERS_AT_INFO + 1
    sim, root = await make_sim(connections=total, client_secret=SECRET)
    code, out, lines = await _cli(
        root, tmp_path, "run", "--all", "--max-concurrency", str(total), *FAST, "--output", "json"
    )
    assert code == 0
    assert len(json.loads(out)["syncs"]) == total
    kinds = [line["event"] for line in lines]
    assert "sync_triggered" not in kinds
    assert "sync_status_changed" not in kinds
    assert kinds.count("sync_succeeded") == total
    assert sim.count("POST", "/jobs") == total
