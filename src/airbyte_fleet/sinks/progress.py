"""A live view of a running fleet on stderr: one row per sync, counts by state, and the clock.

An event only updates a few fields under a lock (O(1) each). Rich's refresh thread draws the view
at most ``refresh_per_second`` times, and a frame holds at most ``max_rows`` syncs, so drawing costs
the same with 500 syncs as with 30. Every value taken from Airbyte or the user is shown through
:class:`rich.text.Text`, never as markup: a name such as ``[red]x`` or an id such as
``[e3b1ce92-…]`` appears exactly as typed.
"""

from __future__ import annotations

import io
import itertools
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO, cast

from rich.ansi import AnsiDecoder
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncEvent,
    SyncRetrying,
    SyncsPlanned,
    SyncTriggered,
)
from airbyte_fleet.engine.outcome import final_outcome
from airbyte_fleet.sinks.table import format_duration

__all__ = ["ProgressSink", "progress_wanted"]

QUEUED = "queued"
# Below this width the id column goes: a 36-character id would squeeze the name to nothing.
_ID_COLUMN_MIN_WIDTH = 110
# Lines of a frame that are not sync rows: counts, column headers, "more not shown", and a spare.
_CHROME_LINES = 4
_MIN_ROWS = 5
# Shown first, in this order; any other Airbyte status follows alphabetically.
_STATE_ORDER = (
    QUEUED,
    "triggered",
    "adopted",
    "pending",
    "running",
    "incomplete",
    "retrying",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "skipped",
    "error",
)
_STATE_STYLE = {
    "running": "cyan",
    "incomplete": "yellow",
    "retrying": "yellow",
    "succeeded": "green",
    "failed": "bold red",
    "timed_out": "bold red",
    "error": "bold red",
    "cancelled": "yellow",
    "skipped": "dim",
    QUEUED: "dim",
}


def progress_wanted(no_progress: bool, stream: TextIO) -> bool:
    """Draw a live display only for a person at a terminal: redirected output must stay clean."""
    if no_progress:
        return False
    try:
        return stream.isatty()
    except (ValueError, OSError):
        # A closed or detached stream is no terminal.
        return False


class _LiveStream(io.TextIOBase):
    """Lines written here appear above the live display instead of tearing through it."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._buffer: list[str] = []
        self._decoder = AnsiDecoder()
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self._console.is_terminal

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer.append(text)
            joined = "".join(self._buffer)
            done, newline, rest = joined.rpartition("\n")
            if not newline:
                return len(text)
            self._buffer[:] = [rest] if rest else []
        for line in done.split("\n"):
            # Decoded as ANSI (the console log format's colours), never as markup; soft_wrap so a
            # long JSON line stays one line for anyone copying it out of the terminal.
            self._console.print(self._decoder.decode_line(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest = "".join(self._buffer)
            self._buffer.clear()
        if rest:
            self._console.print(self._decoder.decode_line(rest), soft_wrap=True)


class _Frame:
    def __init__(self, sink: ProgressSink) -> None:
        self._sink = sink

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self._sink._frame(options.max_width, options.size.height)


@dataclass(slots=True)
class _Row:
    index: int
    connection_id: str
    name: str
    state: str = QUEUED
    job_id: int | None = None
    attempt: int = 0
    rows: int | None = None
    started_s: float | None = None
    finished_s: float | None = None
    final: bool = False


def _state_of(event: SyncEvent) -> tuple[str, bool]:
    """The state to show after *event*, and whether it is the sync's last word."""
    outcome = final_outcome(event)
    if outcome is not None:
        return outcome, True
    if isinstance(event, SyncRetrying):
        return "retrying", False
    if event.status:
        return event.status.lower(), False
    if isinstance(event, SyncAdopted):
        return "adopted", False
    return "triggered", False


