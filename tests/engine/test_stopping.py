"""How a run stops: when its journal refuses a write, within the grace period whatever Airbyte does,
on a second stop, and what it does with jobs it did not start or that outlived their timeout.

The simulator is real (loopback HTTP), the journal a real SQLite file, locked by a real second
connection the way another process would hold it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import stamina
from aiohttp import web

from airbyte_fleet.api import RetryPolicy
from airbyte_fleet.engine._core import now
from airbyte_fleet.engine.events import (
    Event,
    EventBus,
    StoreFailedError,
    SyncAdopted,
    SyncDetached,
    SyncSucceeded,
    SyncTriggered,
)
from airbyte_fleet.engine.hooks import Adopt
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, build_plan
from airbyte_fleet.engine.result import ResultBuilder, RunResult, SyncResult
from airbyte_fleet.engine.resume import ResumePoint
from airbyte_fleet.engine.run import Engine
from airbyte_fleet.journal import Journal
from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory, client_for, misbehaving_proxy

from .test_hooks import ScriptedHook

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"poll_interval": 0.02, "retry_backoff": 0.0}


def opts(**over: Any) -> RunOptions:
    return RunOptions(**{**FAST, **over})


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


def _by_id(result: RunResult) -> dict[str, SyncResult]:
    return {s.connection_id: s for s in result.syncs}


class Recorder:
    """Every event, and a way to act when one arrives (from inside the bus, like a sink)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.when: list[tuple[Callable[[Event], bool], Callable[[], None]]] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        for test, act in list(self.when):
            if test(event):
                self.when.remove((test, act))
                act()

    def on(self, test: Callable[[Event], bool], act: Callable[[], None]) -> None:
        self.when.append((test, act))

    def count(self, kind: type[Event]) -> int:
        return sum(1 for e in self.events if isinstance(e, kind))


@asynccontextmanager
async def _cancels_hang(upstream: str) -> AsyncIterator[str]:
    """A real HTTP hop that passes everything on except ``DELETE /jobs/{id}``, which it holds
    unanswered: a cancel that Airbyte never answers."""
    held = anyio.Event()

    async def before(request: web.Request) -> None:
        if request.method == "DELETE":
            await held.wait()

    # Released before the relay closes: it waits for the requests it still holds.
    async with misbehaving_proxy(upstream, before=before) as hop:
        try:
            yield hop
        finally:
            held.set()


