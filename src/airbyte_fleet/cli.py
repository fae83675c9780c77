"""The ``airbyte-fleet`` command.

Exit codes: 0 success; 1 some sync (or the command's work) failed; 2 usage or configuration error,
nothing sent; 3 Airbyte unreachable or authentication failed, nothing triggered; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import anyio
import structlog
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from airbyte_fleet import __version__
from airbyte_fleet._embed import open_client
from airbyte_fleet._logging import configure_logging
from airbyte_fleet._redact import redact
from airbyte_fleet.api import (
    AuthError,
    Connection,
    TransportError,
)
from airbyte_fleet.config import load_settings
from airbyte_fleet.engine.events import EventBus
from airbyte_fleet.engine.journal import Journal, RunRecord, reconstruct_event, resume_plan
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, build_plan
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.run import Engine, ResumePoint
from airbyte_fleet.errors import ConfigError, FleetError
from airbyte_fleet.settings_file import (
    FileConfig,
    load_file_config,
    merge_run_options,
    run_overrides_from_env,
)
from airbyte_fleet.sinks import (
    LogSink,
    ProgressSink,
    progress_wanted,
    render_result_table,
    result_json,
)

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

DEFAULT_STATE_DIR = ".airbyte-fleet"

log = structlog.get_logger("airbyte_fleet.cli")


def one_line(text: str) -> str:
    """*text* with line breaks and other control characters spelled out: one line, always."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One sentence and the way out, instead of argparse's usage dump.
        self.exit(
            EXIT_USAGE, f"{self.prog}: {one_line(redact(message))}; see '{self.prog} --help'.\n"
        )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more seconds, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default="json",
        help="log lines on stderr: JSON (default) or console",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="airbyte-fleet",
        description="Trigger many Airbyte syncs at once, follow each to its end, report once.",
    )
    parser.add_argument("--version", action="version", version=f"airbyte-fleet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    conns = commands.add_parser("connections", help="list connections (all pages)")
    conns.add_argument(
        "--workspace", action="append", default=[], metavar="ID", help="only these workspaces"
    )
    conns.add_argument("--tag", action="append", default=[], metavar="NAME", help="only with tag")
    conns.add_argument("--output", choices=("table", "json"), default="table")
    _add_common(conns)

    run = commands.add_parser(
        "run",
        help="trigger syncs, follow each to its end, report once",
        description="Trigger syncs for the selected connections, follow every job to its end and "
        "print one result. Exit 0: all succeeded; 1: some failed, were cancelled, timed out or "
        "errored; 2: usage or configuration error (nothing triggered); 3: Airbyte unreachable or "
        "credentials refused (nothing triggered); 130: interrupted.",
    )
    pick = run.add_argument_group("selection (combinable)")
    pick.add_argument(
        "--connection",
        action="append",
        default=[],
        metavar="ID",
        help="a connection id; repeat or give a comma list",
    )
    pick.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="GLOB",
        help="connection names matching this glob (case-insensitive)",
    )
    pick.add_argument(
        "--tag", action="append", default=[], metavar="NAME", help="connections with this tag"
    )
    pick.add_argument(
        "--workspace",
        action="append",
        default=[],
        metavar="ID",
        help="connections in this workspace",
    )
    pick.add_argument("--all", action="store_true", default=None, help="every connection")
    pick.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME",
        help="a named group from the config file",
    )
    how = run.add_argument_group("how to run (flags > AIRBYTE_FLEET_* env > config file)")
    how.add_argument(
        "--config", metavar="PATH", help="TOML file (default config/airbyte-fleet.toml)"
    )
    how.add_argument("--job-type", choices=("sync", "reset", "clear", "refresh"))
    how.add_argument("--max-concurrency", type=int, metavar="N", help="syncs in flight (25)")
    how.add_argument("--poll-interval", metavar="DURATION", help="between status polls (10s)")
    how.add_argument(
        "--poll-mode",
        choices=("auto", "batched", "per-job"),
        help="batched: one list call per workspace per tick (auto: batched above 5 syncs)",
    )
    how.add_argument("--timeout", metavar="DURATION", help="per sync, e.g. 45m (24h)")
    how.add_argument("--deadline", metavar="DURATION", help="for the whole run")
    how.add_argument(
        "--retries", type=int, metavar="N", help="re-trigger a failed sync N times (0)"
    )
    how.add_argument("--retry-backoff", metavar="DURATION", help="first wait before a retry (30s)")
    how.add_argument(
        "--no-wait",
        dest="wait",
        action="store_false",
        default=None,
        help="trigger only; outcome 'triggered'",
    )
    how.add_argument(
        "--if-running",
        choices=("adopt", "skip", "fail"),
        help="when a sync is already running (adopt)",
    )
    how.add_argument(
        "--include-inactive",
        action="store_true",
        default=None,
        help="try inactive connections too instead of skipping them",
    )
    how.add_argument(
        "--no-cancel-on-timeout",
        dest="cancel_on_timeout",
        action="store_false",
        default=None,
        help="leave a timed-out job running",
    )
    how.add_argument(
        "--on-interrupt",
        choices=("cancel", "detach"),
        default="cancel",
        help="on SIGINT/SIGTERM: cancel in-flight jobs (default) or leave them",
    )
    how.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="time allowed for cancels after an interrupt (30)",
    )
    how.add_argument("--dry-run", action="store_true", help="print the plan and exit 0")
    how.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="carry on an interrupted run ('last' for the newest) without triggering twice",
    )
    how.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"where the run journal lives (AIRBYTE_FLEET_STATE_DIR, default {DEFAULT_STATE_DIR})",
    )
    out = run.add_argument_group("output")
    out.add_argument(
        "--output",
        choices=("table", "json"),
        default="table",
        help="stdout: a table (default) or only the JSON result",
    )
    out.add_argument("--result-file", metavar="PATH", help="also write the JSON result here")
    out.add_argument("--no-progress", action="store_true", help="no live display on a terminal")
    _add_common(run)

    srv = commands.add_parser(
        "serve",
        help="the long-running worker: HTTP API, schedules, metrics",
        description="Run the worker: runs submitted over HTTP (POST /runs) and the config file's "
        "schedules, with /healthz, /readyz, /metrics and /openapi.json. Every route but /healthz "
        "and /metrics needs 'Authorization: Bearer $AIRBYTE_FLEET_API_TOKEN'; a non-loopback "
        "--host needs that token set. SIGTERM stops it by --on-shutdown.",
    )
    srv.add_argument("--host", default=None, help="AIRBYTE_FLEET_HOST, default 127.0.0.1")
    srv.add_argument("--port", type=int, default=None, help="AIRBYTE_FLEET_PORT, default 8080")
    srv.add_argument("--config", default=None, metavar="PATH", help="TOML config file")
    srv.add_argument("--state-dir", default=None, metavar="DIR", help="journal and run ledger")
    srv.add_argument(
        "--max-runs",
        type=_positive,
        default=None,
        metavar="N",
        help="runs at once; more wait queued (AIRBYTE_FLEET_MAX_RUNS, 4)",
    )
    srv.add_argument(
        "--on-shutdown",
        choices=("cancel", "detach"),
        default=None,
        help="detach (default): leave jobs running, resume at next start",
    )
    srv.add_argument(
        "--grace",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="time allowed for cancels on shutdown (30)",
    )
    _add_common(srv)

    sched = commands.add_parser("schedules", help="the config file's schedules and next fire times")
    sched.add_argument(
        "--config", metavar="PATH", help="TOML file (default config/airbyte-fleet.toml)"
    )
    sched.add_argument("--count", type=_positive, default=3, metavar="N", help="fire times each")
    sched.add_argument("--output", choices=("table", "json"), default="table")
    _add_common(sched)

    runs = commands.add_parser("runs", help="past runs from the journal")
    runs.add_argument("--state-dir", metavar="DIR", help="where the run journal lives")
    runs.add_argument("--limit", type=_positive, default=20, metavar="N")
    runs.add_argument("--output", choices=("table", "json"), default="table")
    _add_common(runs)
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="show", parser_class=_Parser)
    show = runs_sub.add_parser("show", help="one run's result")
    show.add_argument("run_id", metavar="RUN_ID", help="a run id, or 'last'")
    show.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS)
    show.add_argument("--output", choices=("table", "json"), default=argparse.SUPPRESS)

    commands.add_parser(
        "simulate",
        help="run a local, spec-faithful Airbyte (see 'airbyte-fleet simulate --help')",
        add_help=False,
    )
    return parser


