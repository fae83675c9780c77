"""Group commit: what is durable when, proven on processes killed with SIGKILL.

Intents (``sync_triggering``), ``run_started`` and ``run_finished`` are durable when the call
returns; every other sync event waits for the next of those, the timer, a full batch, ``flush()``
or ``close()``. A crash between an intent batch and the events after it leaves each of those syncs
as an intent, which a resume reconciles with Airbyte. Sequence numbers, counted in memory, carry
on from the file across a resume and past rows another process wrote.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from airbyte_fleet.engine.events import (
    PlannedSync,
    SyncAdopted,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.journal import Fsync, Journal, JournalError
from airbyte_fleet.journal.writer import MAX_BATCH
from airbyte_fleet.runner.resume import resume_plan
from journal.backends import Backend
from journal.stories import Story


def _python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script), *args]


# --------------------------------------------------------------------------- durable on return

READER = """
import json, sys
import os
from airbyte_fleet.journal import Journal, PostgresStore
def store(state, **options):
    url = os.environ.get("FLEET_TEST_STORE_URL")
    return PostgresStore(url, **options) if url else Journal(state, **options)

with store(sys.argv[1], create=False) as journal:
    record = journal.run(sys.argv[2])
    print(json.dumps({
        "kinds": [e.kind for _, e in journal.events(sys.argv[2])],
        "states": {c: s.state for c, s in record.syncs.items()} if record else None,
    }))
"""


def _read_in_another_process(backend: Backend, run_id: str) -> dict[str, object]:
    done = subprocess.run(
        _python(READER, str(backend.state_dir), run_id),
        capture_output=True,
        timeout=60,
        check=False,
        env=backend.env(),
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    found: dict[str, object] = json.loads(done.stdout)
    return found


def test_an_intent_batch_is_durable_for_another_process_when_append_returns(
    backend: Backend,
) -> None:
    ids = [f"c{i:03d}" for i in range(300)]
    s = Story("r", ids)
    with backend.open(batch_interval=3600) as journal:
        journal(s.started())
        journal.append([s.sync(SyncTriggering, c) for c in ids[:100]])
        journal(s.sync(SyncTriggered, "c000", job_id=1, status="pending"))
        seen = _read_in_another_process(backend, "r")
        # The job id waits: another process sees c000 as an intent still.
        assert seen["kinds"] == ["run_started", *["sync_triggering"] * 100]
        journal.append([s.sync(SyncTriggering, c) for c in ids[100:]])
        seen = _read_in_another_process(backend, "r")
    # The second batch, and what waited before it, in the order written.
    assert seen["kinds"] == [
        "run_started",
        *["sync_triggering"] * 100,
        "sync_triggered",
        *["sync_triggering"] * 200,
    ]
    states = seen["states"]
    assert isinstance(states, dict)
    assert states.pop("c000") == "in_flight"
    assert set(states.values()) == {"intent"}


# --------------------------------------------------------------------------- what a kill loses

KILLED = """
import os, signal, sys
from datetime import UTC, datetime
from airbyte_fleet.engine.events import (
    PlannedSync, RunFinished, RunStarted, SyncStatusChanged, SyncSucceeded, SyncTriggered,
    SyncTriggering,
)
import os
from airbyte_fleet.journal import Journal, PostgresStore
def store(state, **options):
    url = os.environ.get("FLEET_TEST_STORE_URL")
    return PostgresStore(url, **options) if url else Journal(state, **options)
from airbyte_fleet.journal.writer import MAX_BATCH

state, how = sys.argv[1], sys.argv[2]
def base():
    return {"run_id": "killed", "at": datetime.now(UTC), "elapsed_s": 0.0}
def sync(cls, cid, **extra):
    return cls(**base(), connection_id=cid, **extra)

journal = store(state, batch_interval=3600)
planned = (PlannedSync("c1"), PlannedSync("c2"))
journal(RunStarted(**base(), total=2, job_type="sync", max_concurrency=2, planned=planned))
journal.append([sync(SyncTriggering, "c1"), sync(SyncTriggering, "c2")])
journal(sync(SyncTriggered, "c1", job_id=1, status="pending"))
if how == "max_batch":
    # With these, the sync_triggered before and the sync_succeeded after fill the batch: the
    # sync_succeeded commits it.
    for _ in range(MAX_BATCH - 2):
        journal(sync(SyncStatusChanged, "c1", job_id=1, status="running"))
journal(sync(SyncSucceeded, "c1", job_id=1, status="succeeded"))
if how == "flush":
    journal.flush()
