"""What the commands print on stdout: a table for people, or JSON and nothing else for machines.

The run's live display is a sink (``sinks/progress.py``) and the result table is shared with
other front ends (``sinks/table.py``); the listings here are the CLI's own.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from airbyte_fleet._files import write_atomically
from airbyte_fleet._logging import LogFormat, configure_logging
from airbyte_fleet.api import Connection
from airbyte_fleet.engine.plan import Plan
from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.journal import RunRecord
from airbyte_fleet.report import Timeline, render_report
from airbyte_fleet.sinks import ProgressSink, render_result_table
from airbyte_fleet.sinks.table import ResultSource, write_result_json

__all__ = [
    "Output",
    "live_progress",
    "print_connections",
    "print_plan",
    "print_result",
    "print_runs",
    "print_schedules",
    "stdout_console",
    "write_report_file",
    "write_result_file",
]

Output = Literal["table", "json"]

# Ids are what users copy into --connection and --resume: never fold them.
_KEEP_WHOLE = frozenset({"connection id", "workspace", "run id"})


def stdout_console() -> Console:
    # Piped output has no width to fit; keep rows whole instead of folding them at 80 columns.
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 240)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column in _KEEP_WHOLE)
    for row in rows:
        # Text() so that names like "[red]" are shown as written, never parsed as markup.
        table.add_row(*(Text(cell) for cell in row))
    stdout_console().print(table)


def print_connections(connections: Sequence[Connection], output: Output) -> None:
    if output == "json":
        _print_json(
            [
                {
                    "connection_id": c.connection_id,
                    "name": c.name,
                    "workspace_id": c.workspace_id,
                    "status": c.status,
                    "tags": list(c.tag_names),
                    "schedule_type": c.schedule_type,
                }
                for c in connections
            ]
        )
        return
    _print_table(
        f"{len(connections)} connections",
        ("connection id", "name", "workspace", "status", "tags"),
        (
            (c.connection_id, c.name, c.workspace_id, c.status, ", ".join(c.tag_names))
            for c in connections
        ),
    )


def print_plan(plan: Plan, output: Output) -> None:
    """The plan's syncs in run order; for a staged run, its groups in stage order first (in JSON
    an object with ``stages`` and ``syncs``; a flat run's stays the list of syncs)."""
    if output == "json":
        if plan.stages:
            _print_json({"stages": plan.describe_stages(), "syncs": plan.describe()})
        else:
            _print_json(plan.describe())
        return
    if plan.stages:
        _print_table(
            f"stages: {len(plan.stages)} groups, each starting once the groups it waits for end",
            ("#", "group", "waits for", "if upstream fails", "connections"),
            (
                (
                    str(i),
                    row["group"],
                    ", ".join(row["after"]) or "nothing (starts at once)",
                    row["on_upstream_failure"],
                    "\n".join(
                        [f"{c['name'] or c['connection_id']}" for c in row["connections"]]
                        + [
                            f"(waits for {c['name'] or c['connection_id']})"
                            for c in row["waits_for"]
                        ]
                    )
                    or "—",
                )
                for i, row in enumerate(plan.describe_stages(), 1)
            ),
        )
    _print_table(
        f"plan: {len(plan.runnable)} to run, {len(plan.skipped)} skipped",
        ("connection id", "name", "workspace", "status", "action"),
        (
            (
                item.connection_id,
                item.connection_name,
                item.workspace_id,
                item.status,
                f"skip: {item.skip_reason}" if item.skip_reason else "run",
            )
            for item in plan.items
        ),
    )


def print_schedules(rows: Sequence[Mapping[str, Any]], source: str, output: Output) -> None:
    if output == "json":
        _print_json(list(rows))
        return
    _print_table(
        f"{len(rows)} schedules in {source}",
        ("name", "cron", "timezone", "next (local)", "next (UTC)", "selection"),
        (
            (
                str(row["name"]),
                str(row["cron"]),
                str(row["timezone"]),
                "\n".join(row["next_local"]) or "disabled",
                "\n".join(row["next_utc"]) or "—",
                str(row["selection"]),
            )
            for row in rows
        ),
    )


def print_runs(runs: Sequence[RunRecord], output: Output) -> None:
    if output == "json":
        _print_json([r.as_dict() for r in runs])
        return
    _print_table(
        f"{len(runs)} most recent runs",
        ("run id", "started", "finished", "outcome", "syncs", "counts"),
        (
            (
                r.run_id,
                r.started_at.isoformat(timespec="seconds") if r.started_at else "—",
                r.finished_at.isoformat(timespec="seconds") if r.finished_at else "—",
                r.outcome,
                str(r.total),
                ", ".join(f"{n} {k}" for k, n in r.counts.items() if n),
            )
            for r in runs
        ),
    )


def print_result(result: ResultSource, output: Output) -> None:
    """The result document, written one sync at a time, or its table."""
    if output == "json":
        write_result_json(result, sys.stdout.write)
    else:
        render_result_table(
            result if isinstance(result, RunResult) else result.result, stdout_console()
        )
    sys.stdout.flush()


def write_result_file(result: ResultSource, path: str) -> None:
    """The result document in the file at *path* (``--result-file``), one sync at a time.
    Raises :class:`OSError`."""
    # UTF-8 whatever the locale: the document is JSON (RFC 8259), and names may be in any script.
    with open(path, "w", encoding="utf-8") as file:
        write_result_json(result, file.write)


def write_report_file(result: RunResult, timeline: Timeline, path: str) -> None:
    """The run's HTML report in the file at *path* (``--report-html``, ``runs show --html``),
    whole or not at all. Raises :class:`OSError`."""
    page = render_report(result, timeline, written_at=datetime.now(UTC))
    write_atomically(Path(path), page)


@contextlib.contextmanager
def live_progress(
    progress: ProgressSink | None, log_format: LogFormat, log_level: str
) -> Iterator[None]:
    """Draw *progress* (when there is one) on stderr for the duration of the block."""
    if progress is None:
        yield
        return
    progress.start()
    # Log lines go above the live display instead of tearing through it.
    configure_logging(log_format, log_level, stream=progress.log_stream)
    try:
        yield
    finally:
        progress.stop()
        configure_logging(log_format, log_level)
