"""Staged runs through `airbyte-fleet run`: real processes against the simulator over loopback.

Bad graphs are refused with exit 2 before anything is triggered; ``--dry-run`` shows the stages;
``kill -9`` during the second stage, then ``--resume last``: the first stage is not triggered
again and the second finishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from airbyte_fleet.simulator import FakeClock, JobScript, Simulator
from conftest import SimFactory

pytestmark = pytest.mark.anyio

SECRET = "stages-Secret-1357-qrst"
FAST = ["--poll-interval", "0.05", "--retry-backoff", "0", "--output", "json"]
# Longer than any CLI run here takes on a loaded machine, far shorter than CI's limit.
RUN_LIMIT = 300


def _env(root: str, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        AIRBYTE_FLEET_STATE_DIR=str(state_dir),
        AIRBYTE_RETRY_WAIT_INITIAL="0.01",
    )
    return env


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return str(path)


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


def _list(ids: list[str]) -> str:
    return json.dumps(ids)


async def _run(root: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    with anyio.fail_after(RUN_LIMIT):
        done = await anyio.run_process(
            [sys.executable, "-m", "airbyte_fleet", "run", *args],
            env=_env(root, tmp_path / "state"),
            check=False,
        )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert SECRET not in out + err
    assert "Traceback" not in err
    return done.returncode, out, err


def _events(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def _fatal(err: str) -> str:
    (line,) = [e for e in _events(err) if e["event"] == "fatal"]
    message: str = line["error"]
    return message


async def test_a_staged_run_orders_its_groups_and_reports_them(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    a, b, c = _ids(sim)
    sim.script(a, JobScript(seconds=0.3))
    config = _config(
        tmp_path,
        f"""
[groups.raw]
connections = {_list([a, b])}

[groups.reverse_etl]
connections = {_list([c])}
after = ["raw"]
""",
    )
    code, out, err = await _run(
        root, tmp_path, "--config", config, "--group", "reverse_etl", "--with-upstream", *FAST
    )
    assert code == 0, err
    doc = json.loads(out)
    assert [(g["group"], g["outcome"], g["after"]) for g in doc["groups"]] == [
        ("raw", "succeeded", []),
        ("reverse_etl", "succeeded", ["raw"]),
    ]
    assert doc["groups"][0]["counts"] == {"succeeded": 2}
    (post_a,) = sim.posts_for(a)
    (post_c,) = sim.posts_for(c)
    assert post_c.at >= post_a.at + 0.3
    events = _events(err)
    started = [e["group"] for e in events if e["event"] == "group_started"]
    finished = [(e["group"], e["counts"]) for e in events if e["event"] == "group_finished"]
    assert started == ["raw", "reverse_etl"]
    assert finished == [("raw", {"succeeded": 2}), ("reverse_etl", {"succeeded": 1})]

    # The table output shows the groups too.
    code, out, err = await _run(
        root, tmp_path, "--config", config, "--group", "raw,reverse_etl", "--output", "table"
    )
    assert code == 0, err
    assert "groups" in out
    assert "reverse_etl" in out
    assert "2 succeeded" in out


async def test_dry_run_prints_the_stages_in_order(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    a, b, c = _ids(sim)
    names = {x["connectionId"]: x["name"] for x in sim.connections}
    config = _config(
        tmp_path,
        f"""
[groups.marts]
connections = {_list([b, c])}
after = ["raw"]
on_upstream_failure = "run"

