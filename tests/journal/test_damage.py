"""A damaged journal is found out, not trusted: the WAL a killed process left, truncated or written
over, is flagged when the journal opens (a resume then reconciles with Airbyte before triggering);
content that cannot be read is one error naming the file; reading never fails for a disk that
refuses writes, and never creates a journal."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from airbyte_fleet.engine.events import SyncStatusChanged, SyncTriggering
from airbyte_fleet.journal import (
    FILE_NAME,
    Journal,
    JournalDamagedError,
    JournalError,
    NoJournalError,
)
from airbyte_fleet.runner.replay import replay_result
from airbyte_fleet.runner.resume import resume_plan

from .stories import Story, crashed_run, finished_run, journal_all, live, write_lock_held

# A run of 30 syncs, every one triggered, then the process is killed: its WAL stays behind with
# a frame or more per commit, and the wal-index (-shm) says how many were committed.
KILLED = """
import os, signal, sys
from datetime import UTC, datetime
from airbyte_fleet.engine.events import PlannedSync, RunStarted, SyncTriggered, SyncTriggering
from airbyte_fleet.journal import Journal

base = {"run_id": "killed", "at": datetime.now(UTC), "elapsed_s": 0.0}
journal = Journal(sys.argv[1])
planned = tuple(PlannedSync(f"c{i:02d}") for i in range(30))
journal(RunStarted(**base, total=30, job_type="sync", max_concurrency=30, planned=planned))
for i, p in enumerate(planned):
    journal(SyncTriggering(**base, connection_id=p.connection_id))
    journal(SyncTriggered(**base, connection_id=p.connection_id, job_id=100 + i, status="running"))
journal.flush()  # the last sync_triggered waits for a commit, like every one before it
os.kill(os.getpid(), signal.SIGKILL)
"""

FRAME = 24 + 4096
WAL = f"{FILE_NAME}-wal"


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("killed")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(state)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert (state / WAL).stat().st_size > 100 * FRAME
    assert (state / f"{FILE_NAME}-shm").exists()
    return state


def _copy(killed: Path, into: Path, wal: Callable[[bytes], bytes], *, shm: bool = True) -> Path:
    shutil.copytree(killed, into)
    (into / WAL).write_bytes(wal((killed / WAL).read_bytes()))
    if not shm:
        (into / f"{FILE_NAME}-shm").unlink()
    return into


def _states(journal: Journal) -> dict[str, int]:
    record = journal.run("killed")
    assert record is not None
    counted: dict[str, int] = {}
    for sync in record.syncs.values():
        counted[sync.state] = counted.get(sync.state, 0) + 1
    return counted


def _frames(wal: bytes) -> int:
    return (len(wal) - 32) // FRAME


def _garbage_at(offset: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def damage(wal: bytes) -> bytes:
        at = offset(wal)
        return wal[:at] + os.urandom(8192) + wal[at + 8192 :]

    return damage


DAMAGE: dict[str, tuple[Callable[[bytes], bytes], bool, str]] = {
    "truncated mid-frame": (
        lambda wal: wal[: len(wal) // 2 + 123],
        True,
        "ends in a partial frame",
    ),
    "truncated at a frame": (
        lambda wal: wal[: 32 + _frames(wal) // 2 * FRAME],
        True,
        "lost",
    ),
    "emptied": (lambda wal: b"", True, "is gone"),
    "8 KB of garbage inside": (
        _garbage_at(lambda wal: 32 + _frames(wal) // 2 * FRAME + 1000),
        True,
        "lost",
    ),
    "8 KB of garbage inside, no index": (
        _garbage_at(lambda wal: 32 + _frames(wal) // 2 * FRAME),
        False,
        "cannot verify",
    ),
    "a header written over": (lambda wal: os.urandom(32) + wal[32:], True, "valid header"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_wal_left_by_a_killed_process_is_found(
    killed: Path, tmp_path: Path, name: str
) -> None:
    damage, keep_index, said = DAMAGE[name]
    state = _copy(killed, tmp_path / "state", damage, shm=keep_index)
    with capture_logs() as logs, Journal(state) as journal:
        found = journal.damage
        lost = journal.run("killed") is None or _states(journal).get("untouched", 0) > 0
    assert found is not None
    assert said in found
    # The damage was real: commits the killed process made are not in the journal any more.
    assert lost
    (warned,) = [e for e in logs if e["event"] == "journal_damaged"]
    assert warned["path"] == str(state / FILE_NAME)
    assert warned["log_level"] == "warning"


def test_an_intact_wal_left_by_a_killed_process_is_not_damage(killed: Path, tmp_path: Path) -> None:
    state = _copy(killed, tmp_path / "state", lambda wal: wal)
    with Journal(state) as journal:
        assert journal.damage is None
        assert _states(journal) == {"in_flight": 30}
    # Closed cleanly, the journal is not checked again (and still holds everything).
    assert not (state / WAL).exists()
    with Journal(state) as journal:
        assert journal.damage is None
        assert _states(journal) == {"in_flight": 30}


WRITER = """
import sys, time
from datetime import UTC, datetime
from airbyte_fleet.engine.events import PlannedSync, RunStarted, SyncSucceeded, SyncTriggering
from airbyte_fleet.journal import Journal

