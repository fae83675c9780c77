"""The SQLite run store: states after a crash, history, replay, durability and cost, on hand-built
events."""

from __future__ import annotations

import dataclasses
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncCancelled,
    SyncFailed,
    SyncSkipped,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.journal import FILE_NAME, SCHEMA_VERSION, Journal, JournalError
from airbyte_fleet.journal.writer import MAX_BATCH
from airbyte_fleet.runner.replay import replay_result
from journal.backends import Backend
from journal.stories import (
    OPTIONS,
    SELECTION,
    T0,
    Story,
    crashed_run,
    finished_run,
    journal_all,
    live,
)

# --------------------------------------------------------------------------- opening


def test_opens_nested_state_dir_with_wal_and_schema_version(tmp_path: Path) -> None:
    state = tmp_path / "a" / ".airbyte-fleet"
    with Journal(state) as journal:
        assert journal.path == state / FILE_NAME
    db = sqlite3.connect(state / FILE_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    # Opening again finds the schema in place and keeps what is there.
    with Journal(state) as again:
        assert again.runs() == []


def test_refuses_a_journal_from_a_newer_version(tmp_path: Path) -> None:
    Journal(tmp_path).close()
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(JournalError, match="newer"):
        Journal(tmp_path)


def test_a_closed_journal_refuses_events(backend: Backend) -> None:
    journal = backend.open()
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        journal(Story("r", ["c1"]).started())


# --------------------------------------------------------------------------- records


def test_finished_run_record(backend: Backend) -> None:
    with backend.open() as journal:
        events = finished_run()
        journal_all(journal, events)
        record = journal.run("run-a")
    assert record is not None
    assert record.outcome == "failed"
    assert record.finished_at == events[-1].at
    assert record.started_at == T0 + timedelta(seconds=0.5)
    assert record.options == OPTIONS
    assert record.selection == SELECTION
    assert [p.connection_id for p in record.planned] == ["c1", "c2", "c3", "c4"]
    assert record.planned[0] == PlannedSync("c1", "name c1", "ws-1")
    assert {cid: s.state for cid, s in record.syncs.items()} == dict.fromkeys(record.syncs, "final")
    c1, c2, c3, c4 = (record.syncs[c] for c in ("c1", "c2", "c3", "c4"))
    assert (c1.outcome, c1.job_id, c1.status, c1.rows_synced, c1.bytes_synced) == (
        "succeeded",
        101,
        "succeeded",
        10,
        100,
    )
    assert (c2.outcome, c2.error) == ("failed", "Airbyte job 102 failed")
    # The retry: the record describes the second attempt, timed from the first trigger.
    assert (c3.outcome, c3.job_id, c3.attempt, c3.error) == ("succeeded", 104, 2, None)
    assert c3.triggered_at is not None
    assert c3.intent_at is not None
    assert c3.triggered_at < c3.intent_at  # first job triggered before the retry's intent
    assert (c4.outcome, c4.job_id, c4.error, c4.intent_at) == ("skipped", None, "inactive", None)
    assert record.counts["succeeded"] == 2
    assert record.counts["failed"] == 1
    assert record.total == 4


def test_crash_leaves_each_state_readable(backend: Backend) -> None:
    events = crashed_run()
    with backend.open() as journal:
        journal_all(journal, events)
        record = journal.run("run-crash")
    assert record is not None
    assert record.finished_at is None
    assert record.outcome == "running"
    states = {cid: s.state for cid, s in record.syncs.items()}
    assert states == {
        "c1": "final",
        "c2": "in_flight",
        "c3": "intent",
        "c4": "untouched",
        "c5": "intent",
    }
    c2, c3, c4, c5 = (record.syncs[c] for c in ("c2", "c3", "c4", "c5"))
    assert (c2.job_id, c2.status, c2.outcome) == (202, "running", None)
    assert (c3.job_id, c3.attempt, c3.intent_at) == (None, 1, events[8].at)
    assert (c4.attempt, c4.intent_at, c4.triggered_at, c4.connection_name) == (
        0,
        None,
        None,
        "name c4",
    )
    # The retry's trigger was about to go out: its intent time, not the first attempt's, bounds
    # which jobs could be from it; the first trigger still dates the sync.
    assert (c5.attempt, c5.job_id, c5.intent_at) == (2, None, events[-1].at)
    assert c5.triggered_at == events[10].at
    assert record.counts["succeeded"] == 1
    assert record.counts["pending"] == 4


def test_repeated_intents_of_one_attempt_keep_the_first_time(backend: Backend) -> None:
    s = Story("r", ["c1"])
    first = s.sync(SyncTriggering, "c1")
    with backend.open() as journal:
        journal_all(journal, [s.started(), first, s.sync(SyncTriggering, "c1")])
        record = journal.run("r")
    assert record is not None
    assert record.syncs["c1"].intent_at == first.at


def test_unfinished_runs_and_last_run_id(backend: Backend) -> None:
    with backend.open() as journal:
        assert journal.last_run_id() is None
        assert journal.unfinished_runs() == []
        journal_all(journal, crashed_run("old-crash", start=T0))
        journal_all(journal, finished_run("done"))  # starts at T0 too, written later
        journal_all(journal, crashed_run("new-crash", start=T0 + timedelta(hours=1)))
        assert journal.unfinished_runs() == ["old-crash", "new-crash"]
        assert journal.last_run_id() == "new-crash"
        journal(Story("newest", []).started())
        # Started earlier than new-crash though written later: "last" means last started.
        assert journal.last_run_id() == "new-crash"


def test_runs_lists_newest_first_with_counts_and_pages(backend: Backend) -> None:
    with backend.open() as journal:
        for i in range(5):
            journal_all(journal, finished_run(f"run-{i}")[:1])  # just started
        journal_all(journal, crashed_run("crash", start=T0 + timedelta(days=1)))
        s = Story("no-wait", ["c1", "c2", "c3"], start=T0 + timedelta(days=2))
        journal_all(
            journal,
            [
                s.started(wait=False, job_type="refresh"),
                s.sync(SyncTriggering, "c1"),
                s.sync(SyncTriggered, "c1", job_id=1),
                s.sync(SyncTriggering, "c2"),
                s.sync(SyncFailed, "c2", outcome="error", error="inactive"),
                s.finished("failed"),
            ],
        )
        first = journal.runs(limit=2)
        rest = journal.runs(limit=10, offset=2)
    assert [r.run_id for r in first] == ["no-wait", "crash"]
    assert [r.run_id for r in rest] == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    no_wait, crash = first
    assert (no_wait.outcome, no_wait.total, no_wait.job_type) == ("failed", 3, "refresh")
    # Settled as ResultBuilder settles them: a triggered no-wait job, and one never heard of.
    assert {k: n for k, n in no_wait.counts.items() if n} == {"triggered": 1, "error": 2}
    assert no_wait.finished_at is not None
    assert (crash.outcome, crash.total, crash.finished_at) == ("running", 5, None)
    assert {k: n for k, n in crash.counts.items() if n} == {"succeeded": 1, "pending": 4}
    assert rest[0].counts["pending"] == 4
    assert rest[0].total == 4
    assert crash.as_dict()["counts"]["pending"] == 4
    assert crash.as_dict()["started_at"] == (T0 + timedelta(days=1, seconds=0.5)).isoformat()


def test_a_sync_without_its_run_started_is_still_listed(backend: Backend) -> None:
    s = Story("late", ["c1"])
    with backend.open() as journal:
        journal(s.sync(SyncTriggered, "c1", job_id=9))
        [summary] = journal.runs()
        record = journal.run("late")
    assert (summary.run_id, summary.outcome, summary.total) == ("late", "running", 1)
    assert record is not None
    assert record.syncs["c1"].state == "in_flight"
    assert record.planned == []


# --------------------------------------------------------------------------- events and replay


def test_events_in_order_with_after_and_limit(backend: Backend) -> None:
    events = finished_run()
    with backend.open() as journal:
        journal_all(journal, events)
        journal_all(journal, crashed_run())  # another run: its own sequence
        stored = journal.events("run-a")
        page = journal.events("run-a", after=3, limit=4)
        tail = journal.events("run-a", after=len(events) - 1)
        other = journal.events("run-crash", limit=1)
        assert journal.events("nope") == []
    assert [seq for seq, _ in stored] == list(range(1, len(events) + 1))
    assert [e for _, e in stored] == events
    assert [seq for seq, _ in page] == [4, 5, 6, 7]
    assert [e for _, e in page] == events[3:7]
    assert [seq for seq, _ in tail] == [len(events)]
    assert other[0][0] == 1
    # Stored as JSON with the kind first; unknown values are left out, as Event.to_dict does.
    rows = backend.stored_rows("run-a")
    assert rows[0]["event"] == "run_started"
    assert rows[0]["planned"][0] == {
        "connection_id": "c1",
        "connection_name": "name c1",
        "workspace_id": "ws-1",
        "status": "active",
        "tags": [],
        "selected_by": "selection",
    }
    assert rows[0]["options"] == OPTIONS
    assert "job_id" not in rows[1]
    assert rows[2]["job_id"] == 101


def test_replay_result_equals_the_live_result(backend: Backend) -> None:
    events = finished_run()
    with backend.open() as journal:
        journal_all(journal, events)
        rebuilt = replay_result(journal, "run-a")
        assert replay_result(journal, "nope") is None
    assert rebuilt is not None
    built = live(events).result
    assert rebuilt == built
    assert rebuilt.model_dump(mode="json") == built.model_dump(mode="json")


def test_replay_result_of_a_crashed_run_lists_every_sync(backend: Backend) -> None:
    with backend.open() as journal:
        journal_all(journal, crashed_run())
        result = replay_result(journal, "run-crash")
    assert result is not None
    assert (result.outcome, result.finished_at) == ("running", None)
    assert [s.connection_id for s in result.syncs] == ["c1", "c2", "c3", "c4", "c5"]
    assert [s.outcome for s in result.syncs] == ["succeeded", None, None, None, None]
    assert result.syncs[1].job_id == 202
    assert result.counts["succeeded"] == 1
    assert result.counts["pending"] == 4


def test_replayed_finals_starts_and_finishes_change_nothing(backend: Backend) -> None:
    events = finished_run()
    final = SyncSucceeded | SyncFailed | SyncSkipped
    settled = [e for e in events if isinstance(e, final | RunStarted | RunFinished)]
    assert len(settled) == 6
    with backend.open() as journal:
        journal_all(journal, events)
        before_events, before_run = journal.events("run-a"), journal.run("run-a")
        journal_all(journal, settled)
        # A final outcome reported again later (same attempt, job and outcome) is the same fact.
        succeeded = events[4]
        assert isinstance(succeeded, SyncSucceeded)
        journal(dataclasses.replace(succeeded, at=succeeded.at + timedelta(minutes=5)))
        assert journal.events("run-a") == before_events
        assert journal.run("run-a") == before_run
        # Another outcome for the same job is news, and is recorded.
        cancelled = SyncCancelled(**{**dataclasses.asdict(succeeded), "status": "cancelled"})
        journal(cancelled)
        assert journal.events("run-a")[-1][1] == cancelled
        record = journal.run("run-a")
    assert record is not None
    assert record.syncs["c1"].outcome == "cancelled"


def test_a_resumed_run_keeps_what_the_first_process_wrote(backend: Backend) -> None:
    first = crashed_run()
    resume = Story("run-crash", ["c1", "c2", "c3", "c4", "c5", "c6"], start=T0 + timedelta(hours=1))
    second: list[Event] = [
        resume.started(resumed=True, options={"job_type": "sync", "retries": 9}, selection=None),
        resume.sync(SyncAdopted, "c2", job_id=202, status="running", reason="resumed"),
        resume.sync(SyncAdopted, "c3", job_id=203, status="running", reason="resumed"),
        *resume.lifecycle("c4", 204),
        resume.sync(SyncSucceeded, "c2", job_id=202, status="succeeded"),
    ]
    with backend.open() as journal:
        journal_all(journal, first)
        journal_all(journal, second)
        mid = journal.run("run-crash")
        assert mid is not None
        assert mid.started_at == first[0].at
        assert mid.resumed_at == second[0].at
        assert mid.options == OPTIONS  # the first start's options stay
        assert mid.selection == SELECTION
        assert [p.connection_id for p in mid.planned] == ["c1", "c2", "c3", "c4", "c5", "c6"]
        assert {c: s.state for c, s in mid.syncs.items()} == {
            "c1": "final",
            "c2": "final",
            "c3": "in_flight",
            "c4": "final",
            "c5": "intent",
            "c6": "untouched",
        }
        assert mid.syncs["c1"].outcome == "succeeded"
        assert mid.syncs["c1"].job_id == 201
        # Interrupted, then resumed again: running once more until the next run_finished.
        journal(resume.finished("interrupted", interrupted=True))
        assert journal.unfinished_runs() == []
        journal(resume.started(resumed=True))
        assert journal.unfinished_runs() == ["run-crash"]
        last = resume.finished("succeeded")
        journal(last)
        final = journal.run("run-crash")
        assert final is not None
        assert (final.outcome, final.finished_at, final.interrupted) == (
            "succeeded",
            last.at,
            False,
        )
        stored = journal.events("run-crash")
        rebuilt = replay_result(journal, "run-crash")
    assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
    # What the resuming CLI does: replay the journal into its builder, then carry on live.
    replayed = live([*first, *second, *[e for _, e in stored[-3:]]])
    assert rebuilt == replayed.result


# --------------------------------------------------------------------------- durability


def test_durable_events_are_visible_to_another_instance_without_close(backend: Backend) -> None:
    s = Story("r", ["c1", "c2", "c3"])
    writer = backend.open(batch_interval=60)
    writer(s.started())
    writer.append([s.sync(SyncTriggering, "c1"), s.sync(SyncTriggering, "c2")])
    writer(s.sync(SyncTriggered, "c1", job_id=1, status="pending"))
    writer(s.sync(SyncStatusChanged, "c1", job_id=1, status="running", old_status="pending"))
    with backend.open() as reader:
        record = reader.run("r")
        assert record is not None
        # The intents are durable; the job id waits for the next commit (a resumer would look
        # for c1's job in Airbyte).
        assert {c: r.state for c, r in record.syncs.items()} == {
            "c1": "intent",
            "c2": "intent",
            "c3": "untouched",
        }
        # The next intent commits what waited before it, in order.
        writer(s.sync(SyncTriggering, "c3"))
        record = reader.run("r")
        assert record is not None
        assert (record.syncs["c1"].state, record.syncs["c1"].status) == ("in_flight", "running")
        assert record.syncs["c3"].state == "intent"
        writer(s.sync(SyncSucceeded, "c1", job_id=1, status="succeeded"))
        assert [e.kind for _, e in reader.events("r")][-1] == "sync_triggering"
        # run_finished is durable, with everything before it.
        writer(s.finished("failed"))
        kinds = [e.kind for _, e in reader.events("r")]
        assert kinds[-2:] == ["sync_succeeded", "run_finished"]
        assert reader.unfinished_runs() == []
    writer.close()


def test_batched_events_are_committed_by_the_timer(backend: Backend) -> None:
    s = Story("r", ["c1"])
    writer = backend.open(batch_interval=0.2)
    writer(s.started())
    writer(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
    with backend.open() as reader:
        assert len(reader.events("r")) == 1
        deadline = time.monotonic() + 5
        while len(reader.events("r")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(reader.events("r")) == 2
    writer.close()


def test_a_reader_on_the_writing_instance_sees_batched_events(backend: Backend) -> None:
    s = Story("r", ["c1"])
    with backend.open(batch_interval=60) as journal:
        journal(s.started())
        journal(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
        assert len(journal.events("r")) == 2


def test_a_refused_write_raises_and_keeps_the_batch(backend: Backend) -> None:
    s = Story("r", ["c1"])
    with backend.open(lock_timeout=0.1, batch_interval=60) as journal:
        journal(s.started())
        journal(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
        # Another process holds the write lock for longer than we are willing to wait.
        with backend.write_lock_held(), pytest.raises(JournalError, match="lock"):
            journal(s.sync(SyncTriggering, "c1"))
        # The caller was told; the refused event is not written behind its back, the batch is.
        journal(s.sync(SyncSucceeded, "c1", job_id=1, status="succeeded"))
        kinds = [e.kind for _, e in journal.events("r")]
    assert kinds == ["run_started", "sync_status_changed", "sync_succeeded"]


def test_append_writes_a_batch_as_a_whole_or_not_at_all(backend: Backend) -> None:
    s = Story("r", ["c1", "c2", "c3"])
    intents = [s.sync(SyncTriggering, c) for c in ("c1", "c2", "c3")]
    with backend.open(lock_timeout=0.1, batch_interval=60) as journal:
        journal(s.started())
        journal(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
        with backend.write_lock_held(), pytest.raises(JournalError, match="lock"):
            journal.append(intents)
        with backend.open() as reader:
            assert [e.kind for _, e in reader.events("r")] == ["run_started"]
        journal.append([])  # nothing to write: the batched status event still waits
        with backend.open() as reader:
            assert len(reader.events("r")) == 1
        journal.append(intents)
        # Durable on return, for another process too, with the batch written before it.
        with backend.open() as reader:
            stored = [e for _, e in reader.events("r")]
            record = reader.run("r")
    assert [e.kind for e in stored] == [
        "run_started",
        "sync_status_changed",
        *["sync_triggering"] * 3,
    ]
    assert stored[2:] == intents
    assert record is not None
    assert {c: r.state for c, r in record.syncs.items()} == dict.fromkeys(
        ["c1", "c2", "c3"], "intent"
    )


def test_readers_skip_unknown_kinds_and_unreadable_rows_with_one_warning(backend: Backend) -> None:
    events = finished_run()
    with backend.open() as journal:
        journal_all(journal, events[:5])
        journal.flush()
        backend.insert_rows(
            "run-a",
            (6, "sync_from_the_future", '{"event":"sync_from_the_future","run_id":"run-a"}'),
            (7, "sync_triggered", '{"event":"sync_triggered","run_id":'),
        )
        journal_all(journal, events[5:])
        with capture_logs() as logs:
            rebuilt = replay_result(journal, "run-a")
            stored = journal.events("run-a")
            # Paging counts events given, not rows read: a skipped row leaves no hole in a page.
            page = journal.events("run-a", after=4, limit=3)
    assert rebuilt == live(events).result
    assert [e for _, e in stored] == events
    assert [seq for seq, _ in stored] == [*range(1, 6), *range(8, len(events) + 3)]
    assert [seq for seq, _ in page] == [5, 8, 9]
    # Told once per row, however often a follower reads past it.
    assert [(e["event"], e["seq"]) for e in logs if e["log_level"] == "warning"] == [
        ("journal_event_kind_unknown", 6),
        ("journal_event_unreadable", 7),
    ]


KILLED = """
import os, signal, sys
from datetime import UTC, datetime
from airbyte_fleet.engine.events import (
    PlannedSync, RunStarted, SyncStatusChanged, SyncTriggered, SyncTriggering,
)
import os
from airbyte_fleet.journal import Journal, PostgresStore
def store(state, **options):
    url = os.environ.get("FLEET_TEST_STORE_URL")
    return PostgresStore(url, **options) if url else Journal(state, **options)

now = datetime.now(UTC)
base = {"run_id": "killed", "at": now, "elapsed_s": 0.0}
journal = store(sys.argv[1], batch_interval=60)
planned = (PlannedSync("c1"), PlannedSync("c2"), PlannedSync("c3"))
journal(RunStarted(**base, total=3, job_type="sync", max_concurrency=2, planned=planned))
journal(SyncTriggering(**base, connection_id="c1"))
journal(SyncTriggered(**base, connection_id="c1", job_id=7, status="pending"))
journal(SyncTriggering(**base, connection_id="c2"))
journal(SyncStatusChanged(**base, connection_id="c1", job_id=7, status="running"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_killed_with_sigkill_loses_no_durable_event(backend: Backend) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(backend.state_dir)],
        capture_output=True,
        timeout=60,
        check=False,
        env=backend.env(),
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    with backend.open() as journal:
        assert journal.unfinished_runs() == ["killed"]
        assert journal.last_run_id() == "killed"
        record = journal.run("killed")
        kinds = [e.kind for _, e in journal.events("killed")]
    assert record is not None
    assert {c: s.state for c, s in record.syncs.items()} == {
        "c1": "in_flight",
        "c2": "intent",
        "c3": "untouched",
    }
    assert record.syncs["c1"].job_id == 7
    assert kinds == ["run_started", "sync_triggering", "sync_triggered", "sync_triggering"]


WRITER = """
import sys
from datetime import UTC, datetime
from airbyte_fleet.engine.events import PlannedSync, RunFinished, RunStarted, SyncTriggered
import os
from airbyte_fleet.journal import Journal, PostgresStore
def store(state, **options):
    url = os.environ.get("FLEET_TEST_STORE_URL")
    return PostgresStore(url, **options) if url else Journal(state, **options)

run_id, n = sys.argv[2], int(sys.argv[3])
def base():
    return {"run_id": run_id, "at": datetime.now(UTC), "elapsed_s": 0.0}
with store(sys.argv[1]) as journal:
    planned = tuple(PlannedSync(f"c{i}") for i in range(n))
    journal(RunStarted(**base(), total=n, job_type="sync", max_concurrency=n, planned=planned))
    for i in range(n):
        journal(SyncTriggered(**base(), connection_id=f"c{i}", job_id=i))
    journal(RunFinished(**base(), outcome="succeeded"))
"""


def test_two_processes_share_one_state_dir(backend: Backend) -> None:
    backend.open().close()  # both writers then find the schema in place
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(backend.state_dir), run_id, "400"],
            stderr=subprocess.PIPE,
            env=backend.env(),
        )
        for run_id in ("left", "right")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
    with backend.open() as journal:
        summaries = {r.run_id: r for r in journal.runs()}
        for run_id in ("left", "right"):
            assert summaries[run_id].outcome == "succeeded"
            assert len(journal.events(run_id)) == 402


def test_threads_share_one_instance(backend: Backend) -> None:
    stories = [Story(f"t{i}", [f"c{j}" for j in range(50)]) for i in range(4)]
    with backend.open(batch_interval=0.01) as journal:

        def write(story: Story) -> None:
            journal(story.started())
            for cid in story.connections:
                journal(story.sync(SyncStatusChanged, cid, job_id=1, status="running"))
                journal(story.sync(SyncTriggered, cid, job_id=1))
            journal(story.finished("succeeded"))

        threads = [threading.Thread(target=write, args=(s,)) for s in stories]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for story in stories:
            stored = journal.events(story.run_id)
            assert [seq for seq, _ in stored] == list(range(1, 102 + 1))


# --------------------------------------------------------------------------- cost


def test_ten_thousand_syncs_are_cheap_to_journal(tmp_path: Path) -> None:
    """Fed as the engine feeds it (intents a wave at a time through ``append``, every other event
    one by one), the journal commits once per wave of intents and once per MAX_BATCH other
    events, not once per event; and it never asks the file what a fresh run's events restate."""
    n, wave = 10_000, 500
    s = Story("big", [f"conn-{i:05d}" for i in range(n)])
    statements: list[str] = []
    began = time.perf_counter()
    with Journal(tmp_path, batch_interval=3600) as journal:
        journal._writer.conn.set_trace_callback(statements.append)
        journal(s.started())
        waiting = 0
        for start in range(0, n, wave):
            ids = s.connections[start : start + wave]
            journal.append([s.sync(SyncTriggering, cid) for cid in ids])
            for i, cid in enumerate(ids, start=start):
                journal(s.sync(SyncTriggered, cid, job_id=1000 + i, status="pending"))
                journal(
                    s.sync(
                        SyncStatusChanged,
                        cid,
                        job_id=1000 + i,
                        status="running",
                        old_status="pending",
                    )
                )
                journal(
                    s.sync(SyncSucceeded, cid, job_id=1000 + i, status="succeeded", rows_synced=i)
                )
                waiting += 3
        journal(s.finished("succeeded"))
        took = time.perf_counter() - began
        journal._writer.conn.set_trace_callback(None)
        listed = time.perf_counter()
        [summary] = journal.runs()
        record = journal.run("big")
        list_took = time.perf_counter() - listed
    commits = sum(sql == "COMMIT" for sql in statements)
    print(
        f"\njournaled {1 + 4 * n + 1} events for {n} syncs in {took:.2f} s, {commits} commits; "
        f"read back in {list_took:.2f} s"
    )
    assert summary.counts["succeeded"] == n
    assert record is not None
    assert len(record.syncs) == n
    assert all(r.outcome == "succeeded" for r in record.syncs.values())
    # run_started, one per wave, one per full batch, run_finished.
    assert commits <= 1 + n // wave + -(-waiting // MAX_BATCH) + 1
    assert not [sql for sql in statements if sql.startswith("SELECT outcome")]
    assert sum(sql.startswith("SELECT MAX(seq)") for sql in statements) == 1
    # Loose, for a noisy machine: about 1.5 s on 2 cores, 5.9 s with a commit per event.
    assert took < 15