[groups.raw]
connections = {_list([a, b])}
""",
    )
    code, out, err = await _run(
        root, tmp_path, "--config", config, "--group", "marts,raw", "--dry-run", "--output", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert [s["group"] for s in doc["stages"]] == ["raw", "marts"]
    raw, marts = doc["stages"]
    assert {x["connection_id"] for x in raw["connections"]} == {a, b}
    assert marts["after"] == ["raw"]
    assert marts["on_upstream_failure"] == "run"
    assert [x["connection_id"] for x in marts["connections"]] == [c]
    # b runs once, in raw; marts waits for it.
    assert [x["connection_id"] for x in marts["waits_for"]] == [b]
    assert len(doc["syncs"]) == 3

    code, out, err = await _run(
        root, tmp_path, "--config", config, "--group", "marts,raw", "--dry-run", "--output", "table"
    )
    assert code == 0, err
    assert out.index("raw") < out.index("marts")
    assert "nothing (starts at once)" in out
    assert f"(waits for {names[b]})" in out
    assert sim.count("POST", "/jobs") == 0


@pytest.mark.parametrize(
    ("groups", "args", "message"),
    [
        (
            '[groups.raw]\nall = true\nafter = ["marts"]\n'
            '[groups.marts]\nall = true\nafter = ["raw"]\n',
            ["--group", "raw"],
            "Groups in {file} wait for each other in a cycle (raw -> marts -> raw), so none "
            "could ever start; remove 'raw' from after in [groups.marts].",
        ),
        (
            '[groups.raw]\nall = true\n[groups.marts]\nall = true\nafter = ["rwa"]\n',
            ["--group", "marts"],
            "Key after=['rwa'] in [groups.marts] of {file} is invalid (it names unknown group "
            "'rwa' (did you mean 'raw'?)); define [groups.rwa] or remove it.",
        ),
        (
            '[groups.raw]\nnames = ["no-such-name*"]\n'
            '[groups.marts]\nall = true\nafter = ["raw"]\n',
            ["--group", "marts", "--with-upstream"],
            "Group raw selects no connection of the 3 these credentials can see, so a staged "
            "run cannot wait for it; fix its connections, names, tags or workspaces in the "
            "config file, or leave it out of the run.",
        ),
        (
            '[groups.raw]\nafter = ["marts"]\n[groups.marts]\nall = true\n',
            ["--group", "marts"],
            "Group [groups.raw] in {file} selects nothing",
        ),
    ],
    ids=["cycle", "unknown-after", "empty-group", "after-only"],
)
async def test_bad_graphs_exit_2_in_one_sentence_and_trigger_nothing(
    make_sim: SimFactory, tmp_path: Path, groups: str, args: list[str], message: str
) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    config = _config(tmp_path, groups)
    code, out, err = await _run(root, tmp_path, "--config", config, *args, *FAST)
    assert code == 2, err
    assert out == ""
    assert _fatal(err).startswith(message.format(file=config))
    assert sim.count("POST", "/jobs") == 0


async def _until(process: anyio.abc.Process, buffer: list[bytes], needle: bytes, n: int) -> None:
    """Read stderr into *buffer* until *needle* occurs *n* times."""
    assert process.stderr is not None
    while b"".join(buffer).count(needle) < n:
        buffer.append(await process.stderr.receive())


async def test_kill_9_in_the_second_stage_then_resume_last(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # Jobs move only when this clock does.
    clock = FakeClock(start=time.time())
    sim, root = await make_sim(clock=clock, connections=4, client_secret=SECRET)
    a, b, c, d = _ids(sim)
    for cid in (a, b):
        sim.script(cid, JobScript(seconds=1))
    for cid in (c, d):
        sim.script(cid, JobScript(seconds=5))
    config = _config(
        tmp_path,
        f"""
[groups.raw]
connections = {_list([a, b])}

[groups.marts]
connections = {_list([c, d])}
after = ["raw"]
""",
    )
    argv = [sys.executable, "-m", "airbyte_fleet", "run", "--config", config]
    argv += ["--group", "raw,marts", "--max-concurrency", "1", *FAST]
    process = await anyio.open_process(
        argv, env=_env(root, tmp_path / "state"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    err: list[bytes] = []
    try:
        with anyio.fail_after(60):
            # One at a time: a, then b (raw), then c (marts); d waits for c's slot.
            for n in (1, 2):
                await _until(process, err, b'"sync_triggered"', n)
                clock.advance(2)
            await _until(process, err, b'"sync_triggered"', 3)
            assert b"".join(err).count(b'"group_started"') == 2
    finally:
        process.kill()  # SIGKILL: no cleanup, no result, nothing cancelled
        await process.wait()
    assert {j["connectionId"] for j in sim.jobs} == {a, b, c}
    assert {j["connectionId"]: j["status"] for j in sim.jobs}[c] in {"pending", "running"}

    resumed: Any = None
    ended = anyio.Event()

    async def resume() -> None:
        nonlocal resumed
        try:
            resumed = await _run(root, tmp_path, "--resume", "last", *FAST)
        finally:
            ended.set()

    with anyio.fail_after(RUN_LIMIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(resume)
            while not ended.is_set():
                clock.advance(1)
                with anyio.move_on_after(0.2):
                    await ended.wait()
    code, out, stderr = resumed
    assert code == 0, stderr[-3000:]
    doc = json.loads(out)
    assert doc["outcome"] == "succeeded"
    # The first stage is not triggered again; c's job is followed again, d runs once.
    for cid in (a, b, c, d):
        assert len(sim.posts_for(cid)) == 1
    by_group = {g["group"]: g for g in doc["groups"]}
    assert by_group["raw"]["outcome"] == "succeeded"
    assert by_group["marts"]["outcome"] == "succeeded"
    assert by_group["marts"]["counts"] == {"succeeded": 2}
    assert by_group["raw"]["finished_at"] <= by_group["marts"]["started_at"]
    events = _events(stderr)
    # raw finished in the first process: it is not started again.
    assert [e["group"] for e in events if e["event"] == "group_started"] == ["marts"]
    assert [e["event"] for e in events if e.get("connection_id") == c][:1] == ["sync_adopted"]