class _Lock:
    """Another connection holding the journal's write lock, as another process could."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def take(self) -> None:
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.conn is not None:
            self.conn.execute("ROLLBACK")
            self.conn.close()
            self.conn = None


# --------------------------------------------------------------------------- the store fails


async def _run_until_the_journal_fails(
    sim: Simulator, root: str, tmp_path: Path, lock_when: Callable[[Recorder, Event], bool]
) -> tuple[RunResult, StoreFailedError, Plan, Journal, Recorder]:
    builder, recorder = ResultBuilder(), Recorder()
    journal = Journal(tmp_path, busy_timeout=0.05)
    lock = _Lock(journal.path)
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=_ids(sim)))
        first = plan.runnable[0].connection_id
        # The first sync ends quickly; every other one runs until it is cancelled.
        for item in plan.runnable:
            seconds = 0.5 if item.connection_id == first else 600
            sim.script(item.connection_id, JobScript(seconds=seconds))
        recorder.on(lambda e: lock_when(recorder, e), lock.take)
        # The journal is the critical sink, as the runner wires it.
        bus = EventBus([builder, recorder], critical=[journal])
        engine = Engine(client, opts(max_concurrency=3), bus, grace=10)
        with anyio.fail_after(20):
            await engine.run(plan)  # no exception escapes: the run settles
    lock.release()
    assert engine.failure is not None
    return builder.result, engine.failure, plan, journal, recorder


def _settled_cleanly(
    sim: Simulator, result: RunResult, failure: StoreFailedError, journal: Journal
) -> None:
    assert result.outcome == "failed"
    assert result.error == failure.message
    assert "could not record" in failure.message
    assert f"--resume {result.run_id}" in failure.message
    assert all(s.outcome for s in result.syncs)
    # Only the first three were ever triggered; the two still running were cancelled.
    assert sim.count("POST", "/jobs") == 3
    assert len(sim.jobs) == 3
    assert sorted(j["status"] for j in sim.jobs) == ["cancelled", "cancelled", "succeeded"]
    # Nothing was offered to the journal after it failed: it keeps the run as far as it got,
    # unfinished, which is what a resume reads.
    kinds = [e.kind for _, e in journal.events(result.run_id, after=0, limit=1000)]
    # The refused event is not there (the three intents before it are).
    assert kinds.count(failure.event_kind) == (3 if failure.event_kind == "sync_triggering" else 0)
    assert "sync_cancelled" not in kinds
    assert "run_finished" not in kinds
    record = journal.run(result.run_id)
    assert record is not None
    assert record.finished_at is None


async def test_the_journal_refusing_a_final_event_stops_the_run_cleanly(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=8)
    result, failure, plan, journal, recorder = await _run_until_the_journal_fails(
        sim,
        root,
        tmp_path,
        # Locked once all three have a job: the first sync's success then waits in the journal's
        # batch (only intents must be durable at once), and the next durable write, the fourth
        # sync's intent, meets the lock.
        lambda seen, e: isinstance(e, SyncTriggered) and seen.count(SyncTriggered) == 3,
    )
    _settled_cleanly(sim, result, failure, journal)
    assert failure.event_kind == "sync_triggering"
    first, second, third, fourth, *rest = [_by_id(result)[p.connection_id] for p in plan.runnable]
    # The success still reached the result and the log.
    assert first.outcome == "succeeded"
    assert recorder.count(SyncSucceeded) == 1
    assert second.outcome == third.outcome == "cancelled"
    assert fourth.outcome == "skipped"
    assert sim.posts_for(fourth.connection_id) == []
    assert "not triggered: the journal could not record it" in (fourth.error or "")
    assert {s.outcome for s in rest} == {"skipped"}
    assert all(s.error == "run interrupted before trigger" for s in rest)
    # Every trigger's intent was journaled before it was sent.
    record = journal.run(result.run_id)
    assert record is not None
    assert all(record.syncs[p.connection_id].intent_at for p in plan.runnable[:3])
    journal.close()


async def test_the_journal_refusing_an_intent_triggers_nothing_more(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=8)
    result, failure, plan, journal, _ = await _run_until_the_journal_fails(
        sim,
        root,
        tmp_path,
        # Locked once the first success is written: the next write is the fourth one's intent.
        lambda seen, e: isinstance(e, SyncSucceeded),
    )
    _settled_cleanly(sim, result, failure, journal)
    assert failure.event_kind == "sync_triggering"
    fourth = plan.runnable[3].connection_id
    assert sim.posts_for(fourth) == []
    assert "not triggered: the journal could not record it" in (_by_id(result)[fourth].error or "")
    record = journal.run(result.run_id)
    assert record is not None
    assert record.syncs[fourth].state == "untouched"
    journal.close()


# --------------------------------------------------------------------------- the grace period


async def _stop_when_all_have_jobs(
    plan: Plan, engine: Engine, recorder: Recorder, *, then: str = "stop"
) -> float:
    """Run *engine*; once every sync has a job, stop it (and abort it, if *then* says so);
    returns the seconds from the stop to the run's end."""
    stopped_at = 0.0

    def stop() -> None:
        nonlocal stopped_at
        stopped_at = time.monotonic()
        engine.stop()
        if then == "abort":
            engine.abort()

    total = len(plan.runnable)
    recorder.on(
        lambda e: (
            isinstance(e, SyncTriggered | SyncAdopted)
            and recorder.count(SyncTriggered) + recorder.count(SyncAdopted) == total
        ),
        stop,
    )
    with anyio.fail_after(20):
        await engine.run(plan)
    return time.monotonic() - stopped_at


@pytest.mark.parametrize("then", ["grace", "abort"])
async def test_a_stop_ends_within_the_grace_and_lists_every_job_left_running(
    make_sim: SimFactory, then: str
) -> None:
    """Cancels that Airbyte never answers: the grace period (or a second stop) ends the run, and
    every job is reported left running, with the ``--resume`` that follows it again."""
    sim, root = await make_sim(connections=4)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=600))
    builder, recorder = ResultBuilder(), Recorder()
    async with _cancels_hang(root) as proxied, client_for(proxied) as client:
        plan = await build_plan(client, Selection(connections=_ids(sim)))
        engine = Engine(client, opts(), EventBus([builder, recorder]), grace=0.5)
        took = await _stop_when_all_have_jobs(plan, engine, recorder, then=then)
        # Looked at before the held cancels are let through.
        statuses = {j["status"] for j in sim.jobs}
    assert statuses <= {"pending", "running"}
    assert took < (0.5 if then == "grace" else 0.25) + 0.5, took
    result = builder.result
    assert result.outcome == "interrupted"
    assert recorder.count(SyncDetached) == 4
    for sync in result.syncs:
        assert sync.outcome == "error"
        assert f"job {sync.job_id} " in (sync.error or "")
        assert "it is left running in Airbyte" in (sync.error or "")
        assert f"'airbyte-fleet run --resume {result.run_id}'" in (sync.error or "")


async def test_a_stop_cuts_status_reads_short_while_airbyte_is_down(
    make_sim: SimFactory,
) -> None:
    """Reads in flight keep retrying while Airbyte is down (here: a second between tries, ten
    tries); a stop cancels them at once, and the cancels that cannot get through end at the
    grace period."""
    stamina.set_testing(False)
    sim, root = await make_sim(connections=3)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=600))
    builder, recorder = ResultBuilder(), Recorder()
    retry = RetryPolicy(attempts=10, wait_initial=1.0, wait_max=1.0, wait_jitter=0.0)
    async with client_for(root, retry=retry) as client:
        plan = await build_plan(client, Selection(connections=_ids(sim)))
        engine = Engine(client, opts(poll_interval=0.05), EventBus([builder, recorder]), grace=1)
        went_down = anyio.Event()

        def down() -> None:
            sim.faults.update({"down_window": (0, 10**9)})
            went_down.set()

        recorder.on(lambda e: recorder.count(SyncTriggered) == 3, down)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, plan)
            await went_down.wait()
            with anyio.fail_after(10):
                # Every sync's status read is failing and being retried.
                while sum(1 for e in sim.exchanges if e.fault == "down") < 3:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            stopped = time.monotonic()
            engine.stop()
        took = time.monotonic() - stopped
    assert took < 1 + 0.5, took
    assert builder.result.outcome == "interrupted"
    assert all("left running" in (s.error or "") for s in builder.result.syncs)