def stdout_console() -> Console:
    # Piped output has no width to fit; keep rows whole instead of folding them at 80 columns.
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 240)


def fail(code: int, message: str) -> int:
    print(f"airbyte-fleet: {one_line(redact(message))}", file=sys.stderr, flush=True)
    return code


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, TransportError | AuthError):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def _run(coro_fn: Callable[[], Awaitable[int]]) -> int:
    try:
        return asyncio.run(_guard(coro_fn))
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "interrupted.")


async def _guard(coro_fn: Callable[[], Awaitable[int]]) -> int:
    try:
        return await coro_fn()
    except FleetError as exc:
        return fail(exit_code_for(exc), exc.message)


def _connection_view(c: Connection) -> dict[str, Any]:
    return {
        "connection_id": c.connection_id,
        "name": c.name,
        "workspace_id": c.workspace_id,
        "status": c.status,
        "tags": list(c.tag_names),
        "schedule_type": c.schedule_type,
    }


async def cmd_connections(args: argparse.Namespace) -> int:
    workspaces = _checked_selection(workspaces=args.workspace).workspaces
    settings = load_settings()
    client = await open_client(settings)
    async with client:
        connections = await client.list_connections(workspace_ids=workspaces or None)
    if args.tag:
        wanted = set(args.tag)
        connections = [c for c in connections if wanted & set(c.tag_names)]
    connections.sort(key=lambda c: (c.name, c.connection_id))
    if args.output == "json":
        sys.stdout.write(json.dumps([_connection_view(c) for c in connections], indent=2) + "\n")
        return EXIT_OK
    table = Table(title=f"{len(connections)} connections")
    for column in ("connection id", "name", "workspace", "status", "tags"):
        # Ids are what users copy into --connection: never truncate them.
        table.add_column(column, no_wrap=column in ("connection id", "workspace"))
    for c in connections:
        # Text() so that names like "[red]" are shown as written, never parsed as markup.
        table.add_row(
            Text(c.connection_id),
            Text(c.name),
            Text(c.workspace_id),
            Text(c.status),
            Text(", ".join(c.tag_names)),
        )
    stdout_console().print(table)
    return EXIT_OK


