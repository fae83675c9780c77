"""Runs survive the worker: killed mid-run, the next worker on the same state dir carries every
run on without a second ``POST /jobs`` for anything already triggered."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from airbyte_fleet.journal import FILE_NAME, Journal
from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory

from .support import Crashable, until, worker

pytestmark = pytest.mark.anyio


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


async def test_a_crashed_worker_resumes_its_run_without_triggering_twice(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=4, sync_seconds=(0.5, 0.7))
    first = Crashable(root, tmp_path)
    _, api = await first.up()
    run_id = await api.submit({"all": True}, max_concurrency=2)
    # Two syncs in flight, two not triggered yet: kill the worker there.
    await until(lambda: sim.count("POST", "/jobs") == 2)
    await first.crash()
    with Journal(tmp_path) as journal:
        record = journal.run(run_id)
        assert record is not None
        assert record.finished_at is None
        assert sorted(s.state for s in record.syncs.values()).count("untouched") >= 2

    async with worker(root, tmp_path) as (_, api):
        status = await api.call("GET", f"/runs/{run_id}")
        assert status.body["state"] in ("queued", "running")
        events = await api.events(run_id)
        result = await api.finished(run_id)
    assert result["run_id"] == run_id
    assert result["outcome"] == "succeeded"
    assert result["counts"]["succeeded"] == 4
    for cid in _ids(sim):
        assert len(sim.posts_for(cid)) == 1, cid
    assert sim.count("POST", "/jobs") == 4
    # One stream tells the whole run: the first worker's events, then the resumed ones.
    kinds = [e.event for e in events]
    assert kinds.count("run_started") == 2
    assert kinds.count("run_finished") == 1
    resumed = [e for e in events if e.event == "sync_adopted"]
    assert resumed
    assert all("resumed" in e.data["reason"] for e in resumed)


async def test_a_trigger_cut_off_by_the_crash_is_reconciled_not_repeated(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    # The POST is slow: the crash comes after the trigger was journaled and sent, before its
    # answer. The next worker must find that job, not send another.
    sim, root = await make_sim(connections=1, slow_post_seconds=0.4)
    (cid,) = _ids(sim)
    sim.script(cid, JobScript(seconds=1.0))
    first = Crashable(root, tmp_path)
    _, api = await first.up()
    run_id = await api.submit({"connections": [cid]})
    await until(lambda: bool(sim.jobs_for(cid)))
    await first.crash()
    with Journal(tmp_path) as journal:
        record = journal.run(run_id)
        assert record is not None
        assert record.syncs[cid].state == "intent"

    async with worker(root, tmp_path) as (_, api):
        result = await api.finished(run_id)
    assert result["outcome"] == "succeeded"
    assert len(sim.jobs_for(cid)) == 1
    assert result["syncs"][0]["job_id"] == sim.jobs_for(cid)[0]["jobId"]


async def test_a_queued_run_survives_a_crash(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=2)
    long, queued = _ids(sim)
    sim.script(long, JobScript(seconds=1.0))
    first = Crashable(root, tmp_path, max_runs=1)
    _, api = await first.up()
    a = await api.submit({"connections": [long]})
    b = await api.submit({"connections": [queued]})
    await until(lambda: bool(sim.posts_for(long)))
    assert (await api.call("GET", f"/runs/{b}")).body["state"] == "queued"
    await first.crash()
    with Journal(tmp_path) as journal:
        assert journal.run(b) is None  # never started: only the ledger knows it

    async with worker(root, tmp_path, max_runs=1) as (_, api):
        result_a = await api.finished(a)
        result_b = await api.finished(b)
    assert result_a["outcome"] == result_b["outcome"] == "succeeded"
    assert len(sim.posts_for(long)) == 1
    assert len(sim.posts_for(queued)) == 1
    assert list((tmp_path / "service" / "runs").glob("*.json")) == []


async def test_runs_the_worker_did_not_start_are_left_alone(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    (cid,) = _ids(sim)
    first = Crashable(root, tmp_path)
    _, api = await first.up()
    run_id = await api.submit({"connections": [cid]})
    await until(lambda: bool(sim.posts_for(cid)))
    await first.crash()
    # As if another process (a crashed `airbyte-fleet run`) owned it: not in the worker's queue.
    with _database(tmp_path) as db:
        db.execute("DELETE FROM worker_runs WHERE run_id = ?", (run_id,))

    async with worker(root, tmp_path) as (_, api):
        status = await api.call("GET", f"/runs/{run_id}")
        assert status.body == {
            "run_id": run_id,
            "state": "running",
            "result": None,
            "error": None,
            "owner": None,
        }
        refused = await api.call("POST", f"/runs/{run_id}/cancel")
        assert refused.status == 409
        assert "not run by a worker" in refused.body["error"]
    with Journal(tmp_path) as journal:
        assert journal.unfinished_runs() == [run_id]


async def test_a_damaged_ledger_entry_does_not_stop_the_worker_nor_vanish(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    runs = tmp_path / "service" / "runs"
    runs.mkdir(parents=True)
    lost = "20260101T000000Z-deadbeef"
    (runs / f"{lost}.json").write_text("{not json")
    async with worker(root, tmp_path) as (_, api):
        # Listed, failed, with why: an accepted run never vanishes without a word.
        (item,) = (await api.call("GET", "/runs")).body["runs"]
        shown = await api.call("GET", f"/runs/{lost}")
        refused = await api.call("POST", f"/runs/{lost}/cancel")
        run_id = await api.submit({"all": True})
        assert (await api.finished(run_id))["outcome"] == "succeeded"
    assert item["run_id"] == lost
    assert (item["state"], item["outcome"]) == ("finished", "failed")
    assert str(runs / f"{lost}.bad") in item["error"]
    assert "never started, so nothing was triggered" in item["error"]
    assert shown.status == 200
    assert shown.body["error"] == item["error"]
    assert refused.status == 409
    # Kept, for the operator to read; it is listed until it is deleted.
    assert (runs / f"{lost}.bad").exists()


async def test_runs_whose_queue_entries_are_damaged_are_carried_on_from_the_journal(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    """A running run and a queued one, and the worker dies; both queue entries are then damaged.
    The next worker carries the running run on from the journal (no second job), and lists the
    queued one, which never started, as failed with why, instead of answering 404."""
    sim, root = await make_sim(connections=3)
    a_conn, b_conn, c_conn = _ids(sim)
    sim.script(a_conn, JobScript(seconds=1.0))
    first = Crashable(root, tmp_path, max_runs=1)
    _, api = await first.up()
    running = await api.submit({"connections": [a_conn, b_conn]}, max_concurrency=1)
    queued = await api.submit({"connections": [c_conn]})
    await until(lambda: bool(sim.posts_for(a_conn)))
    await first.crash()
    with _database(tmp_path) as db:
        db.execute("UPDATE worker_runs SET entry = substr(entry, 1, 40)")

    async with worker(root, tmp_path, max_runs=1) as (_, api):
        result = await api.finished(running)
        listed = {r["run_id"]: r for r in (await api.call("GET", "/runs")).body["runs"]}
        shown = await api.call("GET", f"/runs/{queued}")
    assert result["outcome"] == "succeeded"
    assert len(sim.posts_for(a_conn)) == 1
    assert len(sim.posts_for(b_conn)) == 1
    assert sim.posts_for(c_conn) == []
    assert listed[running]["state"] == "finished"
    assert listed[running]["error"] is None
    assert shown.status == 200
    assert (listed[queued]["state"], listed[queued]["outcome"]) == ("finished", "failed")
    assert "never started" in shown.body["error"]
    # The carried-on run was settled; the lost one stays queued, for the next start to list.
    with _database(tmp_path) as db:
        left = [row[0] for row in db.execute("SELECT run_id FROM worker_runs")]
    assert left == [queued]


@contextlib.contextmanager
def _database(state_dir: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(state_dir / FILE_NAME, isolation_level=None)
    try:
        yield db
    finally:
        db.close()
