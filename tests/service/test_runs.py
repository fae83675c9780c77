"""Runs in the worker: queueing, cancelling, sharing a connection between runs, and stopping."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from airbyte_fleet.journal import FILE_NAME, Journal
from airbyte_fleet.service import ServeOptions, serve
from airbyte_fleet.settings_file import FileConfig
from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory

from .support import FAST_RUN, TOKEN, Api, settings_for, worker

pytestmark = pytest.mark.anyio


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


def _sync(result: dict[str, Any], cid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in result["syncs"] if s["connection_id"] == cid)
    return found


async def _triggered(api: Api, run_id: str, count: int = 1) -> None:
    seen = 0

    def enough(event: Any) -> bool:
        nonlocal seen
        seen += event.event in ("sync_triggered", "sync_adopted")
        return seen >= count

    await api.events(run_id, until=enough)


# --------------------------------------------------------------------------- cancel and queue


async def test_cancel_cancels_the_runs_jobs_in_airbyte(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=2)
    ids = _ids(sim)
    for cid in ids:
        sim.script(cid, JobScript(seconds=30))
    async with worker(root, tmp_path) as (_, api):
        run_id = await api.submit({"connections": ids})
        await _triggered(api, run_id, 2)
        answer = await api.call("POST", f"/runs/{run_id}/cancel")
        assert answer.status == 202
        assert answer.body["run_id"] == run_id
        events = await api.events(run_id)
        assert events[-1].event == "run_finished"
        assert events[-1].data["outcome"] == "interrupted"
        result = await api.finished(run_id)
        assert result["outcome"] == "interrupted"
        assert [s["outcome"] for s in result["syncs"]] == ["cancelled", "cancelled"]
        again = await api.call("POST", f"/runs/{run_id}/cancel")
        assert again.status == 409
        assert "already finished" in again.body["error"]
        assert (await api.call("POST", "/runs/nope/cancel")).status == 404
        assert (await api.call("GET", "/runs/nope")).status == 404
        assert (await api.call("GET", "/runs/nope/events")).status == 404
    for cid in ids:
        assert [j["status"] for j in sim.jobs_for(cid)] == ["cancelled"]
        assert len(sim.posts_for(cid)) == 1


async def test_runs_over_the_cap_wait_in_the_queue(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=2)
    first, second = _ids(sim)
    sim.script(first, JobScript(seconds=0.5))
    async with worker(root, tmp_path, max_runs=1) as (_, api):
        a = await api.submit({"connections": [first]})
        b = await api.submit({"connections": [second]})
        status = await api.call("GET", f"/runs/{b}")
        assert status.body == {
            "run_id": b,
            "state": "queued",
            "result": None,
            "error": None,
            "owner": None,
        }
        listed = await api.call("GET", "/runs")
        assert [(r["run_id"], r["state"]) for r in listed.body["runs"]] == [
            (b, "queued"),
            (a, "running"),
        ]
        paged = await api.call("GET", "/runs?limit=1&offset=1")
        assert [r["run_id"] for r in paged.body["runs"]] == [a]
        result_b = await api.finished(b)
        result_a = await api.finished(a)
        assert result_a["outcome"] == result_b["outcome"] == "succeeded"
        # B's sync was triggered only once A had finished.
        assert _sync(result_b, second)["started_at"] >= result_a["finished_at"]


async def test_cancelling_a_queued_run_ends_it_without_triggering(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=2)
    first, second = _ids(sim)
    sim.script(first, JobScript(seconds=0.6))
    async with worker(root, tmp_path, max_runs=1) as (_, api):
        a = await api.submit({"connections": [first]})
        b = await api.submit({"connections": [second]})
        cancelled = await api.call("POST", f"/runs/{b}/cancel")
        assert cancelled.status == 202
        result_b = await api.finished(b, within=5)
        assert result_b["outcome"] == "interrupted"
        assert _sync(result_b, second)["outcome"] == "skipped"
        assert (await api.finished(a))["outcome"] == "succeeded"
    assert sim.posts_for(second) == []


# --------------------------------------------------------------------------- one trigger per connection


async def test_two_runs_selecting_one_connection_trigger_it_once(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # A slow POST /jobs holds the first trigger open: without the worker's own guard the second
    # run would send its POST before Airbyte could answer 409.
    sim, root = await make_sim(connections=2, slow_post_seconds=0.3)
    shared, other = _ids(sim)
    sim.script(shared, JobScript(seconds=0.8))
    async with worker(root, tmp_path) as (_, api):
        a, b = await asyncio.gather(
            api.submit({"connections": [shared]}),
            api.submit({"connections": [shared, other]}),
        )
        result_a, result_b = await api.finished(a), await api.finished(b)
    assert len(sim.posts_for(shared)) == 1
    assert len(sim.posts_for(other)) == 1
    mine, theirs = _sync(result_a, shared), _sync(result_b, shared)
    assert mine["outcome"] == theirs["outcome"] == "succeeded"
    assert mine["job_id"] == theirs["job_id"]
    # Exactly one of the two triggered it; the other adopted that job.
    assert sorted([mine["history"][0]["adopted"], theirs["history"][0]["adopted"]]) == [
        False,
        True,
    ]
    assert result_a["outcome"] == result_b["outcome"] == "succeeded"


@pytest.mark.parametrize(
    ("policy", "outcome"), [("skip", "skipped"), ("fail", "error"), ("adopt", "succeeded")]
)
async def test_the_second_run_follows_its_if_running_policy(
    make_sim: SimFactory, tmp_path: Path, policy: str, outcome: str
) -> None:
    sim, root = await make_sim(connections=1)
    (shared,) = _ids(sim)
    sim.script(shared, JobScript(seconds=0.8))
    async with worker(root, tmp_path) as (_, api):
        a = await api.submit({"connections": [shared]})
        await _triggered(api, a)
        b = await api.submit({"connections": [shared]}, if_running=policy)
        result_b = await api.finished(b)
        result_a = await api.finished(a)
    assert len(sim.posts_for(shared)) == 1
    assert _sync(result_a, shared)["outcome"] == "succeeded"
    theirs = _sync(result_b, shared)
    assert theirs["outcome"] == outcome
    if policy != "fail":
        assert theirs["job_id"] == _sync(result_a, shared)["job_id"]
    else:
        assert "already running" in theirs["error"]


async def test_cancelling_one_run_leaves_a_job_another_run_follows(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    (shared,) = _ids(sim)
    sim.script(shared, JobScript(seconds=1.0))
    async with worker(root, tmp_path) as (_, api):
        a = await api.submit({"connections": [shared]})
        await _triggered(api, a)
        b = await api.submit({"connections": [shared]})
        await _triggered(api, b)
        assert (await api.call("POST", f"/runs/{a}/cancel")).status == 202
        result_a = await api.finished(a)
        result_b = await api.finished(b)
    assert result_a["outcome"] == "interrupted"
    assert "left running" in _sync(result_a, shared)["error"]
    assert _sync(result_b, shared)["outcome"] == "succeeded"
    assert [j["status"] for j in sim.jobs_for(shared)] == ["succeeded"]


async def test_a_job_adopted_from_airbyte_is_shared_too(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    (shared,) = _ids(sim)
    sim.script(shared, JobScript(seconds=1.0))
    sim.start_job(shared)  # started elsewhere (the Airbyte UI, its scheduler)
    async with worker(root, tmp_path) as (_, api):
        a = await api.submit({"connections": [shared]})
        await _triggered(api, a)
        b = await api.submit({"connections": [shared]})
        result_a, result_b = await api.finished(a), await api.finished(b)
    # A asked Airbyte once and was told 409; B did not ask at all.
    assert len(sim.posts_for(shared)) == 1
    assert _sync(result_a, shared)["history"][0]["adopted"]
    assert _sync(result_b, shared)["history"][0]["adopted"]
    assert len(sim.jobs_for(shared)) == 1


# --------------------------------------------------------------------------- stopping


async def test_shutdown_with_cancel_cancels_jobs_and_ends_runs(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    (cid,) = _ids(sim)
    sim.script(cid, JobScript(seconds=30))
    async with aiohttp.ClientSession() as session:
        async with worker(root, tmp_path, on_shutdown="cancel") as (_, api):
            run_id = await api.submit({"connections": [cid]})
            await _triggered(api, run_id)
            # A client following the run while the worker stops still sees the run end.
            follower = asyncio.create_task(Api(api.base, session).events(run_id))
            await asyncio.sleep(0.1)
        events = await follower
    assert events[-1].event == "run_finished"
    assert events[-1].data["outcome"] == "interrupted"
    assert events[-2].event == "sync_cancelled"
    assert [j["status"] for j in sim.jobs_for(cid)] == ["cancelled"]
    with Journal(tmp_path) as journal:
        record = journal.run(run_id)
        assert record is not None
        assert record.outcome == "interrupted"
        assert journal.unfinished_runs() == []
    # Settled: nothing of it is left in the worker's queue.
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("SELECT run_id FROM worker_runs").fetchall() == []


async def test_shutdown_with_detach_leaves_jobs_running_for_the_next_worker(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=2)
    ids = _ids(sim)
    for cid in ids:
        sim.script(cid, JobScript(seconds=1.0))
    async with worker(root, tmp_path, on_shutdown="detach") as (_, api):
        run_id = await api.submit({"connections": ids})
        await _triggered(api, run_id, 2)
    assert all(sim.jobs_for(cid)[0]["status"] in ("pending", "running") for cid in ids)
    with Journal(tmp_path) as journal:
        assert journal.unfinished_runs() == [run_id]
    async with worker(root, tmp_path) as (_, api):
        events = await api.events(run_id)
        result = await api.finished(run_id)
    assert result["outcome"] == "succeeded"
    assert [s["outcome"] for s in result["syncs"]] == ["succeeded", "succeeded"]
    assert sum(e.event == "run_finished" for e in events) == 1
    for cid in ids:
        assert len(sim.posts_for(cid)) == 1


async def test_sigterm_stops_serve_gracefully_with_exit_0(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    (cid,) = _ids(sim)
    sim.script(cid, JobScript(seconds=30))
    url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    options = ServeOptions(
        host="127.0.0.1", port=0, state_dir=tmp_path, api_token=TOKEN, on_shutdown="cancel"
    )
    task = asyncio.create_task(
        serve(
            options,
            settings=settings_for(root),
            file=FileConfig(run=FAST_RUN),
            environ={},
            ready=url.set_result,
        )
    )
    async with aiohttp.ClientSession() as session:
        api = Api(await url, session)
        run_id = await api.submit({"connections": [cid]})
        await _triggered(api, run_id)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 10) == 0
    assert [j["status"] for j in sim.jobs_for(cid)] == ["cancelled"]


async def test_no_secret_reaches_a_response_or_a_log_line(
    make_sim: SimFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "sim-Secret-Never-Shown-2718"
    _, root = await make_sim(connections=2, client_secret=secret, failure_rate=0.5, seed=3)
    seen: list[str] = []
    async with worker(root, tmp_path, client_secret=secret) as (_, api):
        run_id = await api.submit({"all": True})
        seen += [str(e.data) for e in await api.events(run_id)]
        for path in (f"/runs/{run_id}", "/runs", "/readyz", "/openapi.json", "/metrics"):
            seen.append((await api.call("GET", path)).text)
    async with worker(root, tmp_path, client_secret="wrong-" + secret) as (_, api):
        seen.append((await api.call("GET", "/readyz")).text)
        seen.append((await api.call("POST", "/runs", body={"selection": {"all": True}})).text)
    out = capsys.readouterr()
    for text in [*seen, out.out, out.err]:
        assert secret not in text
        assert TOKEN not in text
