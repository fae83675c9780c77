"""Staged runs in the worker: ``POST /runs`` naming groups (with ``with_upstream``), and a
schedule naming groups, end to end against the simulator; every answer checked against the
worker's /openapi.json (the SSE stream's group events included)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airbyte_fleet.service.schedules import ScheduleState, StoredState
from airbyte_fleet.settings_file import FileConfig
from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory

from .support import FAST_RUN, until, worker

pytestmark = pytest.mark.anyio


def _posts(sim: Simulator) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for exchange in sim.exchanges:
        if exchange.method == "POST" and exchange.route == "/jobs":
            cid = json.loads(exchange.request_body)["connectionId"]
            found.setdefault(cid, []).append(exchange.at)
    return found


def _groups(raw: list[str], marts: list[str]) -> dict[str, dict[str, Any]]:
    return {
        "raw": {"connections": raw},
        "marts": {"connections": marts, "after": ["raw"]},
    }


async def test_post_runs_with_groups_and_with_upstream_runs_the_stages_in_order(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3)
    a, b, c = (x["connectionId"] for x in sim.connections)
    sim.script(a, JobScript(seconds=0.4))
    file = FileConfig(run=FAST_RUN, groups=_groups([a], [b, c]))
    async with worker(root, tmp_path, file=file) as (_, api):
        run_id = await api.submit({"groups": ["marts"], "with_upstream": True})
        events = await api.events(run_id)
        result = await api.finished(run_id)
    assert result["outcome"] == "succeeded"
    assert [(g["group"], g["outcome"], g["after"]) for g in result["groups"]] == [
        ("raw", "succeeded", []),
        ("marts", "succeeded", ["raw"]),
    ]
    kinds = [(e.event, e.data.get("group")) for e in events if e.event.startswith("group_")]
    assert kinds == [
        ("group_started", "raw"),
        ("group_finished", "raw"),
        ("group_started", "marts"),
        ("group_finished", "marts"),
    ]
    (marts_end,) = [
        e.data for e in events if e.event == "group_finished" and e.data["group"] == "marts"
    ]
    assert marts_end["counts"] == {"succeeded": 2}
    at = {cid: times[0] for cid, times in _posts(sim).items()}
    assert min(at[b], at[c]) >= at[a] + 0.4
    assert all(len(times) == 1 for times in _posts(sim).values())


async def test_a_bad_graph_in_a_request_is_refused_and_nothing_is_triggered(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3)
    groups = {
        "raw": {"names": ["no-such-connection*"]},
        "marts": {"all": True, "after": ["raw"]},
    }
    async with worker(root, tmp_path, file=FileConfig(run=FAST_RUN, groups=groups)) as (_, api):
        answer = await api.call("POST", "/runs", body={"selection": {"groups": ["marts", "raw"]}})
    assert answer.status == 422, answer
    assert "Group raw selects no connection" in json.dumps(answer.body)
    assert sim.count("POST", "/jobs") == 0


async def test_a_schedule_naming_groups_runs_them_staged(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3)
    a, b, c = (x["connectionId"] for x in sim.connections)
    sim.script(a, JobScript(seconds=0.4))
    # The schedule last fired over a minute ago: the minute's tick is due as the worker starts.
    ago = datetime.now(UTC) - timedelta(seconds=61)
    ScheduleState(last_fired={"nightly": ago}).write(tmp_path / ScheduleState.FILE_NAME)
    file = FileConfig(
        run=FAST_RUN,
        groups=_groups([a, b], [c]),
        schedules={"nightly": {"cron": "* * * * *", "groups": ["raw", "marts"]}},
    )
    async with worker(root, tmp_path, file=file) as (running, api):

        async def finished() -> bool:
            runs = (await api.call("GET", "/runs")).body["runs"]
            return len(runs) == 1 and runs[0]["state"] == "finished"

        await until(finished, within=20)
        run_id = StoredState(running.worker.coordinator).read().run_ids["nightly"]
        result = (await api.call("GET", f"/runs/{run_id}")).body["result"]
    assert result["outcome"] == "succeeded"
    assert [g["group"] for g in result["groups"]] == ["raw", "marts"]
    at = {cid: times[0] for cid, times in _posts(sim).items()}
    assert at[c] >= at[a] + 0.4
