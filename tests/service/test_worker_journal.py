"""The worker when its journal fails or cannot be read: every route keeps answering, a run whose
journal fails mid-run is reported finished with the error (not ``running`` for ever), and the next
start carries it on without a second job; a damaged journal is a 503 naming the file, not a 500.

The full disk is real: the ``serve`` process's file size limit (``RLIMIT_FSIZE``) is lowered under
it mid-run, so SQLite's next write to the WAL fails as on a full disk.
"""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import pytest

from airbyte_fleet.journal import FILE_NAME
from airbyte_fleet.simulator import FakeClock, JobScript
from conftest import SimFactory, client_for

from .support import TOKEN, worker

pytestmark = pytest.mark.anyio

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def _serve(root: str, state: Path) -> AsyncIterator[tuple[anyio.abc.Process, str]]:
    """``airbyte-fleet serve`` as a subprocess; yields it and its URL, stops it on leaving."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET="sim-secret",
        AIRBYTE_FLEET_API_TOKEN=TOKEN,
    )
    process = await anyio.open_process(
        [
            sys.executable,
            *("-m", "airbyte_fleet", "serve", "--port", "0", "--state-dir", str(state)),
            *("--on-shutdown", "detach"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, process.stderr)
            with anyio.fail_after(30):
                line = (await process.stdout.receive()).decode()
            yield process, line.split("listening on ", 1)[1].split()[0]
            process.terminate()
            with anyio.fail_after(30):
                await process.wait()
            tg.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _drain(stream: anyio.abc.ByteReceiveStream | None) -> None:
    assert stream is not None
    async for _ in stream:
        pass


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url, headers=HEADERS) as reply:
        return reply.status, await reply.json()


async def _finished(http: aiohttp.ClientSession, url: str, run_id: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            status, body = await _get(http, f"{url}/runs/{run_id}")
            assert status == 200, body
            if body["state"] == "finished":
                return dict(body)
            await anyio.sleep(0.05)


async def test_a_full_disk_mid_run_ends_the_run_with_its_error_and_the_next_start_carries_it_on(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    clock = FakeClock(start=time.time())
    sim, root = await make_sim(clock=clock, connections=6)
    for c in sim.connections:
        sim.script(c["connectionId"], JobScript(seconds=600))
    body = {"selection": {"all": True}, "options": {"max_concurrency": 3, "poll_interval": "50ms"}}
    async with _serve(root, tmp_path) as (process, url), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/runs", json=body, headers=HEADERS) as reply:
            assert reply.status == 202
            run_id = (await reply.json())["run_id"]
        with anyio.fail_after(30):
            while len(sim.jobs) < 3:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        limit = (tmp_path / f"{FILE_NAME}-wal").stat().st_size + 100
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (limit, limit))
        # Someone cancels a job in Airbyte's UI: writing that down meets the full disk.
        async with client_for(root) as client:
            await client.cancel_job(sim.jobs[0]["jobId"])
        view = await _finished(http, url, run_id)
        status, listed = await _get(http, f"{url}/runs")
        async with http.get(f"{url}/healthz") as reply:
            assert reply.status == 200
        # A follower of the run's events gets what the journal holds, then the stream's end.
        with anyio.fail_after(10):
            async with http.get(f"{url}/runs/{run_id}/events", headers=HEADERS) as reply:
                assert reply.status == 200
                streamed = (await reply.read()).decode()
    assert "disk I/O error" in view["error"]
    result = view["result"]
    assert result["error"] == view["error"]
    assert {k: v for k, v in result["counts"].items() if v} == {"cancelled": 3, "skipped": 3}
    assert len(sim.jobs) == 3
    assert all(j["status"] == "cancelled" for j in sim.jobs)
    for sync in result["syncs"]:
        jobs = sim.jobs_for(sync["connection_id"])
        assert sync["job_id"] == (jobs[0]["jobId"] if jobs else None)
    assert "event: run_started" in streamed
    assert status == 200
    (item,) = listed["runs"]
    assert item["run_id"] == run_id
    assert item["state"] == "finished"
    assert item["error"] == view["error"]

    # The disk has room again: the next start carries the run on, and nothing is triggered twice.
    async with _serve(root, tmp_path) as (_, url), aiohttp.ClientSession() as http:
        with anyio.fail_after(30):
            while len(sim.jobs) < 6:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        clock.advance(601)
        view = await _finished(http, url, run_id)
    assert view["error"] is None
    assert {k: v for k, v in view["result"]["counts"].items() if v} == {
        "cancelled": 3,
        "succeeded": 3,
    }
    assert all(len(sim.jobs_for(c["connectionId"])) == 1 for c in sim.connections)


async def test_a_damaged_journal_is_a_503_naming_the_file_and_other_routes_answer(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=2)
    async with worker(root, tmp_path) as (_, api):
        run_id = await api.submit({"all": True})
        await api.finished(run_id)
        db = sqlite3.connect(tmp_path / FILE_NAME)
        with db:
            db.execute("UPDATE runs SET started_at = 'the other day'")
            db.execute("UPDATE syncs SET finished_at = x'00'")
        db.close()
        listed = await api.call("GET", "/runs")
        shown = await api.call("GET", f"/runs/{run_id}")
        assert (await api.call("GET", "/healthz")).status == 200
        assert (await api.call("GET", "/openapi.json")).status == 200
    for answer in (listed, shown):
        assert answer.status == 503, answer
        assert str(tmp_path / FILE_NAME) in answer.body["error"]
        assert "move it aside" in answer.body["error"]
    assert len(sim.jobs) == 2