elif how == "run_finished":
    journal(RunFinished(**base(), outcome="interrupted", interrupted=True))
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed(backend: Backend, how: str) -> None:
    done = subprocess.run(
        _python(KILLED, str(backend.state_dir), how),
        capture_output=True,
        timeout=60,
        check=False,
        env=backend.env(),
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]


def test_a_crash_after_an_intent_batch_leaves_its_syncs_as_intents_for_resume(
    backend: Backend,
) -> None:
    _killed(backend, "nothing")
    with backend.open() as journal:
        assert journal.damage is None
        record = journal.run("killed")
        kinds = [e.kind for _, e in journal.events("killed")]
    assert record is not None
    # c1's job id and outcome waited in memory and died with the process: the journal still
    # says c1's trigger may have gone out, so a resume looks for its job in Airbyte.
    assert kinds == ["run_started", "sync_triggering", "sync_triggering"]
    assert {c: s.state for c, s in record.syncs.items()} == {"c1": "intent", "c2": "intent"}
    _, points = resume_plan(record)
    for cid in ("c1", "c2"):
        point = points[cid]
        assert (point.state, point.attempt, point.job_id) == ("intent", 1, None)
        assert point.intent_at == record.syncs[cid].intent_at
        assert point.intent_at is not None


@pytest.mark.parametrize("how", ["flush", "run_finished", "max_batch"])
def test_what_waited_is_durable_after_a_flush_a_finish_or_a_full_batch(
    backend: Backend, how: str
) -> None:
    _killed(backend, how)
    with backend.open() as journal:
        record = journal.run("killed")
        kinds = [e.kind for _, e in journal.events("killed")]
    assert record is not None
    c1 = record.syncs["c1"]
    assert (c1.state, c1.job_id, c1.outcome) == ("final", 1, "succeeded")
    assert record.syncs["c2"].state == "intent"
    statuses = MAX_BATCH - 2 if how == "max_batch" else 0
    finished = ["run_finished"] if how == "run_finished" else []
    assert kinds == [
        "run_started",
        "sync_triggering",
        "sync_triggering",
        "sync_triggered",
        *["sync_status_changed"] * statuses,
        "sync_succeeded",
        *finished,
    ]
    assert record.finished_at is not None if how == "run_finished" else record.finished_at is None


IDLE = """
import sys
from datetime import UTC, datetime
from airbyte_fleet.engine.events import (
    PlannedSync, RunStarted, SyncSucceeded, SyncTriggered, SyncTriggering,
)
import os
from airbyte_fleet.journal import Journal, PostgresStore
def store(state, **options):
    url = os.environ.get("FLEET_TEST_STORE_URL")
    return PostgresStore(url, **options) if url else Journal(state, **options)

def base():
    return {"run_id": "idle", "at": datetime.now(UTC), "elapsed_s": 0.0}
journal = store(sys.argv[1], batch_interval=0.2)
journal(RunStarted(**base(), total=1, job_type="sync", max_concurrency=1,
                   planned=(PlannedSync("c1"),)))
journal(SyncTriggering(**base(), connection_id="c1"))
journal(SyncTriggered(**base(), connection_id="c1", job_id=5, status="running"))
journal(SyncSucceeded(**base(), connection_id="c1", job_id=5, status="succeeded"))
print("written", flush=True)
sys.stdin.readline()  # idle until killed: only the timer can commit what waits
"""


