"""Stopping `airbyte-fleet run`: real processes, real signals, the simulator over loopback.

A stop is bounded by ``--grace`` even while Airbyte is unreachable; a second signal within a second
of the first is the same stop (``timeout -s INT`` and supervisors send two); a later one aborts,
and the result then lists every job left running and the ``--resume`` that follows it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from aiohttp import web

from airbyte_fleet.runner.signals import SAME_INTERRUPT_WITHIN
from airbyte_fleet.simulator import FakeClock, JobScript, Simulator
from conftest import SimFactory, misbehaving_proxy

pytestmark = pytest.mark.anyio

SECRET = "stop-Secret-2468-mnop"
RUN = ["run", "--all", "--output", "json", "--poll-interval", "0.2", "--retry-backoff", "0"]


def _env(root: str, state_dir: Path) -> dict[str, str]:
    # The client's own retry policy (0.5 s doubling to 30 s, eight tries): what a user gets.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        AIRBYTE_FLEET_STATE_DIR=str(state_dir),
    )
    return env


class Cli:
    """One ``airbyte-fleet`` process; its output is read as it comes, so a pipe never fills."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.out = b""
        self.err = b""

    async def pump(self) -> None:
        async def read(name: str, stream: anyio.abc.ByteReceiveStream | None) -> None:
            assert stream is not None
            async for chunk in stream:
                setattr(self, name, getattr(self, name) + chunk)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "out", self.process.stdout)
            tg.start_soon(read, "err", self.process.stderr)

    def events(self) -> list[dict[str, Any]]:
        lines = self.err.decode().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def count(self, event: str) -> int:
        return sum(1 for e in self.events() if e.get("event") == event)

    async def until(self, event: str, count: int = 1, within: float = 20.0) -> None:
        with anyio.fail_after(within):
            while self.count(event) < count:
                if self.process.returncode is not None:
                    raise AssertionError(f"ended before {count} x {event}:\n{self.err.decode()}")
                await anyio.sleep(0.02)

    def result(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.out)
        return doc


class _Running:
    """``async with _Running(...) as cli``: the process started, its output pumped, and on the
    way out it has ended (killed if a failed assertion left it running)."""

    def __init__(self, root: str, state_dir: Path, *args: str) -> None:
        self._argv = [sys.executable, "-m", "airbyte_fleet", *args]
        self._env = _env(root, state_dir)

    async def __aenter__(self) -> Cli:
        process = await anyio.open_process(
            self._argv, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.cli = Cli(process)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.cli.pump)
        return self.cli

    async def __aexit__(self, *exc: object) -> None:
        if self.cli.process.returncode is None and exc[0] is not None:
            self.cli.process.kill()
        await self.cli.process.wait()
        await self._tg.__aexit__(None, None, None)
        assert SECRET not in (self.cli.out + self.cli.err).decode()
        assert b"Traceback" not in self.cli.err


async def _ended(cli: Cli, within: float) -> float:
    """Seconds until the process ends (at most *within*)."""
    began = time.monotonic()
    with anyio.fail_after(within):
        await cli.process.wait()
    return time.monotonic() - began


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


@pytest.mark.parametrize("poll_mode", ["per-job", "batched"])
async def test_sigterm_ends_within_the_grace_while_airbyte_is_down(
    make_sim: SimFactory, tmp_path: Path, poll_mode: str
) -> None:
    grace = 2.0
    sim, root = await make_sim(connections=4, client_secret=SECRET)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=600))
    args = [*RUN, "--poll-mode", poll_mode, "--grace", str(grace)]
    async with _Running(root, tmp_path, *args) as cli:
        await cli.until("sync_triggered", 4)
        sim.faults.update({"down_window": (0, 10**9)})
        # Status reads now fail and are being retried.
        await cli.until("airbyte_retry")
        cli.process.send_signal(signal.SIGTERM)
        # Before the fix this took the reads' whole retry budget (about a minute).
        took = await _ended(cli, within=120)
    print(f"SIGTERM to exit, Airbyte down, --grace {grace:g}, {poll_mode}: {took:.2f} s")
    assert took < grace + 1.5, took
    assert cli.process.returncode == 130
    doc = cli.result()
    assert doc["outcome"] == "interrupted"
    assert len(doc["syncs"]) == 4
    for sync in doc["syncs"]:
        assert "left running in Airbyte" in sync["error"]
        assert f"'airbyte-fleet run --resume {doc['run_id']}'" in sync["error"]
    assert {j["status"] for j in sim.jobs} <= {"pending", "running"}