_RUN_FLAGS = (
    "job_type",
    "max_concurrency",
    "poll_interval",
    "poll_mode",
    "timeout",
    "deadline",
    "retries",
    "retry_backoff",
    "wait",
    "if_running",
    "include_inactive",
    "cancel_on_timeout",
)


_FLAG_OF = {"connections": "--connection", "workspaces": "--workspace", "names": "--name"}


def _checked_selection(**fields: Any) -> Selection:
    try:
        return Selection(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = _FLAG_OF.get(str(error["loc"][0]) if error["loc"] else "", "the selection")
        reason = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{flag}: {reason}; connection and workspace ids are UUIDs.") from None


def _selection(args: argparse.Namespace, file: FileConfig) -> Selection:
    given = _checked_selection(
        connections=args.connection,
        names=args.name,
        tags=args.tag,
        workspaces=args.workspace,
        all=bool(args.all),
        groups=args.group,
    )
    # The file's default selection applies only when the command line selects nothing.
    return file.selection if given.empty else given


def _plan_rows(plan: Plan) -> list[dict[str, Any]]:
    return plan.describe()


def _print_plan(plan: Plan, fmt: str) -> None:
    rows = _plan_rows(plan)
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title=f"plan: {len(plan.runnable)} to run, {len(plan.skipped)} skipped")
    for column in ("connection id", "name", "workspace", "status", "action"):
        table.add_column(column, no_wrap=column in ("connection id", "workspace"))
    for item in plan.items:
        c = item.connection
        table.add_row(
            Text(c.connection_id),
            Text(c.name),
            Text(c.workspace_id),
            Text(c.status),
            Text(f"skip: {item.skip_reason}" if item.skip_reason else "run"),
        )
    stdout_console().print(table)


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or os.environ.get("AIRBYTE_FLEET_STATE_DIR") or DEFAULT_STATE_DIR)


def _open_journal(args: argparse.Namespace) -> Journal:
    path = _state_dir(args)
    try:
        return Journal(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"Cannot use the state directory '{path}' ({exc}); pass --state-dir with a writable "
            "folder."
        ) from None