def test_the_timer_commits_what_waits_while_the_writer_idles(backend: Backend) -> None:
    writer = subprocess.Popen(
        _python(IDLE, str(backend.state_dir)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=backend.env(),
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"written\n"

        def outcome() -> str | None:
            with backend.open() as reader:
                record = reader.run("idle")
            return record.syncs["c1"].outcome if record else None

        deadline = time.monotonic() + 30
        while outcome() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert outcome() == "succeeded"
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    with backend.open() as journal:
        kinds = [e.kind for _, e in journal.events("idle")]
    assert kinds == ["run_started", "sync_triggering", "sync_triggered", "sync_succeeded"]


# --------------------------------------------------------------------------- sequence numbers

WAVES = """
import sys
from datetime import UTC, datetime
from airbyte_fleet.engine.events import PlannedSync, RunStarted, SyncTriggered, SyncTriggering
from airbyte_fleet.journal import Journal

state, waves, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def base():
    return {"run_id": "waves", "at": datetime.now(UTC), "elapsed_s": 0.0}
ids = [f"c{i:03d}" for i in range(waves * size)]
journal = Journal(state, batch_interval=3600)
journal(RunStarted(**base(), total=len(ids), job_type="sync", max_concurrency=size,
                   planned=tuple(PlannedSync(c) for c in ids)))
for wave in range(waves):
    chunk = ids[wave * size : (wave + 1) * size]
    journal.append([SyncTriggering(**base(), connection_id=c) for c in chunk])
    for c in chunk:
        journal(SyncTriggered(**base(), connection_id=c, job_id=int(c[1:]), status="running"))
    print(wave, flush=True)
    sys.stdin.readline()  # the test lets the next wave go, or kills the process here
"""


def test_sequence_numbers_carry_on_across_a_process_killed_between_batches(
    tmp_path: Path,
) -> None:
    size = 20
    writer = subprocess.Popen(
        _python(WAVES, str(tmp_path), "4", str(size)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdin is not None
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"0\n"
        writer.stdin.write(b"\n")
        writer.stdin.flush()
        assert writer.stdout.readline() == b"1\n"
    finally:
        writer.kill()  # SIGKILL: wave 1's sync_triggered events die in memory
        writer.wait()
    assert writer.returncode == -signal.SIGKILL

    ids = [f"c{i:03d}" for i in range(4 * size)]
    with Journal(tmp_path) as journal:
        assert journal.damage is None
        record = journal.run("waves")
        assert record is not None
        states = [record.syncs[c].state for c in ids]
        assert states == ["in_flight"] * size + ["intent"] * size + ["untouched"] * 2 * size
        _, points = resume_plan(record)
        assert {points[c].state for c in ids[size : 2 * size]} == {"intent"}
        stored = journal.events("waves")
        first = len(stored)
        assert [seq for seq, _ in stored] == list(range(1, first + 1))
        assert first == 1 + size + size + size

        # The resumer: adopts wave 1's jobs, triggers the rest a wave at a time, finishes. It
        # reads where the run's numbers stopped once, and never collides with them.
        statements: list[str] = []
        journal._writer.conn.set_trace_callback(statements.append)
        s = Story("waves", ids)
        journal(s.started(resumed=True, planned=tuple(PlannedSync(c) for c in ids)))
        for c in ids[size : 2 * size]:
            journal(s.sync(SyncAdopted, c, job_id=int(c[1:]), status="running", reason="resumed"))
        for wave in (2, 3):
            chunk = ids[wave * size : (wave + 1) * size]
            journal.append([s.sync(SyncTriggering, c) for c in chunk])
            for c in chunk:
                journal(s.sync(SyncTriggered, c, job_id=int(c[1:]), status="running"))
        for c in ids:
            journal(s.sync(SyncSucceeded, c, job_id=int(c[1:]), status="succeeded"))
        journal(s.finished("succeeded"))
        journal._writer.conn.set_trace_callback(None)
        stored = journal.events("waves")
        record = journal.run("waves")
    assert sum(sql.startswith("SELECT MAX(seq)") for sql in statements) == 1
    assert "ROLLBACK" not in statements
    assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
    assert stored[first][1].kind == "run_started"
    assert len(stored) == first + 1 + size + 2 * (2 * size) + 4 * size + 1
    assert record is not None
    assert {s.outcome for s in record.syncs.values()} == {"succeeded"}


def test_rows_another_process_wrote_to_the_run_are_not_overwritten(backend: Backend) -> None:
    s = Story("r", ["c1", "c2"])
    with backend.open(batch_interval=3600) as journal:
        journal(s.started())
        journal(s.sync(SyncTriggering, "c1"))
        # Another writer (another process, another version) appends to the same run.
        backend.insert_rows("r", (3, "sync_status_changed", "{}"), (4, "sync_from_later", "{}"))
        journal(s.sync(SyncTriggered, "c1", job_id=1, status="running"))
        journal(s.sync(SyncTriggering, "c2"))
        rows = journal.events("r")
    # Ours carry on after theirs (the unreadable rows are skipped by readers).
    assert [(seq, e.kind) for seq, e in rows] == [
        (1, "run_started"),
        (2, "sync_triggering"),
        (5, "sync_triggered"),
        (6, "sync_triggering"),
    ]


# --------------------------------------------------------------------------- fsync


@pytest.mark.parametrize("fsync", ["triggers", "always", "never"])
def test_a_commit_is_fsynced_when_it_holds_an_intent(tmp_path: Path, fsync: Fsync) -> None:
    """``triggers``: each commit that holds an intent is fsynced (SQLite's synchronous=FULL in WAL
    mode), and only those; ``always``: every one; ``never``: none."""
    s = Story("r", ["c1", "c2", "c3"])
    statements: list[str] = []
    with Journal(tmp_path, fsync=fsync, batch_interval=3600) as journal:
        journal._writer.conn.set_trace_callback(statements.append)
        journal(s.started())
        journal.append([s.sync(SyncTriggering, "c1"), s.sync(SyncTriggering, "c2")])
        journal(s.sync(SyncTriggered, "c1", job_id=1, status="running"))
        journal.flush()
        journal(s.sync(SyncTriggered, "c2", job_id=2, status="running"))
        journal(s.sync(SyncTriggering, "c3"))
        journal(s.finished("succeeded"))
        journal._writer.conn.set_trace_callback(None)
    mode, holds_intent = "", False
    commits: list[tuple[bool, str]] = []
    for sql in statements:
        if sql.startswith("PRAGMA synchronous="):
            mode = sql.split("=", 1)[1]
        elif sql == "BEGIN IMMEDIATE":
            holds_intent = False
        elif "intent_at = CASE" in sql:
            holds_intent = True
        elif sql == "COMMIT":
            commits.append((holds_intent, mode))
    assert [intent for intent, _ in commits] == [False, True, False, True, False]
    if fsync == "triggers":
        assert all((m == "FULL") == intent for intent, m in commits), commits
    else:
        expected = "FULL" if fsync == "always" else "NORMAL"
        assert {m or expected for _, m in commits} == {expected}


# --------------------------------------------------------------------------- failures


def test_a_full_batch_the_disk_refuses_raises_and_is_kept(backend: Backend) -> None:
    s = Story("r", ["c1"])
    with backend.open(lock_timeout=0.1, batch_interval=3600) as journal:
        journal(s.started())
        journal(s.sync(SyncTriggering, "c1"))
        journal(s.sync(SyncTriggered, "c1", job_id=1, status="pending"))
        with backend.write_lock_held():
            for _ in range(MAX_BATCH - 2):
                journal(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
            # The batch is full and cannot be committed: the event that filled it says so.
            with pytest.raises(JournalError, match="lock"):
                journal(s.sync(SyncSucceeded, "c1", job_id=1, status="succeeded"))
            # ... and so does every later one while the disk refuses (each tries again).
            with pytest.raises(JournalError, match="lock"):
                journal(s.sync(SyncStatusChanged, "c1", job_id=1, status="succeeded"))
        journal.flush()
        kinds = [e.kind for _, e in journal.events("r")]
        record = journal.run("r")
    assert kinds == [
        "run_started",
        "sync_triggering",
        "sync_triggered",
        *["sync_status_changed"] * (MAX_BATCH - 2),
        "sync_succeeded",
        "sync_status_changed",
    ]
    assert record is not None
    assert record.syncs["c1"].outcome == "succeeded"


def test_a_run_finished_the_disk_refuses_raises(backend: Backend) -> None:
    s = Story("r", ["c1"])
    with backend.open(lock_timeout=0.1, batch_interval=3600) as journal:
        journal(s.started())
        journal(s.sync(SyncTriggering, "c1"))
        journal(s.sync(SyncSucceeded, "c1", job_id=1, status="succeeded"))
        with backend.write_lock_held(), pytest.raises(JournalError, match="lock"):
            journal(s.finished("succeeded"))
        # Not written behind the caller's back; what waited before it still is.
        journal.flush()
        kinds = [e.kind for _, e in journal.events("r")]
        assert journal.unfinished_runs() == ["r"]
    assert kinds == ["run_started", "sync_triggering", "sync_succeeded"]


def test_a_resumed_run_is_told_its_final_outcomes_once(backend: Backend) -> None:
    """The check a fresh run skips still holds for a run another instance started: a resumer
    reporting an outcome the journal has is not recorded twice."""
    s = Story("r", ["c1"])
    succeeded = s.sync(SyncSucceeded, "c1", job_id=1, status="succeeded")
    with backend.open() as first:
        first(s.started())
        first(s.sync(SyncTriggering, "c1"))
        first(s.sync(SyncTriggered, "c1", job_id=1, status="running"))
        first(succeeded)
    with backend.open() as resumer:
        resumer(s.started(resumed=True))
        resumer(succeeded)
        kinds = [e.kind for _, e in resumer.events("r")]
    assert kinds == [
        "run_started",
        "sync_triggering",
        "sync_triggered",
        "sync_succeeded",
        "run_started",
    ]


def test_a_run_started_afresh_is_not_confused_with_one_resumed_in_the_same_instance(
    backend: Backend,
) -> None:
    s = Story("r", ["c1"])
    succeeded = s.sync(SyncSucceeded, "c1", job_id=1, status="succeeded")
    with backend.open() as journal:
        journal(s.started())
        journal(s.sync(SyncTriggering, "c1"))
        journal(succeeded)
        journal(s.finished("interrupted", interrupted=True))
        # Resumed by the same instance (the worker): its outcomes are checked again.
        journal(s.started(resumed=True))
        journal(succeeded)
        kinds = [e.kind for _, e in journal.events("r")]
    assert kinds.count("sync_succeeded") == 1
    assert kinds[-1] == "run_started"