@asynccontextmanager
async def _cancels_held(upstream: str) -> AsyncIterator[tuple[str, anyio.Event, anyio.Event]]:
    """A hop in front of the simulator that holds every cancel (``DELETE /jobs/{id}``) until the
    test releases them: the run is then surely still stopping when the test sends its second
    signal. Yields the hop's URL, an event set at the first cancel, and the release."""
    first_cancel, release = anyio.Event(), anyio.Event()

    async def before(request: web.Request) -> None:
        if request.method == "DELETE":
            first_cancel.set()
            await release.wait()

    # Released before the relay closes: it waits for the requests it still holds.
    async with misbehaving_proxy(upstream, before=before) as hop:
        try:
            yield hop, first_cancel, release
        finally:
            release.set()


async def test_a_second_signal_within_a_second_is_the_same_interrupt(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    count = 24
    sim, root = await make_sim(connections=count, client_secret=SECRET)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=600))
    async with _cancels_held(root) as (hop, first_cancel, release):
        args = (*RUN, "--max-concurrency", str(count))
        async with _Running(hop, tmp_path, *args) as cli:
            await cli.until("sync_triggered", count)
            cli.process.send_signal(signal.SIGINT)
            with anyio.fail_after(SAME_INTERRUPT_WITHIN * 10):
                await first_cancel.wait()
            # As `timeout -s INT` and supervisors do: the same stop again, while it is under way.
            cli.process.send_signal(signal.SIGINT)
            await cli.until("signal_repeated")
            release.set()
            await _ended(cli, within=30)
    assert cli.process.returncode == 130, cli.err.decode()[-3000:]
    assert cli.count("signal_repeated") == 1
    assert cli.count("interrupted_again") == 0
    doc = cli.result()
    assert doc["counts"]["cancelled"] == count
    assert [j["status"] for j in sim.jobs] == ["cancelled"] * count
    assert sim.count("POST", "/jobs") == count


async def test_a_later_second_signal_aborts_and_the_result_says_how_to_resume(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # Jobs move only when this clock does: they are running until the test says otherwise.
    clock = FakeClock()
    sim, root = await make_sim(clock=clock, connections=6, client_secret=SECRET)
    async with _Running(root, tmp_path, *RUN) as cli:
        await cli.until("sync_triggered", 6)
        # Cancels cannot get through, so the first stop keeps trying them (for its 30 s grace).
        sim.faults.update({"down_window": (0, 10**9)})
        cli.process.send_signal(signal.SIGINT)
        await cli.until("interrupted")
        await anyio.sleep(SAME_INTERRUPT_WITHIN + 0.2)  # the test is about time passing
        cli.process.send_signal(signal.SIGINT)
        await _ended(cli, within=10)
    assert cli.process.returncode == 130, cli.err.decode()[-3000:]
    assert cli.count("interrupted_again") == 1
    doc = cli.result()
    run_id = doc["run_id"]
    assert doc["outcome"] == "interrupted"
    jobs = {j["jobId"] for j in sim.jobs}
    assert {s["job_id"] for s in doc["syncs"]} == jobs
    for sync in doc["syncs"]:
        assert f"job {sync['job_id']} ended; it is left running in Airbyte" in sync["error"]
        assert f"'airbyte-fleet run --resume {run_id}'" in sync["error"]
    assert {j["status"] for j in sim.jobs} <= {"pending", "running"}
    (left,) = [e for e in cli.events() if e["event"] == "jobs_left_running"]
    assert sorted(left["job_ids"]) == sorted(jobs)

    # What the result says recovers them does: the resumed run follows the same six jobs.
    sim.faults.update({"down_window": None})
    clock.advance(3600)
    async with _Running(root, tmp_path, "run", "--resume", run_id, "--output", "json") as resumed:
        await _ended(resumed, within=30)
    assert resumed.process.returncode == 0, resumed.err.decode()[-3000:]
    again = resumed.result()
    assert again["counts"]["succeeded"] == 6
    assert {s["job_id"] for s in again["syncs"]} == jobs
    assert sim.count("POST", "/jobs") == 6