def _resume_target(journal: Journal, wanted: str) -> RunRecord:
    run_id = journal.last_run_id() if wanted == "last" else wanted
    record = journal.run(run_id) if run_id else None
    if record is None:
        raise ConfigError(
            f"There is no run '{wanted}' in the journal; 'airbyte-fleet runs' lists the runs."
        )
    # An interrupted run can be carried on (detached jobs followed, untriggered syncs run); a run
    # that ended by itself cannot.
    if record.finished_at is not None and record.outcome != "interrupted":
        raise ConfigError(
            f"Run {record.run_id} already finished ({record.outcome}); nothing to resume, see "
            f"'airbyte-fleet runs show {record.run_id}'."
        )
    return record


def _prepare_result_file(path: str | None) -> None:
    """Find a result file that cannot be written before anything is triggered, not after."""
    if path is None:
        return
    if not path.strip():
        raise ConfigError("--result-file needs a path; leave the flag out to write no file.")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(f"'{path}' is a directory")
        with target.open("a"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--result-file '{path}' cannot be written ({exc.strerror or exc}); choose another "
            "path."
        ) from None


async def cmd_run(args: argparse.Namespace) -> int:
    _prepare_result_file(args.result_file)
    file = load_file_config(args.config)
    overrides = run_overrides_from_env(os.environ)
    overrides.update({k: getattr(args, k) for k in _RUN_FLAGS if getattr(args, k) is not None})
    settings = load_settings(file.airbyte)
    settings.validate_offline()
    with contextlib.ExitStack() as stack:
        journal: Journal | None = None
        record: RunRecord | None = None
        if args.resume:
            if not _selection(args, FileConfig()).empty:
                raise ConfigError(
                    "--resume carries on the run's own selection; leave out --connection, "
                    "--name, --tag, --workspace, --group and --all."
                )
            journal = stack.enter_context(_open_journal(args))
            record = _resume_target(journal, args.resume)
            options = merge_run_options(record.options, overrides)
            selection = None
        else:
            options = merge_run_options(file.run, overrides, file_path=file.path)
            selection = _selection(args, file)
            if selection.empty:
                # Say so before touching the network: nothing could run anyway.
                raise ConfigError(
                    "Nothing selected; pass --connection ID, --name GLOB, --tag NAME, "
                    "--workspace ID, --group NAME or --all."
                )
        client = await open_client(settings)
        async with client:
            if record is not None:
                plan, points = resume_plan(record)
                log.info("resuming", run_id=record.run_id, state_dir=str(_state_dir(args)))
            else:
                assert selection is not None
                points = {}
                plan = await build_plan(
                    client, selection, groups=file.groups, include_inactive=options.include_inactive
                )
                for warning in plan.warnings:
                    log.warning("selection_warning", message=warning)
                if args.dry_run:
                    _print_plan(plan, args.output)
                    return EXIT_OK
            if journal is None:
                journal = stack.enter_context(_open_journal(args))
            result = await _execute(
                client,
                plan,
                options,
                args,
                journal=journal,
                selection=selection,
                resume_from=record,
                points=points,
            )
    return await _report(result, args)


async def _report(result: RunResult, args: argparse.Namespace) -> int:
    # Every error text in the result already passed the secret filter (ResultBuilder).
    text = result_json(result)
    if args.result_file:
        try:
            await anyio.Path(args.result_file).write_text(text)
        except OSError as exc:
            # The syncs ran; losing the file must not lose the result, which still goes to stdout.
            log.error("result_file_failed", path=args.result_file, error=str(exc))
    if args.output == "json":
        sys.stdout.write(text)
    else:
        render_result_table(result, stdout_console())
    sys.stdout.flush()
    if result.outcome == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_FAILED