class ProgressSink:
    """Subscribe to the bus and :meth:`start` it (or use ``with``) to show a live display.

    With up to *max_rows* syncs every sync has a row, in plan order. Beyond that the view keeps to
    the counts plus the most recently active syncs, then the most recently finished, so it stays
    readable (and cheap) with hundreds of syncs; the full per-sync table is the final summary's job.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        max_rows: int = 30,
        refresh_per_second: float = 4.0,
        transient: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # stdout carries the result document; the display must never mix into it.
        self.console = console if console is not None else Console(file=sys.stderr, stderr=True)
        self.max_rows = max_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, _Row] = {}
        self._counts: Counter[str] = Counter()
        self._finished = 0
        # Recency lists kept up to date per event so a large view never has to scan every sync.
        self._active: OrderedDict[str, _Row] = OrderedDict()
        self._done: deque[_Row] = deque(maxlen=max_rows)
        self._run_id = ""
        self._job_type = "sync"
        self._origin: float | None = None
        self._final_elapsed: float | None = None
        self._outcome: str | None = None
        # A TextIOBase is a text stream at runtime; typing.TextIO is merely a separate nominal type.
        self._log_stream = cast(TextIO, _LiveStream(self.console))
        self._live = Live(
            console=self.console,
            auto_refresh=True,
            refresh_per_second=refresh_per_second,
            transient=transient,
            # Leave stdout alone: anything printed there is result, not decoration.
            redirect_stdout=False,
            redirect_stderr=True,
            get_renderable=self.render,
        )

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def log_stream(self) -> TextIO:
        """A stream for log lines while the display is live (``configure_logging(stream=...)``).

        Logging straight to stderr would write through the middle of the live display; lines written
        here are printed above it, whole.
        """
        return self._log_stream

    def start(self) -> None:
        self._live.start(refresh=True)

    def stop(self) -> None:
        # Live.stop draws one last frame, so the final counts remain on screen unless transient.
        self._live.stop()

    def __enter__(self) -> ProgressSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ProgressSink(max_rows={self.max_rows})"

    # -- events ------------------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, RunStarted):
                self._on_start(event)
            elif isinstance(event, SyncsPlanned):
                self._on_planned(event.planned)
            elif isinstance(event, RunFinished):
                self._final_elapsed = event.elapsed_s
                self._outcome = event.outcome
            elif isinstance(event, SyncEvent):
                self._on_sync(event)

    def _on_start(self, event: RunStarted) -> None:
        self._run_id = event.run_id
        self._job_type = event.job_type
        self._origin = self._clock() - event.elapsed_s
        self._final_elapsed = None
        self._outcome = None
        self._rows.clear()
        self._active.clear()
        self._done.clear()
        self._counts.clear()
        self._finished = 0
        self._on_planned(event.planned)

    def _on_planned(self, items: Sequence[PlannedSync]) -> None:
        # A plan read while the run goes on adds its later parts here: the total grows.
        for planned in items:
            if planned.connection_id not in self._rows:
                self._rows[planned.connection_id] = _Row(
                    index=len(self._rows),
                    connection_id=planned.connection_id,
                    name=planned.connection_name,
                )
                self._counts[QUEUED] += 1

    def _on_sync(self, event: SyncEvent) -> None:
        if self._origin is None:
            # Joined mid-run: count from the first event we see.
            self._origin = self._clock() - event.elapsed_s
        row = self._rows.get(event.connection_id)
        if row is None:
            row = _Row(index=len(self._rows), connection_id=event.connection_id, name="")
            self._rows[event.connection_id] = row
            self._counts[QUEUED] += 1
        row.name = event.connection_name or row.name
        if event.job_id is not None:
            row.job_id = event.job_id
        if event.job_id is not None:
            # A sync skipped before any job has no attempt worth showing.
            row.attempt = max(row.attempt, event.attempt)
        if event.rows_synced is not None:
            row.rows = event.rows_synced
        if isinstance(event, SyncTriggered | SyncAdopted) and row.started_s is None:
            row.started_s = event.elapsed_s
        state, final = _state_of(event)
        self._counts[row.state] -= 1
        if self._counts[row.state] <= 0:
            del self._counts[row.state]
        self._counts[state] += 1
        row.state = state
        self._finished += int(final) - int(row.final)
        row.final = final
        if final:
            row.finished_s = event.elapsed_s
            self._active.pop(row.connection_id, None)
            self._done.append(row)
        else:
            row.finished_s = None
            self._active[row.connection_id] = row
            self._active.move_to_end(row.connection_id)

    # -- drawing -----------------------------------------------------------------------------------

    def _now(self) -> float:
        if self._final_elapsed is not None:
            return self._final_elapsed
        if self._origin is None:
            return 0.0
        return self._clock() - self._origin

    def _visible(self, height: int) -> tuple[list[_Row], int]:
        total = len(self._rows)
        # Rich crops a live view taller than the terminal from the bottom, footer first; fit instead.
        limit = max(_MIN_ROWS, min(self.max_rows, height - _CHROME_LINES))
        if total <= limit:
            return list(self._rows.values()), total
        picked: dict[str, _Row] = {}
        # The finished list may still hold a row that has since come back to life (or finished
        # twice); such a row is shown once, among the active ones, as it is now.
        newest_first: Iterator[_Row] = itertools.chain(
            reversed(self._active.values()), (r for r in reversed(self._done) if r.final)
        )
        for row in newest_first:
            if len(picked) >= limit:
                break
            picked.setdefault(row.connection_id, row)
        # Plan order keeps a row in the same place from one frame to the next.
        return sorted(picked.values(), key=lambda r: r.index), total

    def _counts_line(self, now: float) -> Text:
        line = Text()
        if self._run_id:
            line.append(f"{self._job_type} run ", style="bold")
            line.append(self._run_id, style="bold")
            line.append("  ")
        line.append(f"{self._finished}/{len(self._rows)} done  ")
        ordered = [s for s in _STATE_ORDER if self._counts.get(s)]
        ordered += sorted(s for s in self._counts if s not in _STATE_ORDER and self._counts[s])
        for i, state in enumerate(ordered):
            if i:
                line.append(" · ", style="dim")
            line.append(f"{state} {self._counts[state]}", style=_STATE_STYLE.get(state, ""))
        line.append(f"   elapsed {format_duration(now)}")
        if self._outcome is not None:
            line.append("   run ")
            line.append(
                self._outcome, style="green" if self._outcome == "succeeded" else "bold red"
            )
        return line

    def render(self) -> RenderableType:
        """The current view, laid out for whichever console draws it (rich's refresh thread or a
        test); it reads the state only when drawn, under the lock."""
        return _Frame(self)

    def _frame(self, width: int, height: int) -> Group:
        with self._lock:
            now = self._now()
            rows, total = self._visible(height)
            with_ids = width >= _ID_COLUMN_MIN_WIDTH
            table = Table(expand=False, box=None, pad_edge=False, show_edge=False)
            # The name column is the one rich may narrow on a small terminal (ids stay whole); the
            # Text itself is single-line, so a narrowed name ends in an ellipsis, not a second line.
            table.add_column("connection", max_width=40 if with_ids else None)
            if with_ids:
                table.add_column("connection id", no_wrap=True)
            table.add_column("state", no_wrap=True)
            table.add_column("job", justify="right", no_wrap=True)
            table.add_column("attempt", justify="right", no_wrap=True)
            table.add_column("elapsed", justify="right", no_wrap=True)
            table.add_column("rows", justify="right", no_wrap=True)
            for row in rows:
                if row.started_s is None:
                    elapsed = None
                else:
                    end = row.finished_s if row.finished_s is not None else now
                    elapsed = end - row.started_s
                cells = [Text(row.name or row.connection_id, no_wrap=True, overflow="ellipsis")]
                if with_ids:
                    cells.append(Text(row.connection_id))
                table.add_row(
                    *cells,
                    Text(row.state, style=_STATE_STYLE.get(row.state, "")),
                    Text("—" if row.job_id is None else str(row.job_id)),
                    Text(str(row.attempt) if row.attempt else "—"),
                    Text(format_duration(elapsed)),
                    Text("—" if row.rows is None else f"{row.rows:,}"),
                )
            parts: list[RenderableType] = [self._counts_line(now), table]
            hidden = total - len(rows)
            if hidden > 0:
                parts.append(
                    Text(
                        f"… {hidden} more not shown (most recently active first); "
                        "the full table follows at the end",
                        style="dim",
                    )
                )
            return Group(*parts)