with Journal(sys.argv[1]) as journal:
    print("writing", flush=True)
    for r in range(10_000):
        base = {"run_id": f"r{r}", "at": datetime.now(UTC), "elapsed_s": 0.0}
        planned = tuple(PlannedSync(f"c{i}") for i in range(20))
        journal(RunStarted(**base, total=20, job_type="sync", max_concurrency=20, planned=planned))
        for p in planned:
            journal(SyncTriggering(**base, connection_id=p.connection_id))
            journal(SyncSucceeded(**base, connection_id=p.connection_id, job_id=1))
"""


def test_a_journal_another_process_is_writing_is_never_taken_for_damaged(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(tmp_path)],
        stdout=subprocess.PIPE,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"writing\n"
        opened = 0
        began = time.monotonic()
        while time.monotonic() - began < 1.5 and writer.poll() is None:
            with Journal(tmp_path) as journal:
                assert journal.damage is None
            opened += 1
    finally:
        writer.kill()
        writer.wait()
    assert opened > 10
    # What the writer committed while we looked is all there.
    with Journal(tmp_path) as journal:
        assert journal.damage is None
        assert journal.runs(limit=1)


def test_a_resume_from_a_damaged_journal_reconciles_every_sync_it_shows_untouched(
    tmp_path: Path,
) -> None:
    with Journal(tmp_path) as journal:
        journal_all(journal, crashed_run())
        record = journal.run("run-crash")
    assert record is not None
    _, trusted = resume_plan(record)
    _, damaged = resume_plan(record, damaged=True)
    assert trusted["c4"].state == "untouched"
    assert damaged["c4"].state == "intent"
    assert damaged["c4"].intent_at == record.started_at
    # What the journal does account for is carried on as it says.
    for cid in ("c1", "c2", "c3", "c5"):
        assert damaged[cid] == trusted[cid]


# --------------------------------------------------------------------------- unreadable content


def test_a_file_that_is_not_a_database_is_one_sentence_naming_it(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"not a journal\n" * 500)
    with pytest.raises(JournalDamagedError) as raised:
        Journal(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"The journal at {tmp_path / FILE_NAME} cannot be read")
    assert "move it aside" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE runs SET options = '[1, 2'",
        "UPDATE runs SET selection = '\"a string\"'",
        "UPDATE runs SET resumed_at = 'later'",
        "UPDATE syncs SET finished_at = 42",
    ],
)
def test_a_row_this_version_cannot_read_is_one_error_naming_the_file_and_run(
    tmp_path: Path, damage: str
) -> None:
    with Journal(tmp_path) as journal:
        journal_all(journal, crashed_run())
    db = sqlite3.connect(tmp_path / FILE_NAME)
    with db:
        db.execute(damage)
    db.close()
    with Journal(tmp_path) as journal, pytest.raises(JournalDamagedError) as raised:
        journal.run("run-crash")
    assert str(tmp_path / FILE_NAME) in str(raised.value)
    assert "run-crash" in str(raised.value)


def test_a_run_whose_start_cannot_be_read_is_replayed_from_its_record(tmp_path: Path) -> None:
    events = finished_run()
    with Journal(tmp_path) as journal:
        journal_all(journal, events)
    db = sqlite3.connect(tmp_path / FILE_NAME)
    with db:
        db.execute('UPDATE events SET data = \'{"event": "run_started", \' WHERE seq = 1')
    db.close()
    with Journal(tmp_path) as journal, capture_logs() as logs:
        rebuilt = replay_result(journal, "run-a")
    # Not "no such run", and not a result that lost the run's plan: the same result as live.
    assert rebuilt == live(events).result
    assert [e["event"] for e in logs] == ["journal_event_unreadable", "journal_run_start_rebuilt"]


# --------------------------------------------------------------------------- reads that go on


def test_reads_go_on_while_the_disk_refuses_writes(tmp_path: Path) -> None:
    s = Story("r", ["c1"])
    with Journal(tmp_path, busy_timeout=0.1, batch_interval=60) as journal:
        journal(s.started())
        journal(s.sync(SyncTriggering, "c1"))
        # A status event waits in the batch; reading commits it first, which now fails.
        journal(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
        with write_lock_held(tmp_path), capture_logs() as logs:
            for _ in range(3):
                assert [r.run_id for r in journal.runs()] == ["r"]
                record = journal.run("r")
                assert record is not None
                assert record.syncs["c1"].state == "intent"
        # Told once, however many reads.
        assert [e["event"] for e in logs] == ["journal_flush_failed"]
        # The lock gone, the batch is written by the next read.
        assert journal.run("r").syncs["c1"].status == "running"  # type: ignore[union-attr]


def test_reading_a_state_dir_without_a_journal_creates_nothing(tmp_path: Path) -> None:
    state = tmp_path / "not-yet"
    with pytest.raises(NoJournalError):
        Journal(state, create=False)
    assert not state.exists()
    state.mkdir()
    with pytest.raises(NoJournalError):
        Journal(state, create=False)
    assert list(state.iterdir()) == []


def test_a_reader_cannot_write(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal_all(journal, crashed_run())
    with Journal(tmp_path, create=False) as reader:
        assert reader.run("run-crash") is not None
    # A journal that must not be written (a reader of someone else's state dir) is opened
    # read-only; its writes fail, its reads do not.
    db = tmp_path / FILE_NAME
    db.chmod(0o444)
    try:
        if os.access(db, os.W_OK):
            pytest.skip("this user writes read-only files (root)")
        with Journal(tmp_path, create=False) as reader:
            assert reader.run("run-crash") is not None
            with pytest.raises(JournalError):
                reader(Story("x", ["c1"]).started())
    finally:
        db.chmod(0o644)
