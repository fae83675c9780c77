"""Skip causes: kept by the journal, upgraded from a version-1 file, and all that resume reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from airbyte_fleet.engine.events import SyncSkipped, SyncSucceeded, SyncTriggering
from airbyte_fleet.journal import FILE_NAME, SCHEMA_VERSION, Journal
from airbyte_fleet.runner.replay import replay_result
from airbyte_fleet.runner.resume import resume_plan
from journal.stories import Story, journal_all

# What airbyte-fleet wrote before skip causes existed: its schema, verbatim, and one interrupted
# run as its code stored it (run c1, interrupt before c2's turn, c3 inactive, c4 left running).
V1_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, outcome TEXT,
    job_type TEXT NOT NULL DEFAULT 'sync', wait INTEGER NOT NULL DEFAULT 1,
    max_concurrency INTEGER, total INTEGER NOT NULL DEFAULT 0,
    interrupted INTEGER NOT NULL DEFAULT 0, starts INTEGER NOT NULL DEFAULT 0, resumed_at TEXT,
    options TEXT, selection TEXT, reported_counts TEXT
);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE TABLE syncs (
    run_id TEXT NOT NULL, connection_id TEXT NOT NULL, position INTEGER,
    connection_name TEXT NOT NULL DEFAULT '', workspace_id TEXT NOT NULL DEFAULT '',
    attempt INTEGER NOT NULL DEFAULT 0, job_id INTEGER, status TEXT, outcome TEXT, error TEXT,
    intent_at TEXT, triggered_at TEXT, finished_at TEXT, rows_synced INTEGER,
    bytes_synced INTEGER,
    PRIMARY KEY (run_id, connection_id)
) WITHOUT ROWID;
CREATE INDEX syncs_by_job ON syncs (job_id);
CREATE TABLE events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, connection_id TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def _at(second: int) -> str:
    return f"2026-03-01T12:00:{second:02d}.000000+00:00"


def _sync(kind: str, cid: str, second: int, extra: str = "") -> tuple[str, str, str]:
    data = (
        f'{{"event":"{kind}","run_id":"old","at":"{_at(second)}","elapsed_s":{second}.0,'
        f'"connection_id":"{cid}","connection_name":"name {cid}","workspace_id":"ws-1",'
        f'"job_type":"sync","attempt":1{extra}}}'
    )
    return kind, cid, data


V1_EVENTS = [
    (
        "run_started",
        None,
        f'{{"event":"run_started","run_id":"old","at":"{_at(0)}","elapsed_s":0.0,"total":4,'
        '"job_type":"sync","max_concurrency":1,"wait":true,"resumed":false,"planned":['
        + ",".join(
            f'{{"connection_id":"{c}","connection_name":"name {c}","workspace_id":"ws-1"}}'
            for c in ("c1", "c2", "c3", "c4")
        )
        + '],"options":{"job_type":"sync","max_concurrency":1,"retries":0,"wait":true}}',
    ),
    _sync("sync_skipped", "c3", 1, ',"reason":"connection is inactive","outcome":"skipped"'),
    _sync("sync_triggering", "c1", 2),
    _sync("sync_triggered", "c1", 3, ',"job_id":11,"status":"pending"'),
    _sync("sync_succeeded", "c1", 4, ',"job_id":11,"status":"succeeded","rows_synced":5'),
    _sync("sync_triggering", "c4", 5),
    _sync("sync_triggered", "c4", 6, ',"job_id":14,"status":"running"'),
    _sync(
        "sync_skipped",
        "c2",
        7,
        ',"reason":"run interrupted before trigger","outcome":"skipped"',
    ),
    _sync(
        "sync_detached",
        "c4",
        8,
        ',"job_id":14,"status":"running","error":"run interrupted; job 14 left running"',
    ),
    (
        "run_finished",
        None,
        f'{{"event":"run_finished","run_id":"old","at":"{_at(9)}","elapsed_s":9.0,'
        '"outcome":"interrupted","counts":{"succeeded":1,"skipped":2,"error":1},'
        '"interrupted":true}',
    ),
]

# (connection_id, position, attempt, job_id, status, outcome, error, intent, triggered, finished)
V1_SYNCS = [
    ("c1", 0, 1, 11, "succeeded", "succeeded", None, 2, 3, 4),
    ("c2", 1, 1, None, None, "skipped", "run interrupted before trigger", None, None, 7),
    ("c3", 2, 1, None, None, "skipped", "connection is inactive", None, None, 1),
    ("c4", 3, 1, 14, "running", None, "run interrupted; job 14 left running", 5, 6, None),
]


def _version_1_journal(state_dir: Path) -> None:
    db = sqlite3.connect(state_dir / FILE_NAME)
    db.executescript(V1_SCHEMA)
    with db:
        db.execute(
            "INSERT INTO runs VALUES ('old', ?, ?, 'interrupted', 'sync', 1, 1, 4, 1, 1, NULL, "
            """'{"job_type":"sync","max_concurrency":1,"retries":0,"wait":true}', NULL, """
            """'{"succeeded":1,"skipped":2,"error":1}')""",
            (_at(0), _at(9)),
        )
        db.executemany(
            "INSERT INTO syncs VALUES ('old', ?, ?, ?, 'ws-1', ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            [
                (
                    cid,
                    position,
                    f"name {cid}",
                    attempt,
                    job_id,
                    status,
                    outcome,
                    error,
                    *(None if s is None else _at(s) for s in (intent, triggered, finished)),
                    5 if cid == "c1" else None,
                )
                for cid, position, attempt, job_id, status, outcome, error, intent, triggered, finished in V1_SYNCS
            ],
        )
        db.executemany(
            "INSERT INTO events VALUES ('old', ?, ?, ?, ?)",
            [(seq, *row) for seq, row in enumerate(V1_EVENTS, start=1)],
        )
    db.close()


def test_a_version_1_journal_is_upgraded_in_place_and_reads_as_before(tmp_path: Path) -> None:
    _version_1_journal(tmp_path)
    with Journal(tmp_path) as journal:
        record = journal.run("old")
        [listed] = journal.runs()
        stored = journal.events("old")
        result = replay_result(journal, "old")
    db = sqlite3.connect(tmp_path / FILE_NAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    assert record is not None
    assert (record.outcome, record.interrupted, record.total) == ("interrupted", True, 4)
    assert record.options["retries"] == 0
    assert [p.connection_id for p in record.planned] == ["c1", "c2", "c3", "c4"]
    # The one time the old text is read: the skip it marked becomes a cause.
    assert {c: (s.outcome, s.cause) for c, s in record.syncs.items()} == {
        "c1": ("succeeded", None),
        "c2": ("skipped", "interrupted"),
        "c3": ("skipped", None),
        "c4": (None, None),
    }
    assert record.counts == listed.counts
    assert {k: n for k, n in listed.counts.items() if n} == {
        "succeeded": 1,
        "skipped": 2,
        "error": 1,
    }
    # Every event the old version wrote decodes (no skip cause in them: they predate it).
    assert [e.kind for _, e in stored] == [kind for kind, _, _ in V1_EVENTS]
    assert result is not None
    assert (result.outcome, result.counts["succeeded"], result.syncs[0].rows_synced) == (
        "interrupted",
        1,
        5,
    )
    _, points = resume_plan(record)
    assert {c: p.state for c, p in points.items()} == {
        "c1": "final",
        "c2": "untouched",
        "c3": "final",
        "c4": "in_flight",
    }
    assert points["c4"].job_id == 14


def test_resume_reads_the_skip_cause_never_the_text(tmp_path: Path) -> None:
    s = Story("r", ["c1", "c2", "c3", "c4"])
    events = [
        s.started(),
        *s.lifecycle("c1", 1),
        s.sync(SyncSkipped, "c2", reason="stopped early", cause="interrupted"),
        # The text alone says nothing: only the cause makes a skip worth running on resume.
        s.sync(SyncSkipped, "c3", reason="run interrupted before trigger"),
        s.sync(SyncSkipped, "c4", reason="connection is inactive", cause="inactive"),
        s.finished("interrupted", interrupted=True),
    ]
    with Journal(tmp_path) as journal:
        journal_all(journal, events)
        record = journal.run("r")
    assert record is not None
    assert {c: r.cause for c, r in record.syncs.items()} == {
        "c1": None,
        "c2": "interrupted",
        "c3": None,
        "c4": "inactive",
    }
    plan, points = resume_plan(record)
    assert [p.connection_id for p in plan.items] == ["c1", "c2", "c3", "c4"]
    assert all(p.runnable for p in plan.items)
    assert {c: p.state for c, p in points.items()} == {
        "c1": "final",
        "c2": "untouched",
        "c3": "final",
        "c4": "final",
    }


def test_a_new_attempt_clears_the_skip_cause(tmp_path: Path) -> None:
    s = Story("r", ["c1"])
    with Journal(tmp_path) as journal:
        journal_all(
            journal,
            [
                s.started(),
                s.sync(SyncSkipped, "c1", reason="stopped", cause="interrupted"),
                s.finished("interrupted", interrupted=True),
                s.started(resumed=True),
                s.sync(SyncTriggering, "c1"),
            ],
        )
        triggering = journal.run("r")
        journal(s.sync(SyncSucceeded, "c1", job_id=3, status="succeeded"))
        done = journal.run("r")
    assert triggering is not None
    assert done is not None
    assert (triggering.syncs["c1"].state, triggering.syncs["c1"].cause) == ("intent", None)
    assert (done.syncs["c1"].outcome, done.syncs["c1"].cause) == ("succeeded", None)