async def _execute(
    client: Any,
    plan: Plan,
    options: RunOptions,
    args: argparse.Namespace,
    *,
    journal: Journal,
    selection: Selection | None,
    resume_from: RunRecord | None,
    points: dict[str, ResumePoint],
) -> RunResult:
    builder = ResultBuilder()
    if resume_from is not None:
        # The result covers the whole run: what the earlier process saw, then what we see.
        for _, data in journal.events(resume_from.run_id):
            builder(reconstruct_event(data))
    # The journal is critical: a trigger it cannot record is a trigger not sent.
    bus = EventBus([builder, LogSink()], critical=[journal])
    progress: ProgressSink | None = None
    if progress_wanted(args.no_progress, sys.stderr):
        progress = ProgressSink()
        bus.subscribe(progress)
    run_id = resume_from.run_id if resume_from is not None else None
    engine = Engine(client, options, bus, grace=args.grace, run_id=run_id)
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        name = signal.Signals(signum).name
        if signals_seen == 1:
            log.warning("interrupted", signal=name, action=args.on_interrupt, grace_s=args.grace)
            engine.stop(args.on_interrupt)
        else:
            log.warning("interrupted_again", signal=name, action="abort")
            engine.abort()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        if progress is not None:
            progress.start()
            # Log lines go above the live display instead of tearing through it.
            configure_logging(args.log_format, args.log_level, stream=progress.log_stream)
        await engine.run(plan, selection=selection, resume=points)
    finally:
        if progress is not None:
            progress.stop()
            configure_logging(args.log_format, args.log_level)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return builder.result


async def cmd_serve(args: argparse.Namespace) -> int:
    from airbyte_fleet.service import ServeOptions, serve

    options = ServeOptions.resolve(
        host=args.host,
        port=args.port,
        config=args.config,
        state_dir=args.state_dir,
        max_runs=args.max_runs,
        on_shutdown=args.on_shutdown,
        grace=args.grace,
    )
    return await serve(options)


async def cmd_schedules(args: argparse.Namespace) -> int:
    from airbyte_fleet.service.schedules import describe_next, parse_schedules

    file = load_file_config(args.config)
    schedules = parse_schedules(file.schedules, source=str(file.path), groups=file.groups)
    rows = describe_next(schedules, datetime.now(UTC), count=args.count)
    if args.output == "json":
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
        return EXIT_OK
    table = Table(title=f"{len(rows)} schedules in {file.path or 'no config file'}")
    for column in ("name", "cron", "timezone", "next (local)", "next (UTC)", "selection"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            Text(str(row["name"])),
            Text(str(row["cron"])),
            Text(str(row["timezone"])),
            Text("\n".join(row["next_local"]) or "disabled"),
            Text("\n".join(row["next_utc"]) or "—"),
            Text(str(row["selection"])),
        )
    stdout_console().print(table)
    return EXIT_OK


async def cmd_runs(args: argparse.Namespace) -> int:
    journal = _open_journal(args)
    with journal:
        if args.runs_command == "show":
            record = journal.run(
                journal.last_run_id() or "" if args.run_id == "last" else args.run_id
            )
            result = journal.rebuild_result(record.run_id) if record is not None else None
            if result is None:
                raise ConfigError(
                    f"There is no run '{args.run_id}' in the journal; 'airbyte-fleet runs' lists "
                    "the runs."
                )
            if args.output == "json":
                sys.stdout.write(result_json(result))
            else:
                render_result_table(result, stdout_console())
            return EXIT_OK
        runs = journal.runs(limit=args.limit)
    if args.output == "json":
        sys.stdout.write(json.dumps([r.as_dict() for r in runs], indent=2) + "\n")
        return EXIT_OK
    table = Table(title=f"{len(runs)} most recent runs")
    for column in ("run id", "started", "finished", "outcome", "syncs", "counts"):
        table.add_column(column, no_wrap=column == "run id")
    for r in runs:
        table.add_row(
            Text(r.run_id),
            Text(r.started_at.isoformat(timespec="seconds") if r.started_at else "—"),
            Text(r.finished_at.isoformat(timespec="seconds") if r.finished_at else "—"),
            Text(r.outcome),
            Text(str(r.total)),
            Text(", ".join(f"{n} {k}" for k, n in r.counts.items() if n)),
        )
    stdout_console().print(table)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "simulate":
        from airbyte_fleet.simulator import main as simulate_main

        return simulate_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    configure_logging(args.log_format, args.log_level)
    if args.command == "connections":
        return _run(lambda: cmd_connections(args))
    if args.command == "run":
        return _run(lambda: cmd_run(args))
    if args.command == "runs":
        return _run(lambda: cmd_runs(args))
    if args.command == "schedules":
        return _run(lambda: cmd_schedules(args))
    if args.command == "serve":
        return _run(lambda: cmd_serve(args))
    parser.error(f"unknown command '{args.command}'")


if __name__ == "__main__":
    sys.exit(main())
