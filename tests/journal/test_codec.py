"""The event codec: every event kind back exactly as it went in, and what cannot be read."""

from __future__ import annotations

import dataclasses
import gc
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    SyncAdopted,
    SyncFailed,
    SyncSkipped,
    SyncTimedOut,
)
from airbyte_fleet.journal import (
    FILE_NAME,
    EventDecodeError,
    Journal,
    UnknownEventKind,
    decode_event,
    encode_event,
)
from journal.stories import Story, crashed_run, finished_run


def test_every_event_round_trips(tmp_path: Path) -> None:
    s = Story("r", ["c1"])
    planned = (
        PlannedSync("c1", "one", "ws-1", status="inactive", tags=("a", "b"), skip_reason="off"),
        PlannedSync("c2", selected_by="group nightly"),
    )
    extra: list[Event] = [
        s.started(planned=planned, resumed=True, options={"timeout": None, "retries": 2}),
        s.sync(SyncAdopted, "c1", job_id=5, reason="already running"),
        s.sync(SyncTimedOut, "c1", job_id=5, cancelled=True, error="too slow"),
        s.sync(SyncSkipped, "c1", reason="run interrupted before trigger", cause="interrupted"),
        s.sync(SyncFailed, "c1", outcome="error", error="not triggered"),
        s.finished("interrupted", counts={"error": 1}, interrupted=True),
    ]
    for event in [*finished_run(), *crashed_run(), *extra]:
        text = encode_event(event)
        assert decode_event(text) == event
        assert decode_event(text, kind=event.kind) == event
        # Log lines (to_dict) also read back; only fields kept out of logs are lost.
        assert decode_event(event.to_dict()).kind == event.kind
    with pytest.raises(UnknownEventKind, match="sync_teleported") as unknown:
        decode_event({"event": "sync_teleported", "run_id": "r"})
    assert unknown.value.kind == "sync_teleported"
    with pytest.raises(UnknownEventKind):
        decode_event('{"event": "x"}', kind="sync_teleported")
    with pytest.raises(EventDecodeError, match="no 'event'"):
        decode_event({"run_id": "r"})
    with pytest.raises(EventDecodeError, match="not a JSON object"):
        decode_event("[1]")
    for broken in ('{"event": "run_finished", "run_id"', '{"event": "run_finished"}'):
        with pytest.raises(EventDecodeError) as bad:
            decode_event(broken)
        assert not isinstance(bad.value, UnknownEventKind)
        with pytest.raises(EventDecodeError):
            decode_event(broken, kind="run_finished")


def test_datetimes_are_stored_as_utc_text(tmp_path: Path) -> None:
    plus_two = timezone(timedelta(hours=2))
    event = dataclasses.replace(
        Story("r", []).started(), at=datetime(2026, 3, 1, 14, tzinfo=plus_two)
    )
    with Journal(tmp_path) as journal:
        journal(event)
        [(_, read)] = journal.events("r")
        record = journal.run("r")
    db = sqlite3.connect(tmp_path / FILE_NAME)
    [(started,)] = db.execute("SELECT started_at FROM runs").fetchall()
    db.close()
    # Columns hold UTC text, so that ordering by them orders by the instant.
    assert started == "2026-03-01T12:00:00.000000+00:00"
    assert read.at == event.at
    assert record is not None
    assert record.started_at == event.at


def test_decoding_keeps_no_values_alive() -> None:
    # A worker replays every finished run it is asked about: the values of decoded events (run
    # ids, names, error text) must leave nothing behind once the events are dropped, or its
    # memory grows with every run it shows (pydantic-core caches strings met in JSON by default).
    runs = 3000
    texts = [
        (encode_event(event), event.kind)
        for n in range(runs)
        for event in finished_run(run_id=f"run-{n:05d}-{'x' * 20}")
    ]
    for text, kind in texts[:50]:
        decode_event(text, kind=kind)  # each kind's codec built before counting
    gc.collect()
    before = sys.getallocatedblocks()
    for text, kind in texts:
        decode_event(text, kind=kind)
    gc.collect()
    kept = sys.getallocatedblocks() - before
    # Caching every string kept about one block per run; a few dozen blocks of the
    # interpreter's own come and go.
    assert kept < runs // 10, f"{kept} blocks kept after decoding the events of {runs} runs"
