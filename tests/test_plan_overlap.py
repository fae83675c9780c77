"""The plan and the triggers overlap: a run triggers its first syncs while later pages of the
connection list are still being read (issue 13). Real simulator over loopback, a real HTTP hop in
front of it that holds or breaks some pages of ``GET /connections``, real processes for the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import pytest
from aiohttp import web

from airbyte_fleet import AirbyteSettings, Event, RunOptions, Selection, run_syncs
from airbyte_fleet.engine.events import RunStarted, SyncsPlanned
from airbyte_fleet.journal import Journal
from airbyte_fleet.runner.session import RunSession
from airbyte_fleet.simulator import Simulator
from conftest import SimFactory, client_for, misbehaving_proxy

pytestmark = pytest.mark.anyio

SECRET = "overlap-Secret-1357-qrst"
TERMINAL = {"succeeded", "failed", "cancelled"}


def _offset(request: web.Request) -> int | None:
    """The offset of a ``GET /connections`` page; None for any other request."""
    if request.method != "GET" or not request.path.endswith("/connections"):
        return None
    return int(request.query.get("offset", "0"))


def _hold_pages(
    release: Callable[[], bool], *, from_offset: int = 100, within: float = 5.0
) -> Callable[[web.Request], Awaitable[None]]:
    """A proxy's *before*: pages from *from_offset* on wait until *release()* is true (at most
    *within* seconds, so a run that never releases them fails an assertion, not the clock)."""

    async def before(request: web.Request) -> None:
        offset = _offset(request)
        if offset is None or offset < from_offset:
            return
        with anyio.move_on_after(within):
            # The simulator's state is polled: it has no event to wait on.
            while not release():  # noqa: ASYNC110
                await anyio.sleep(0.01)

    return before


def _last_page_served(sim: Simulator) -> float:
    """When the simulator was asked for the list's last page that holds connections (a page
    asked for ahead, past the end, is no part of the plan)."""
    total = len(sim.connections)
    return max(
        e.at
        for e in sim.exchanges
        if e.method == "GET"
        and e.route == "/connections"
        and int(parse_qs(e.query).get("offset", ["0"])[0]) < total
    )


def _env(root: str, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        AIRBYTE_FLEET_STATE_DIR=str(state_dir),
    )
    return env


def _one_post_each(sim: Simulator) -> None:
    for connection in sim.connections:
        assert len(sim.posts_for(connection["connectionId"])) == 1, connection["connectionId"]


async def test_the_first_trigger_is_answered_before_the_last_page_is_served(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in list(os.environ):
        if key.startswith(("AIRBYTE_", "USE_SERVER_AUTH")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    sim, root = await make_sim(connections=500, workspaces=3, client_secret=SECRET)
    kinds: list[Event] = []
    # Pages after the first wait for the first trigger's answer: planned in one piece, the run
    # would wait for them instead, and its first trigger would come after the last page.
    hold = _hold_pages(lambda: sim.stats()["first_job_answered_at"] is not None)
    async with misbehaving_proxy(root, before=hold) as proxy:
        result = await run_syncs(
            {"all": True},
            {"max_concurrency": 500, "poll_interval": "0.05s", "retry_backoff": 0},
            settings=AirbyteSettings(base_url=proxy, client_id="sim-client", client_secret=SECRET),
            sinks=[kinds.append],
        )
    first = sim.stats()["first_job_answered_at"]
    assert first is not None
    assert first < _last_page_served(sim)
    assert sim.count("GET", "/connections") >= 5
    assert result.outcome == "succeeded"
    assert len(result.syncs) == 500
    assert {s.connection_id for s in result.syncs} == {c["connectionId"] for c in sim.connections}
    _one_post_each(sim)
    started = [e for e in kinds if isinstance(e, RunStarted)]
    parts = [e for e in kinds if isinstance(e, SyncsPlanned)]
    assert len(started) == 1
    assert started[0].planning
    assert len(started[0].planned) == 100
    assert parts[-1].final
    assert parts[-1].total == 500
    # Each page's matches are sorted by name within the page.
    names = [s.connection_name.casefold() for s in result.syncs]
    assert names[:100] == sorted(names[:100])


async def test_max_concurrency_holds_across_parts(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=250, workspaces=2, client_secret=SECRET)
    running_at_post: list[int] = []

    async def before(request: web.Request) -> None:
        if request.method == "POST" and request.path.endswith("/jobs"):
            running_at_post.append(sum(1 for j in sim.jobs if j["status"] not in TERMINAL))
        offset = _offset(request)
        if offset:
            # Later pages come while the first part's syncs run.
            await anyio.sleep(0.3)

    async with (
        misbehaving_proxy(root, before=before) as proxy,
        client_for(proxy, client_secret=SECRET) as client,
    ):
        session = await RunSession.planned(
            client,
            Selection(all=True),
            RunOptions(max_concurrency=20, poll_interval=0.05, retry_backoff=0),
            streamed=True,
        )
        assert session.more is not None
        result = await session.run()
    assert result.outcome == "succeeded"
    assert len(result.syncs) == 250
    _one_post_each(sim)
    # Each POST starts one more job: never more than 20 at once, and 20 were reached.
    assert max(running_at_post) == 19


async def test_a_listing_error_mid_plan_fails_the_run_and_a_resume_plans_the_rest(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=350, workspaces=2, client_secret=SECRET)

    def broken(request: web.Request, query: str) -> web.Response | None:
        offset = _offset(request)
        if offset is not None and offset >= 200:
            return web.json_response({"message": "down"}, status=503)
        return None

    options = RunOptions(max_concurrency=500, poll_interval=0.05, retry_backoff=0)
    with Journal(tmp_path) as journal:
        async with (
            misbehaving_proxy(root, broken) as proxy,
            client_for(proxy, client_secret=SECRET) as client,
        ):
            session = await RunSession.planned(
                client, Selection(all=True), options, store=journal, streamed=True
            )
            result = await session.run()
        assert result.outcome == "failed"
        assert result.error is not None
        assert result.error.startswith("the plan could not be completed (")
        assert "only the 200 syncs planned before that were run" in result.error
        assert result.counts["succeeded"] == 200
        assert sim.count("POST", "/jobs") == 200
        record = journal.run(session.run_id)
        assert record is not None
        assert not record.planning_complete
        assert record.total == 200

        async with client_for(root, client_secret=SECRET) as client:
            resumed = RunSession.resumed(client, journal, record, options)
            again = await resumed.run()
        record = journal.run(session.run_id)
    assert again.outcome == "succeeded", again.error
    assert len(again.syncs) == 350
    assert record is not None
    assert record.planning_complete
    assert record.total == 350
    _one_post_each(sim)


async def test_nothing_matched_over_many_pages_exits_2_and_records_no_run(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=250, client_secret=SECRET)
    done = await anyio.run_process(
        [sys.executable, "-m", "airbyte_fleet", "run", "--name", "no-such-name-*"],
        env=_env(root, tmp_path),
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "matched none of the 250 connections" in err
    assert "Traceback" not in err
    # Every page was read (and one asked for ahead, past the end): the list's end said so.
    assert sim.count("GET", "/connections") >= 3
    assert sim.count("POST", "/jobs") == 0
    with Journal(tmp_path) as journal:
        assert journal.runs() == []


async def test_kill_9_mid_plan_then_resume_plans_the_rest_and_triggers_nothing_twice(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=500, workspaces=3, client_secret=SECRET)
    killed = anyio.Event()
    # Pages from offset 300 on are held until the process is dead: it dies mid-plan.
    hold = _hold_pages(killed.is_set, from_offset=300, within=60.0)
    argv = [sys.executable, "-m", "airbyte_fleet", "run", "--all", "--output", "json"]
    argv += ["--max-concurrency", "500", "--poll-interval", "0.05", "--retry-backoff", "0"]
    async with misbehaving_proxy(root, before=hold) as proxy:
        process = await anyio.open_process(
            argv, env=_env(proxy, tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            with anyio.fail_after(30):
                while sim.count("POST", "/jobs") < 300:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            process.kill()  # SIGKILL: no cleanup, nothing more journaled
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            killed.set()
    assert sim.count("POST", "/jobs") == 300
    with Journal(tmp_path) as journal:
        [record] = journal.runs()
        assert not record.planning_complete
        assert record.total == 300
    done = await anyio.run_process(
        [sys.executable, "-m", "airbyte_fleet", "run", "--resume", "last", "--output", "json"],
        env=_env(root, tmp_path),
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 0, err[-3000:]
    assert SECRET not in err
    doc: dict[str, Any] = json.loads(done.stdout)
    assert doc["counts"]["succeeded"] == 500
    assert len(doc["syncs"]) == 500
    _one_post_each(sim)
    with Journal(tmp_path) as journal:
        record = journal.run(doc["run_id"])
    assert record is not None
    assert record.planning_complete
    assert record.total == 500


async def test_a_stop_while_planning_ends_the_planning_and_a_resume_plans_the_rest(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=300, workspaces=2, client_secret=SECRET)
    released = anyio.Event()
    # Pages after the first are held until the test lets them go: the run is stopped mid-plan.
    hold = _hold_pages(released.is_set, within=30.0)
    options = RunOptions(max_concurrency=500, poll_interval=0.05, retry_backoff=0)
    with Journal(tmp_path) as journal:
        async with (
            misbehaving_proxy(root, before=hold) as proxy,
            client_for(proxy, client_secret=SECRET) as client,
        ):
            session = await RunSession.planned(
                client, Selection(all=True), options, store=journal, streamed=True
            )

            async def stop_once_triggered() -> None:
                while sim.count("POST", "/jobs") < 100:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                session.interrupt("detach")

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stop_once_triggered)
                    result = await session.run()
            released.set()
        assert result.outcome == "interrupted"
        assert len(result.syncs) == 100
        assert sim.count("POST", "/jobs") == 100
        record = journal.run(session.run_id)
        assert record is not None
        assert not record.planning_complete
        assert record.total == 100

        async with client_for(root, client_secret=SECRET) as client:
            again = await RunSession.resumed(client, journal, record, options).run()
        record = journal.run(session.run_id)
    assert again.outcome == "succeeded", again.error
    assert len(again.syncs) == 300
    assert record is not None
    assert record.planning_complete
    _one_post_each(sim)
