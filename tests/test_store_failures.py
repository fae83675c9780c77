"""The run journal failing under a run, and a damaged journal carried on.

A disk that fills under ``--state-dir`` mid-run stops the run cleanly: nothing more is triggered,
jobs in flight are cancelled by policy, the partial result is printed, one line says why, and the
exit code is 4; a later ``--resume`` carries the run on without a second job anywhere. A lock held
past the busy timeout stops the run the same way, never turning a sync whose job ran into an
error. A journal whose WAL was truncated or written over after a crash is found damaged, and the
resume looks for each sync's job in Airbyte instead of triggering it again.

The full disk is real: the CLI's file size limit (``RLIMIT_FSIZE``) is lowered under it mid-run,
so SQLite's next write to the WAL fails as on a full disk. The simulator's clock is a fake one the
test moves, so jobs end exactly when the test says.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from airbyte_fleet.engine.events import Event, SyncTriggering
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.journal import FILE_NAME, Journal
from airbyte_fleet.runner import RunSession
from airbyte_fleet.simulator import FakeClock, JobScript, Simulator
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio

SECRET = "store-Secret-4242-wxyz"
TERMINAL = {"succeeded", "failed", "cancelled"}
FAST = ["--poll-interval", "0.05", "--retry-backoff", "0", "--output", "json"]
WAL = f"{FILE_NAME}-wal"


def _env(root: str, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        AIRBYTE_FLEET_STATE_DIR=str(state),
    )
    return env


@dataclass
class Cli:
    """A running ``airbyte-fleet`` whose stdout and stderr are read as they come."""

    process: anyio.abc.Process
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    code: int | None = None

    def said(self, marker: str) -> int:
        return self.err.count(marker.encode())


@asynccontextmanager
async def _cli(root: str, state: Path, *args: str) -> AsyncIterator[Cli]:
    process = await anyio.open_process(
        [sys.executable, "-m", "airbyte_fleet", *args],
        env=_env(root, state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    cli = Cli(process)

    async def drain(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
        assert stream is not None
        async for chunk in stream:
            into += chunk

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, process.stdout, cli.out)
            tg.start_soon(drain, process.stderr, cli.err)
            yield cli
            cli.code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _eventually(condition: Callable[[], bool], what: str, within: float = 30) -> None:
    with anyio.move_on_after(within):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert condition(), f"not within {within} s: {what}"


async def _until_exit(cli: Cli, clock: FakeClock, step: float, within: float = 60) -> None:
    """Move the simulator's clock on until the CLI exits."""
    with anyio.fail_after(within):
        while cli.process.returncode is None:
            clock.advance(step)
            await anyio.sleep(0.02)


def _fill_the_disk(pid: int, state: Path) -> None:
    # A little room for the next frame to start, none for it to end: SQLite's write fails.
    limit = (state / WAL).stat().st_size + 100
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, limit))


def _matches_airbyte(sim: Simulator, doc: dict[str, Any]) -> None:
    """Each connection has at most one job, and the result says what Airbyte says of it."""
    by_id = {s["connection_id"]: s for s in doc["syncs"]}
    assert set(by_id) == {c["connectionId"] for c in sim.connections}
    for cid, sync in by_id.items():
        jobs = sim.jobs_for(cid)
        assert len(jobs) <= 1, f"{cid} got {len(jobs)} jobs"
        if jobs:
            assert sync["job_id"] == jobs[0]["jobId"]
            assert sync["outcome"] == jobs[0]["status"]
        else:
            assert sync["job_id"] is None
            assert sync["outcome"] == "skipped"


def _last_line(err: bytes) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(err.decode().strip().splitlines()[-1])
    return line