# --------------------------------------------------------------------------- resuming late


async def test_a_run_resumed_after_the_timeout_reads_each_job_then_times_it_out(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=3)
    running, intended, never = _ids(sim)
    for cid in (running, intended):
        sim.script(cid, JobScript(seconds=600))
    ours = int(sim.start_job(running)["jobId"])
    made = int(sim.start_job(intended)["jobId"])  # the interrupted trigger did make a job
    long_ago = now() - timedelta(hours=2)
    resume = {
        running: ResumePoint("in_flight", 1, ours, intent_at=long_ago, triggered_at=long_ago),
        intended: ResumePoint("intent", 1, intent_at=long_ago),
        never: ResumePoint("intent", 1, intent_at=long_ago),
    }
    builder = ResultBuilder()
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=[running, intended, never]))
        engine = Engine(client, opts(timeout=3600), EventBus([builder]))
        with anyio.fail_after(20):
            await engine.run(plan, resume=resume)
    by_id = _by_id(builder.result)
    assert sim.count("GET", "/jobs/{jobId}") >= 1  # read first
    for cid, job_id in ((running, ours), (intended, made)):
        assert by_id[cid].outcome == "timed_out", by_id[cid]
        assert by_id[cid].job_id == job_id
        assert "ran longer than 3600 s" in (by_id[cid].error or "")
        assert sim.job(job_id)["status"] == "cancelled"
    assert by_id[never].outcome == "timed_out"
    assert "not triggered again" in (by_id[never].error or "")
    assert sim.count("POST", "/jobs") == 0
    assert sim.count("DELETE", "/jobs/{jobId}") == 2


# --------------------------------------------------------------------------- adopted jobs


@pytest.mark.parametrize("cancel_adopted", [False, True])
@pytest.mark.parametrize("how", ["timeout", "interrupt"])
async def test_a_job_started_elsewhere_is_cancelled_only_with_cancel_adopted(
    make_sim: SimFactory, how: str, cancel_adopted: bool
) -> None:
    sim, root = await make_sim(connections=2)
    elsewhere, mine = _ids(sim)
    for cid in (elsewhere, mine):
        sim.script(cid, JobScript(seconds=600))
    theirs = int(sim.start_job(elsewhere)["jobId"])  # Airbyte's scheduler started it
    builder, recorder = ResultBuilder(), Recorder()
    options = opts(cancel_adopted=cancel_adopted, **({"timeout": 0.3} if how == "timeout" else {}))
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=[elsewhere, mine]))
        engine = Engine(client, options, EventBus([builder, recorder]))
        if how == "interrupt":
            await _stop_when_all_have_jobs(plan, engine, recorder)
        else:
            with anyio.fail_after(20):
                await engine.run(plan)
    by_id = _by_id(builder.result)
    # The job this run triggered is cancelled either way.
    (own,) = sim.jobs_for(mine)
    assert own["status"] == "cancelled"
    adopted = by_id[elsewhere]
    assert adopted.job_id == theirs
    if cancel_adopted:
        assert sim.job(theirs)["status"] == "cancelled"
        assert sim.count("DELETE", "/jobs/{jobId}") == 2
    else:
        assert sim.job(theirs)["status"] in ("pending", "running")
        assert sim.count("DELETE", "/jobs/{jobId}") == 1
        assert "already running when this run adopted it" in (adopted.error or "")
        assert "--cancel-adopted" in (adopted.error or "")
    assert adopted.outcome == (
        "timed_out" if how == "timeout" else "cancelled" if cancel_adopted else "error"
    )


async def test_a_job_another_run_hands_over_is_still_cancelled_on_timeout(
    make_sim: SimFactory,
) -> None:
    """Jobs of another run of the same worker are this tool's: the hook decides, not the rule
    for jobs started elsewhere."""
    sim, root = await make_sim(connections=1)
    (cid,) = _ids(sim)
    sim.script(cid, JobScript(seconds=600))
    job_id = int(sim.start_job(cid)["jobId"])
    hook = ScriptedHook({cid: Adopt(job_id, "run R1")})
    builder = ResultBuilder()
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=[cid]))
        engine = Engine(client, opts(timeout=0.3), EventBus([builder]), hook=hook)
        with anyio.fail_after(20):
            await engine.run(plan)
    assert builder.result.syncs[0].outcome == "timed_out"
    assert sim.job(job_id)["status"] == "cancelled"
