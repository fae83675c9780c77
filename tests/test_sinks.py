"""Sinks: log lines, the live view and the final summary, fed a hand-written run of three syncs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import select
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import pytest
import structlog
from rich.console import Console
from structlog.testing import capture_logs

from airbyte_fleet._logging import configure_logging
from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncEvent,
    SyncFailed,
    SyncSkipped,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTriggered,
)
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.sinks import (
    LogSink,
    ProgressSink,
    progress_wanted,
    render_result_table,
    result_json,
)
from airbyte_fleet.sinks.log import TRIGGERS_AT_INFO

RUN = "run-7f3a"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
# Ids that start with a-f are the ones a markup engine eats (competitor bug): use two of them.
ID_A = "e3b1ce92-5a4f-4d1e-9c3b-0f8e2a7d6c51"
ID_B = "0368aa1f-7c2d-4b9e-8f10-6d5c4b3a2918"
ID_C = "fa00b7c4-1e2d-4f3a-9b8c-7d6e5f4a3b2c"
NAME_A = "[red]not-markup"
NAME_B = f"[{ID_A[:8]}-…] orders"
NAME_C = "legacy_crm"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _at(seconds: float) -> dict[str, Any]:
    return {"run_id": RUN, "at": T0 + timedelta(seconds=seconds), "elapsed_s": seconds}


def _a(**kw: Any) -> dict[str, Any]:
    return {"connection_id": ID_A, "connection_name": NAME_A, **kw}


def _b(**kw: Any) -> dict[str, Any]:
    return {"connection_id": ID_B, "connection_name": NAME_B, **kw}


def run_events() -> list[Event]:
    return [
        RunStarted(
            **_at(0.0),
            total=3,
            job_type="sync",
            max_concurrency=2,
            planned=(
                PlannedSync(ID_A, NAME_A, "ws-1"),
                PlannedSync(ID_B, NAME_B, "ws-1"),
                PlannedSync(ID_C, NAME_C, "ws-2"),
            ),
        ),
        SyncTriggered(**_at(0.4), **_a(job_id=101, status="pending")),
        SyncTriggered(**_at(0.5), **_b(job_id=102, status="pending")),
        SyncStatusChanged(**_at(5.4), **_a(job_id=101, status="running", old_status="pending")),
        SyncStatusChanged(**_at(5.5), **_b(job_id=102, status="running", old_status="pending")),
        SyncStatusChanged(**_at(20.5), **_b(job_id=102, status="incomplete", old_status="running")),
        SyncStatusChanged(**_at(25.5), **_b(job_id=102, status="running", old_status="incomplete")),
        SyncSucceeded(
            **_at(30.4),
            **_a(job_id=101, status="succeeded", rows_synced=1234, bytes_synced=56789),
        ),
        SyncFailed(
            **_at(41.0),
            **_b(job_id=102, status="failed", error="source crashed: [Errno 104] reset by peer"),
        ),
        SyncSkipped(
            **_at(41.1),
            connection_id=ID_C,
            connection_name=NAME_C,
            reason="a sync is already running",
        ),
        RunFinished(
            **_at(41.2),
            outcome="failed",
            counts={"succeeded": 1, "failed": 1, "skipped": 1},
        ),
    ]


@pytest.fixture
def events() -> list[Event]:
    return run_events()


@pytest.fixture
def result(events: list[Event]) -> RunResult:
    builder = ResultBuilder()
    for event in events:
        builder(event)
    return builder.result


@pytest.fixture
def _restore_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def plain(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return ANSI.sub("", file.getvalue())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the fixture itself ---------------------------------------------------------------------------


def test_builder_reads_the_run_as_intended(result: RunResult) -> None:
    assert [s.connection_id for s in result.syncs] == [ID_A, ID_B, ID_C]
    assert [s.outcome for s in result.syncs] == ["succeeded", "failed", "skipped"]
    assert result.outcome == "failed"
    assert result.totals.rows_synced == 1234


# -- LogSink --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("_restore_structlog")
def test_log_sink_writes_one_json_line_per_event(events: list[Event]) -> None:
    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    sink = LogSink()
    for event in events:
        sink(event)

    lines = stream.getvalue().splitlines()
    assert len(lines) == len(events)
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == [e.kind for e in events]
    assert [r["event"] for r in records][:3] == ["run_started", "sync_triggered", "sync_triggered"]
    for record, event in zip(records, events, strict=True):
        assert record["run_id"] == RUN
        assert record["elapsed_s"] == event.elapsed_s
        # One time key: the event's own moment, as the line's timestamp (the journal's too).
        assert "at" not in record
        assert datetime.fromisoformat(record["timestamp"]) == event.at
        assert record["timestamp"].endswith("Z")
        if isinstance(event, SyncEvent):
            assert record["connection_id"] == event.connection_id
            assert record["connection_name"] == event.connection_name
    by_kind = {r["event"]: r for r in records}
    assert by_kind["sync_failed"]["level"] == "error"
    assert by_kind["sync_failed"]["error"] == "source crashed: [Errno 104] reset by peer"
    assert by_kind["sync_succeeded"]["rows_synced"] == 1234
    assert by_kind["run_finished"]["level"] == "info"
    assert by_kind["run_finished"]["counts"] == {"succeeded": 1, "failed": 1, "skipped": 1}
    # The incomplete→running step is its own line, with both statuses.
    changes = [
        (r["old_status"], r["status"]) for r in records if r["event"] == "sync_status_changed"
    ]
    assert ("incomplete", "running") in changes
    # planned is for sinks, not for the log line.
    assert "planned" not in by_kind["run_started"]


def test_log_sink_levels_and_literal_values(events: list[Event]) -> None:
    with capture_logs() as logs:
        sink = LogSink()
        for event in events:
            sink(event)
    assert len(logs) == len(events)
    levels = {entry["event"]: entry["log_level"] for entry in logs}
    assert levels["sync_failed"] == "error"
    assert levels["sync_skipped"] == "info"
    assert levels["sync_succeeded"] == "info"
    assert levels["sync_triggered"] == "info"
    # Each step of a job is debug: the sync's end line says how it ended.
    assert levels["sync_status_changed"] == "debug"
    names = [entry.get("connection_name") for entry in logs if "connection_id" in entry]
    assert NAME_A in names
    assert NAME_B in names


@pytest.mark.usefixtures("_restore_structlog")
def test_at_info_a_sync_is_its_trigger_and_its_end(events: list[Event]) -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    sink = LogSink()
    for event in events:
        sink(event)
    kinds = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert kinds == [
        "run_started",
        "sync_triggered",
        "sync_triggered",
        "sync_succeeded",
        "sync_failed",
        "sync_skipped",
        "run_finished",
    ]


def _many_syncs(total: int) -> list[Event]:
    ids = [f"c{i:04d}" for i in range(total)]
    planned = tuple(PlannedSync(cid, f"conn-{i}") for i, cid in enumerate(ids))
    events: list[Event] = [
        RunStarted(**_at(0.0), total=total, job_type="sync", max_concurrency=total, planned=planned)
    ]
    for i, cid in enumerate(ids):
        events.append(SyncTriggered(**_at(1.0), connection_id=cid, job_id=i, status="pending"))
        events.append(SyncStatusChanged(**_at(2.0), connection_id=cid, job_id=i, status="running"))
        events.append(SyncSucceeded(**_at(3.0), connection_id=cid, job_id=i, status="succeeded"))
    events.append(RunFinished(**_at(4.0), outcome="succeeded"))
    return events


@pytest.mark.parametrize(
    ("total", "triggered"),
    [(1, "info"), (TRIGGERS_AT_INFO, "info"), (TRIGGERS_AT_INFO + 1, "debug")],
)
def test_trigger_lines_are_info_only_in_runs_a_person_reads(total: int, triggered: str) -> None:
    with capture_logs() as logs:
        sink = LogSink()
        for event in _many_syncs(total):
            sink(event)
    levels: dict[str, set[str]] = {}
    for entry in logs:
        levels.setdefault(entry["event"], set()).add(entry["log_level"])
    assert levels["sync_triggered"] == {triggered}
    assert levels["sync_status_changed"] == {"debug"}
    # Every sync has one line at info at its end, whatever the size of the run.
    assert levels["sync_succeeded"] == {"info"}
    assert sum(entry["event"] == "sync_succeeded" for entry in logs) == total


class _Logger:
    """A logger that shows *shown* and above, and records what it was handed."""

    def __init__(self, shown: int | None) -> None:
        self.shown = shown
        self.handed: list[tuple[int, str]] = []

    def log(self, level: int, event: str, **fields: Any) -> None:
        self.handed.append((level, event))


class _LevelledLogger(_Logger):
    def is_enabled_for(self, level: int) -> bool:
        assert self.shown is not None
        return level >= self.shown


def test_a_line_below_the_level_shown_is_not_made(events: list[Event]) -> None:
    levelled = _LevelledLogger(logging.INFO)
    LogSink(levelled)(events[3])  # a status change
    assert levelled.handed == []
    for event in events:
        LogSink(levelled)(event)
    assert ("sync_status_changed" in {e for _, e in levelled.handed}) is False
    assert len(levelled.handed) == 7
    # A logger that cannot say what it shows is handed every line, and filters them itself.
    plain = _Logger(None)
    for event in events:
        LogSink(plain)(event)
    assert [e for _, e in plain.handed] == [e.kind for e in events]
    assert (logging.DEBUG, "sync_status_changed") in plain.handed


@pytest.mark.usefixtures("_restore_structlog")
def test_log_sink_console_format_keeps_ids_literal(events: list[Event]) -> None:
    stream = io.StringIO()
    configure_logging("console", stream=stream)
    sink = LogSink()
    for event in events:
        sink(event)
    text = ANSI.sub("", stream.getvalue())
    assert NAME_A in text
    assert NAME_B in text
    assert ID_A in text


@pytest.mark.usefixtures("_restore_structlog")
def test_every_log_line_has_one_utc_timestamp() -> None:
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    before = datetime.now(UTC)
    structlog.get_logger("test").info("airbyte_url", base_url="http://x")
    record = json.loads(stream.getvalue())
    assert set(record) == {"event", "base_url", "level", "timestamp"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", record["timestamp"])
    assert before <= datetime.fromisoformat(record["timestamp"]) <= datetime.now(UTC)


@contextlib.contextmanager
def _terminal() -> Iterator[tuple[TextIO, Callable[[], str]]]:
    """A real terminal to log on (a pseudo-terminal, as a user's shell gives), and a way to read
    back the first line that reached it."""
    leader, follower = os.openpty()
    stream = os.fdopen(follower, "w", buffering=1)

    def first_line() -> str:
        seen = b""
        while b"\n" not in seen:
            ready, _, _ = select.select([leader], [], [], 10)
            assert ready, f"nothing more reached the terminal after {seen!r}"
            seen += os.read(leader, 65536)
        return seen.decode()

    try:
        yield stream, first_line
    finally:
        stream.close()
        os.close(leader)


@pytest.mark.usefixtures("_restore_structlog")
@pytest.mark.parametrize(
    ("environ", "terminal", "colored"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": ""}, True, True),  # set but empty counts as unset (no-color.org)
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False, False),
    ],
)
def test_console_log_colours_follow_no_color_and_force_color(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], terminal: bool, colored: bool
) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with contextlib.ExitStack() as stack:
        if terminal:
            stream, read = stack.enter_context(_terminal())
        else:
            buffer = io.StringIO()
            stream, read = buffer, buffer.getvalue
        configure_logging("console", stream=stream)
        structlog.get_logger("test").warning("interrupted", signal="SIGINT")
        text = read()
    assert "interrupted" in ANSI.sub("", text)
    assert "SIGINT" in ANSI.sub("", text)
    assert bool(ANSI.search(text)) is colored


# -- ProgressSink ---------------------------------------------------------------------------------


def _console(width: int = 120, height: int = 60) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=width, height=height)


def test_progress_shows_literal_names_state_and_counts(events: list[Event]) -> None:
    clock = FakeClock()
    sink = ProgressSink(_console(), clock=clock)
    for event in events[:7]:  # up to B's incomplete→running
        sink(event)
    clock.now += 26.0
    mid = _console()
    mid.print(sink.render())
    text = plain(mid)
    assert NAME_A in text
    assert NAME_B in text
    assert ID_A in text
    assert "running 2" in text
    assert "queued 1" in text
    assert "0/3 done" in text
    assert "elapsed 26.0s" in text
    row_b = next(line for line in text.splitlines() if ID_B in line)
    assert "running" in row_b
    assert "102" in row_b

    for event in events[7:]:
        sink(event)
    end = _console()
    end.print(sink.render())
    text = plain(end)
    assert "3/3 done" in text
    assert "succeeded 1" in text
    assert "failed 1" in text
    assert "skipped 1" in text
    assert "running" not in text
    assert "1,234" in text
    # Frozen at the run's own end, not at the wall clock.
    clock.now += 500.0
    later = _console()
    later.print(sink.render())
    assert "elapsed 41.2s" in plain(later)


def test_progress_live_draws_on_its_console(events: list[Event]) -> None:
    console = _console()
    with ProgressSink(console, clock=FakeClock()) as sink:
        for event in events:
            sink(event)
    text = plain(console)
    assert NAME_A in text
    assert "succeeded 1" in text


def test_progress_default_console_is_stderr(
    events: list[Event], capsys: pytest.CaptureFixture[str]
) -> None:
    sink = ProgressSink(clock=FakeClock())
    sink.start()
    for event in events:
        sink(event)
    sink.stop()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert NAME_A in captured.err


def _large_run(console: Console) -> tuple[ProgressSink, list[str]]:
    ids = [f"c{i:04d}-0000-4000-8000-000000000000" for i in range(500)]
    sink = ProgressSink(console, max_rows=30, clock=FakeClock())
    sink(
        RunStarted(
            **_at(0.0),
            total=500,
            job_type="sync",
            max_concurrency=20,
            planned=tuple(PlannedSync(cid, f"conn-{i}") for i, cid in enumerate(ids)),
        )
    )
    for i, cid in enumerate(ids[:100]):
        sink(SyncTriggered(**_at(1.0), connection_id=cid, job_id=i))
    for i, cid in enumerate(ids[:90]):
        sink(SyncSucceeded(**_at(2.0), connection_id=cid, job_id=i))
    return sink, ids


def test_progress_keeps_large_runs_short() -> None:
    sink, ids = _large_run(_console())
    console = _console()
    console.print(sink.render())
    text = plain(console)
    shown = [cid for cid in ids if cid in text]
    assert len(shown) == 30
    # The 10 still running come first, then the most recently finished.
    assert set(ids[90:100]) <= set(shown)
    assert set(ids[70:90]) <= set(shown)
    assert "queued 400" in text
    assert "triggered 10" in text
    assert "succeeded 90" in text
    assert "90/500 done" in text
    assert "470 more not shown" in text


def test_progress_small_runs_show_every_sync_in_plan_order(events: list[Event]) -> None:
    sink = ProgressSink(_console(), clock=FakeClock())
    for event in events:
        sink(event)
    console = _console()
    console.print(sink.render())
    text = plain(console)
    positions = [text.index(cid) for cid in (ID_A, ID_B, ID_C)]
    assert positions == sorted(positions)
    assert "more not shown" not in text


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        super().isatty()  # raises on a closed stream, as a real file does
        return True


def test_progress_wanted() -> None:
    assert progress_wanted(False, io.StringIO()) is False
    assert progress_wanted(False, _Tty()) is True
    assert progress_wanted(True, _Tty()) is False
    closed = _Tty()
    closed.close()
    assert progress_wanted(False, closed) is False


# -- table and JSON -------------------------------------------------------------------------------


# 130 is the narrowest console this run gets a table on; below it, one block per sync.
@pytest.mark.parametrize("width", [200, 130, 129, 80, 50])
def test_table_shows_every_sync_in_full(result: RunResult, width: int) -> None:
    console = Console(file=io.StringIO(), width=width)
    render_result_table(result, console)
    text = plain(console)
    lines = text.splitlines()
    # Each id whole on one line (never folded or cut), and rows in plan order.
    id_lines = [
        next(i for i, line in enumerate(lines) if cid in line) for cid in (ID_A, ID_B, ID_C)
    ]
    assert id_lines == sorted(id_lines), "rows must keep plan order"
    assert "…" not in lines[id_lines[0]].replace(NAME_B, "")
    sync_a = "\n".join(lines[id_lines[0] : id_lines[1]])
    sync_b = "\n".join(lines[id_lines[1] : id_lines[2]])
    assert "succeeded" in sync_a
    assert "101" in sync_a
    assert "failed" in sync_b
    assert "102" in sync_b
    assert "skipped" in "\n".join(lines[id_lines[2] :])
    totals = " ".join(text[text.index("3 syncs:") :].split())
    assert totals.startswith("3 syncs: 1 succeeded, 1 failed, 1 skipped")
    assert "1,234 rows" in totals
    assert "56.8 KB" in totals
    assert "wall 41.2s" in totals
    assert totals.endswith("run failed")


@pytest.mark.parametrize("width", [200, 80])
def test_table_shows_names_as_typed(result: RunResult, width: int) -> None:
    console = Console(file=io.StringIO(), width=width)
    render_result_table(result, console)
    # Nothing eaten as markup (one block per sync on 80 columns may break a name at its space).
    flat = " ".join(plain(console).split())
    assert NAME_A in flat
    assert NAME_B in flat


def test_narrow_table_falls_back_to_blocks(result: RunResult) -> None:
    wide = Console(file=io.StringIO(), width=200)
    narrow = Console(file=io.StringIO(), width=80)
    render_result_table(result, wide)
    render_result_table(result, narrow)
    assert "┃" in plain(wide)
    assert "┃" not in plain(narrow)
    assert max(len(line) for line in plain(narrow).splitlines()) <= 80
    assert "source crashed: [Errno 104] reset by peer" in plain(narrow)


def test_table_rows_carry_their_own_values(result: RunResult) -> None:
    console = Console(file=io.StringIO(), width=250)
    render_result_table(result, console)
    lines = plain(console).splitlines()
    row_a = next(line for line in lines if ID_A in line)
    row_b = next(line for line in lines if ID_B in line)
    assert "succeeded" in row_a
    assert "1,234" in row_a
    assert "30.0s" in row_a  # triggered at 0.4 s, succeeded at 30.4 s
    assert "failed" in row_b
    assert "source crashed: [Errno 104] reset by peer" in row_b


def test_result_json_round_trips(result: RunResult) -> None:
    text = result_json(result)
    # Indented by two, keys in the model's order, one newline at the end; the values are the
    # hand-written run's, not what the code under test computes.
    assert text.startswith('{\n  "run_id": "run-7f3a",\n  "started_at": "2025-03-01T12:00:00Z",\n')
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    back = RunResult.model_validate_json(text)
    assert back == result
    document = json.loads(text)
    assert [s["connection_id"] for s in document["syncs"]] == [ID_A, ID_B, ID_C]
    assert document["syncs"][0]["connection_name"] == NAME_A
    assert document["outcome"] == "failed"
    assert document["duration_s"] == 41.2
    assert document["totals"] == {"rows_synced": 1234, "bytes_synced": 56789}
    assert {k: v for k, v in document["counts"].items() if v} == {
        "succeeded": 1,
        "failed": 1,
        "skipped": 1,
    }
    a, b, c = document["syncs"]
    assert (a["job_id"], a["outcome"], a["duration_s"]) == (101, "succeeded", 30.0)
    assert (b["job_id"], b["outcome"], b["error"]) == (
        102,
        "failed",
        "source crashed: [Errno 104] reset by peer",
    )
    assert (c["job_id"], c["outcome"], c["started_at"]) == (None, "skipped", None)


@pytest.mark.usefixtures("_restore_structlog")
def test_log_lines_print_above_the_live_display_whole(events: list[Event]) -> None:
    console = _console(width=80)
    progress = ProgressSink(console, clock=FakeClock())
    with progress:
        configure_logging("json", "debug", stream=progress.log_stream)
        log = LogSink()
        for event in events:
            progress(event)
            log(event)
    lines = [ANSI.sub("", line) for line in plain(console).splitlines()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    # Every JSON line survived intact, though most are wider than the 80-column console.
    assert [r["event"] for r in records] == [e.kind for e in events]
    assert max(len(line) for line in lines if line.startswith("{")) > 80


def test_progress_fits_a_short_terminal() -> None:
    sink, ids = _large_run(_console(height=20))
    console = _console(height=20)
    console.print(sink.render())
    text = plain(console)
    shown = [cid for cid in ids if cid in text]
    assert len(shown) == 20 - 4
    # The still-running ones win the scarce rows.
    assert set(ids[90:100]) <= set(shown)
    assert len(text.splitlines()) <= 20
    assert "484 more not shown" in text


def test_progress_narrow_terminal_keeps_names_over_ids(events: list[Event]) -> None:
    sink = ProgressSink(_console(), clock=FakeClock())
    for event in events:
        sink(event)
    console = _console(width=80)
    console.print(sink.render())
    text = plain(console)
    assert NAME_A in text
    assert NAME_B in text
    assert ID_A not in text
    assert max(len(line) for line in text.splitlines()) <= 80