async def test_a_full_disk_mid_run_stops_the_run_cleanly_and_a_resume_carries_it_on(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    clock = FakeClock(start=time.time())
    sim, root = await make_sim(clock=clock, connections=50, client_secret=SECRET)
    ids = [c["connectionId"] for c in sim.connections]
    for cid in ids:
        sim.script(cid, JobScript(seconds=600))

    args = ["run", "--all", "--max-concurrency", "10", *FAST]
    async with _cli(root, tmp_path, *args) as cli:
        await _eventually(lambda: cli.said('"sync_triggered"') == 10, "ten jobs in flight")
        _fill_the_disk(cli.process.pid, tmp_path)
        # Someone cancels a job in Airbyte's UI: writing that down meets the full disk.
        async with client_for(root, client_secret=SECRET) as client:
            await client.cancel_job(sim.jobs[0]["jobId"])
        with anyio.fail_after(30):
            await cli.process.wait()
    assert cli.code == 4, cli.err.decode()[-3000:]
    err = cli.err.decode()
    assert "Traceback" not in err
    assert SECRET not in err + cli.out.decode()
    doc = json.loads(cli.out)
    # Nothing more was triggered, nothing is left running, and the result says so, sync by sync.
    assert sim.count("POST", "/jobs") == 10
    assert all(j["status"] == "cancelled" for j in sim.jobs)
    _matches_airbyte(sim, doc)
    assert doc["counts"]["cancelled"] == 10
    assert doc["counts"]["skipped"] == 40
    assert "could not record" in doc["error"]
    fatal = _last_line(cli.err)
    assert fatal["exit_code"] == 4
    assert str(tmp_path / FILE_NAME) in fatal["error"]
    assert f"airbyte-fleet run --resume {doc['run_id']}" in fatal["error"]

    # The disk has room again (a new process, without the limit): the run is carried on.
    async with _cli(root, tmp_path, "run", "--resume", "last", *FAST) as cli:
        await _until_exit(cli, clock, step=60)
    assert cli.code == 1, cli.err.decode()[-3000:]
    resumed = json.loads(cli.out)
    assert resumed["run_id"] == doc["run_id"]
    # (The fake clock's hours expire tokens: a POST answered 401 is sent again, not doubled.)
    assert len(sim.jobs) == 50
    assert all(len(sim.jobs_for(cid)) == 1 for cid in ids)
    _matches_airbyte(sim, resumed)
    assert resumed["counts"]["succeeded"] == 40
    assert resumed["counts"]["cancelled"] == 10


async def test_a_lock_held_past_the_busy_timeout_stops_the_run_and_its_job_is_cancelled(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    """Another process holds the journal's write lock from the moment the first trigger is
    recorded: recording its job fails after the busy timeout. The job is cancelled by policy and
    reported so, not as an internal error, and nothing else is triggered."""
    clock = FakeClock(start=time.time())
    sim, root = await make_sim(clock=clock, connections=3)
    for c in sim.connections:
        sim.script(c["connectionId"], JobScript(seconds=3600))
    lock: list[sqlite3.Connection] = []

    def hold_the_lock(event: Event) -> None:
        if isinstance(event, SyncTriggering) and not lock:
            other = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            lock.append(other)

    options = RunOptions(max_concurrency=1, poll_interval=0.05)
    with Journal(tmp_path, busy_timeout=0.2) as journal:
        async with client_for(root) as client:
            session = await RunSession.planned(
                client, Selection(all=True), options, store=journal, sinks=[hold_the_lock]
            )
            with anyio.fail_after(30):
                result = await session.run()
        lock[0].close()
        record = journal.run(session.run_id)
    assert session.store_error is not None
    assert "database is locked" in session.store_error.message
    assert result.error == session.store_error.message
    by_outcome = {s.outcome: s for s in result.syncs}
    assert sorted(s.outcome or "" for s in result.syncs) == ["cancelled", "skipped", "skipped"]
    cancelled = by_outcome["cancelled"]
    assert "internal error" not in (cancelled.error or "")
    (job,) = sim.jobs
    assert job["status"] == "cancelled"
    assert cancelled.job_id == job["jobId"]
    # The journal kept what it was told before the lock: the intent, and the job id that waited
    # in its batch (written once the lock was gone); not the cancellation, told after the failure.
    assert record is not None
    assert record.finished_at is None
    kept = record.syncs[cancelled.connection_id]
    assert (kept.state, kept.job_id) == ("in_flight", job["jobId"])


def _start_commit_end(wal: bytes) -> int:
    """Where the WAL's commit that holds the run's start ends (before it: the schema, the lease
    the run took); what follows is the intents' commit (the journal groups a run's first intents
    in one)."""
    frame = 24 + struct.unpack_from(">I", wal, 8)[0]
    started = wal.index(b"run_started")
    ends = [
        at + frame
        for at in range(32, len(wal) - frame + 1, frame)
        if struct.unpack_from(">I", wal, at + 4)[0]
    ]
    return next(end for end in ends if end > started)


def _truncated(wal: bytes) -> bytes:
    return wal[: _start_commit_end(wal) + 123]


def _written_over(wal: bytes) -> bytes:
    at = _start_commit_end(wal)
    return wal[:at] + os.urandom(8192) + wal[at + 8192 :]


@pytest.mark.parametrize("damage", [_truncated, _written_over], ids=["truncated", "garbage"])
async def test_a_resume_from_a_damaged_journal_triggers_nothing_twice(
    make_sim: SimFactory, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    clock = FakeClock(start=time.time())
    sim, root = await make_sim(clock=clock, connections=8, client_secret=SECRET)
    ids = [c["connectionId"] for c in sim.connections]
    for cid in ids:
        sim.script(cid, JobScript(seconds=30))
    state = tmp_path / "state"
    async with _cli(root, state, "run", "--all", "--max-concurrency", "8", *FAST) as cli:
        await _eventually(lambda: cli.said('"sync_triggered"') == 8, "eight jobs journaled")
        cli.process.kill()  # no cleanup: the WAL stays behind, as after a crash
    # The jobs end while nobody watches; then the WAL is damaged.
    clock.advance(60)
    wal = state / WAL
    wal.write_bytes(damage(wal.read_bytes()))
    # The damage is real: on a copy, some triggered syncs now look untouched.
    shutil.copytree(state, tmp_path / "copy")
    with Journal(tmp_path / "copy") as copy:
        run_id = copy.last_run_id()
        record = copy.run(run_id) if run_id else None
    assert record is not None
    assert any(s.state == "untouched" for s in record.syncs.values())

    async with _cli(root, state, "run", "--resume", "last", *FAST) as cli:
        await _until_exit(cli, clock, step=5)
    err = cli.err.decode()
    assert cli.code == 0, err[-3000:]
    doc = json.loads(cli.out)
    assert doc["run_id"] == record.run_id
    assert doc["counts"]["succeeded"] == 8
    _matches_airbyte(sim, doc)
    assert "journal_damaged" in err
    assert len(sim.jobs) == 8
    assert all(len(sim.jobs_for(cid)) == 1 for cid in ids)


async def test_a_run_whose_end_alone_cannot_be_recorded_still_says_so(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    """Every sync has ended when the lock is taken: only ``run_finished`` is refused. The result
    is complete, and the store's failure is still reported (the journal shows the run open)."""
    _, root = await make_sim(connections=1)
    lock: list[sqlite3.Connection] = []

    def hold_the_lock(event: Event) -> None:
        if event.kind == "sync_succeeded":
            other = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            lock.append(other)

    options = RunOptions(poll_interval=0.05)
    with Journal(tmp_path, busy_timeout=0.2) as journal:
        async with client_for(root) as client:
            session = await RunSession.planned(
                client, Selection(all=True), options, store=journal, sinks=[hold_the_lock]
            )
            with anyio.fail_after(30):
                result = await session.run()
        lock[0].close()
        record = journal.run(session.run_id)
    assert result.outcome == "succeeded"
    assert session.store_error is not None
    assert "could not record its end" in session.store_error.message
    assert f"run --resume {session.run_id}" in session.store_error.message
    assert record is not None
    assert record.finished_at is None
