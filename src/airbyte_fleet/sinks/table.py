"""The end-of-run summary: a table for people (``--output table``), JSON for programs."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from airbyte_fleet._redact import redact
from airbyte_fleet._units import format_size
from airbyte_fleet.engine.outcome import OUTCOMES
from airbyte_fleet.engine.result import GroupResult, ResultBuilder, RunResult, SyncResult

__all__ = ["ResultSource", "render_result_table", "result_json", "write_result_json"]

# A run's result as a model, or as the builder that holds it (which writes its JSON without
# making the model of each sync).
ResultSource = RunResult | ResultBuilder

_OUTCOME_STYLE = {
    "succeeded": "green",
    "triggered": "green",
    "failed": "bold red",
    "timed_out": "bold red",
    "error": "bold red",
    "cancelled": "yellow",
    "skipped": "dim",
    "interrupted": "yellow",
}
_RUN_STYLE = {"succeeded": "bold green", "running": "yellow"}


def result_json(result: RunResult) -> str:
    """The ``--output json`` document, the only thing a run writes to stdout, as one text (for a
    small result; a run's own output goes through :func:`write_result_json`)."""
    return result.model_dump_json(indent=2) + "\n"


def write_result_json(result: ResultSource, write: Callable[[str], object]) -> None:
    """:func:`result_json`'s document, byte for byte, handed to *write* one sync at a time: the
    whole document is never one text (8 million characters at 10,000 syncs)."""
    for piece in result.iter_json():
        write(piece)


def format_duration(seconds: float | None) -> str:
    """``12.3s``, ``4m05s``, ``1h02m03s``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    seconds = max(seconds, 0.0)
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def _optional_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _counts(result: RunResult) -> dict[str, int]:
    if result.counts:
        return result.counts
    # A result printed before run_finished has no counts yet; derive them rather than print none.
    counts: dict[str, int] = {}
    for sync in result.syncs:
        key = sync.outcome or "running"
        counts[key] = counts.get(key, 0) + 1
    return counts


def _totals_line(result: RunResult) -> Text:
    counts = _counts(result)
    order: list[str] = [o for o in OUTCOMES if counts.get(o)]
    order += sorted(k for k in counts if k not in OUTCOMES and counts[k])
    line = Text()
    line.append(f"{len(result.syncs)} syncs", style="bold")
    line.append(": ")
    for i, outcome in enumerate(order):
        if i:
            line.append(", ")
        line.append(f"{counts[outcome]} {outcome}", style=_OUTCOME_STYLE.get(outcome, ""))
    if not order:
        line.append("none")
    line.append(f" · {result.totals.rows_synced:,} rows")
    line.append(f" · {format_size(result.totals.bytes_synced)}")
    line.append(f" · wall {format_duration(result.duration_s)}")
    line.append(" · run ")
    line.append(result.outcome, style=_RUN_STYLE.get(result.outcome, "bold red"))
    return line


# (header, keeps its width, right-aligned) per column, in row order.
_COLUMNS: tuple[tuple[str, bool, bool], ...] = (
    ("connection", False, False),
    ("connection id", True, False),
    ("outcome", True, False),
    ("status", True, False),
    ("job", True, True),
    ("attempts", True, True),
    ("duration", True, True),
    ("rows", True, True),
    ("error", False, False),
)
# Below this a wrapping column is mostly fold marks; switch to one block per sync instead.
_WRAP_MIN = 12


def _cells(sync: SyncResult) -> tuple[Text, ...]:
    outcome = sync.outcome or "running"
    return (
        Text(sync.connection_name),
        Text(sync.connection_id),
        Text(outcome, style=_OUTCOME_STYLE.get(outcome, "")),
        Text(sync.status or "—"),
        Text("—" if sync.job_id is None else str(sync.job_id)),
        Text(str(sync.attempts)),
        Text(format_duration(sync.duration_s)),
        Text(_optional_int(sync.rows_synced)),
        # Errors can quote request bodies and URLs; mask any secret before it reaches a terminal.
        Text(redact(sync.error) if sync.error else ""),
    )


def _width_needed(rows: list[tuple[Text, ...]]) -> int:
    """The narrowest console on which the table keeps every fixed-width cell whole."""
    total = len(_COLUMNS) + 1  # borders
    for i, (header, fixed, _) in enumerate(_COLUMNS):
        widest = max([len(header), *(row[i].cell_len for row in rows)]) if fixed else _WRAP_MIN
        total += widest + 2  # padding
    return total


def _table(title: Text, rows: list[tuple[Text, ...]]) -> Table:
    table = Table(title=title, title_justify="left")
    for header, fixed, right in _COLUMNS:
        table.add_column(
            header,
            justify="right" if right else "left",
            no_wrap=fixed,
            # fold, not word-wrap: a name or error is shown in full, however it breaks.
            overflow="ellipsis" if fixed else "fold",
        )
    for row in rows:
        table.add_row(*row)
    return table


def _blocks(title: Text, rows: list[tuple[Text, ...]]) -> Group:
    """One block per sync for narrow consoles, where nine columns cannot fit beside a whole id."""
    parts: list[RenderableType] = [title]
    for name, cid, outcome, status, job, attempts, duration, nrows, error in rows:
        head = Text.assemble(cid, "  ", name)
        facts = [outcome, Text.assemble("status ", status), Text.assemble("job ", job)]
        facts += [Text.assemble("attempts ", attempts), duration]
        if nrows.plain != "—":
            facts.append(Text.assemble(nrows, " rows"))
        parts += [head, Text("  ").append_text(Text(" · ", style="dim").join(facts))]
        if error.plain:
            parts.append(Text.assemble("  error: ", error))
    return Group(*parts)


def render_result_table(result: RunResult, console: Console) -> None:
    """Print one row per sync, in the order the run was planned, then a totals line.

    Every value from Airbyte or the user goes in as :class:`Text`, so nothing is read as markup, and
    ids are never wrapped or shortened: they are what users copy into the next command. A console
    too narrow for that gets one block per sync instead of a table.
    """
    title = Text(f"{result.job_type} run ", style="bold")
    title.append(result.run_id, style="bold")
    rows = [_cells(sync) for sync in result.syncs]
    if console.width >= _width_needed(rows):
        console.print(_table(title, rows))
    else:
        console.print(_blocks(title, rows))
    if result.groups:
        console.print(_groups_table(result.groups))
    console.print(_totals_line(result))


def _groups_table(groups: list[GroupResult]) -> Table:
    """A staged run's groups in stage order: how each ended, what it waited for, its syncs."""
    table = Table(title=Text("groups", style="bold"), title_justify="left")
    for header in ("group", "outcome", "after", "syncs", "duration"):
        table.add_column(header, overflow="fold")
    for group in groups:
        outcome = group.outcome or "running"
        counts = ", ".join(f"{n} {o}" for o, n in group.counts.items() if n) or "—"
        duration = (
            (group.finished_at - group.started_at).total_seconds()
            if group.started_at is not None and group.finished_at is not None
            else None
        )
        table.add_row(
            Text(group.group),
            Text(outcome, style=_OUTCOME_STYLE.get(outcome, "")),
            Text(", ".join(group.after) or "—"),
            Text(counts + (f" ({group.skip_reason})" if group.skip_reason else "")),
            Text(format_duration(duration)),
        )
    return table
