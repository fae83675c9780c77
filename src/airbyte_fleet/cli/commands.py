"""The commands, each a thin caller: read the flags, hand the work to its home
(:mod:`airbyte_fleet.runner` for a run, the store for past runs and ``migrate``, the worker for
``serve``), print. Which store, and a run's lease on its run, are :mod:`airbyte_fleet.cli.store`.

Everything a user can get wrong is checked before the network is touched, and a run checks
everything it can before it triggers anything (exit 2 or 3, nothing sent).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from airbyte_fleet._logging import get_logger
from airbyte_fleet.cli.exit import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_JOURNAL, EXIT_OK, fail
from airbyte_fleet.cli.parser import run_option_flags
from airbyte_fleet.cli.render import (
    live_progress,
    print_connections,
    print_plan,
    print_result,
    print_runs,
    print_schedules,
    write_report_file,
    write_result_file,
)
from airbyte_fleet.cli.store import RunHold, StorePlace, holding
from airbyte_fleet.config import AirbyteSettings, load_settings
from airbyte_fleet.engine.events import EventSink
from airbyte_fleet.engine.options import Selection
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.run import new_run_id
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.journal import (
    JournalDamagedError,
    NoJournalError,
    RunRecord,
    RunStore,
    store_location,
)
from airbyte_fleet.journal import migrate as migrate_store
from airbyte_fleet.report import TimelineBuilder
from airbyte_fleet.resolve import (
    file_groups,
    file_selection,
    merge_run_options,
    require_file_for_groups,
    run_overrides_from_env,
    selection_from_flags,
)
from airbyte_fleet.runner import RunSession, on_signals, open_client
from airbyte_fleet.runner.replay import replay_into, replay_result
from airbyte_fleet.settings_file import FileConfig, load_file_config
from airbyte_fleet.sinks import LogSink, ProgressSink, progress_wanted

__all__ = ["COMMANDS"]

log = get_logger("airbyte_fleet.cli")


# ----------------------------------------------------------------------------- connections


async def connections(args: argparse.Namespace) -> int:
    workspaces = selection_from_flags(workspaces=args.workspace).workspaces
    async with await open_client(load_settings(load_file_config(args.config).airbyte)) as client:
        found = await client.list_connections(workspace_ids=workspaces or None)
    if args.tag:
        wanted = set(args.tag)
        found = [c for c in found if wanted & set(c.tag_names)]
    found.sort(key=lambda c: (c.name, c.connection_id))
    print_connections(found, args.output)
    return EXIT_OK


# ----------------------------------------------------------------------------- run


async def run(args: argparse.Namespace) -> int:
    _prepare_output_file("--result-file", args.result_file)
    _prepare_output_file("--report-html", args.report_html)
    file = load_file_config(args.config)
    overrides = {**run_overrides_from_env(os.environ), **run_option_flags(args)}
    settings = load_settings(file.airbyte)
    settings.validate_offline()
    progress = ProgressSink() if progress_wanted(args.no_progress, sys.stderr) else None
    sinks: list[EventSink] = [LogSink(), *([progress] if progress is not None else [])]
    # Fed live, not read back from the store: the report is written even when the store failed.
    bars = TimelineBuilder() if args.report_html else None
    if bars is not None:
        sinks.append(bars)
    # Signal handling lasts until the result is printed: a supervisor's second SIGINT arriving
    # after the run ended must not cut the result short with Python's KeyboardInterrupt.
    signals = contextlib.ExitStack()
    with signals:
        return await _run(args, file, settings, overrides, sinks, progress, signals, bars)


async def _run(
    args: argparse.Namespace,
    file: FileConfig,
    settings: AirbyteSettings,
    overrides: dict[str, Any],
    sinks: list[EventSink],
    progress: ProgressSink | None,
    signals: contextlib.ExitStack,
    bars: TimelineBuilder | None,
) -> int:
    place = StorePlace(args, file)
    hold: RunHold | None = None  # none for a dry run, which stores nothing
    async with contextlib.AsyncExitStack() as stack:
        if args.resume:
            if not _selection(args, FileConfig()).empty:
                raise ConfigError(
                    "--resume carries on the run's own selection; leave out --connection, "
                    "--name, --tag, --workspace, --group and --all."
                )
            journal = stack.enter_context(place.open(create=False, wanted=args.resume))
            with place.reading():
                run_id = _resume_target(journal, args.resume).run_id
            # A process that still holds the run (or held it until it died) has it first.
            hold = await stack.enter_async_context(holding(place, journal, run_id, wait=True))
            with place.reading():
                record = _resume_target(journal, run_id)
            options = merge_run_options(record.options, overrides)
            client = await stack.enter_async_context(await open_client(settings))
            log.info("resuming", run_id=record.run_id, state_dir=str(place.state_dir))
            with place.reading():
                session = RunSession.resumed(
                    client,
                    journal,
                    record,
                    options,
                    groups=file_groups(file),
                    sinks=sinks,
                )
            if bars is not None:
                # The report shows the run from its first start: the earlier process's part too.
                replay_into(bars, journal, record.run_id)
        else:
            options = merge_run_options(file.run, overrides, file_path=file.path)
            selection = _selection(args, file)
            require_file_for_groups(selection, file)
            if selection.empty:
                # Say so before touching the network: nothing could run anyway.
                raise ConfigError(
                    "Nothing selected; pass --connection ID, --name GLOB, --tag NAME, "
                    "--workspace ID, --group NAME or --all."
                )
            run_id = new_run_id()
            store = None if args.dry_run else stack.enter_context(place.open())
            if store is not None:
                hold = await stack.enter_async_context(holding(place, store, run_id, wait=False))
            client = await stack.enter_async_context(await open_client(settings))
            session = await RunSession.planned(
                client,
                selection,
                options,
                groups=file_groups(file),
                store=store,
                run_id=run_id,
                sinks=sinks,
                # The first syncs are triggered while the connection list is still read; a dry
                # run prints the whole plan, in build_plan's order.
                streamed=not args.dry_run,
            )
            if args.dry_run:
                print_plan(session.plan, args.output)
                return EXIT_OK
        if hold is not None:
            hold.attach(session)
            if hold.lost:
                # Lost while planning (the store out of reach for a whole lease time).
                return fail(
                    EXIT_JOURNAL,
                    f"Run {session.run_id} lost its lease before it began (the store could not "
                    "be reached in time, or another process took the run); nothing was "
                    "triggered here, try again once the store answers.",
                )
        signals.enter_context(_on_signals(session, args))
        result = await _follow(session, args, progress)
    if hold is not None and (hold.lost or session.taken_over):
        # The run is another process's now: its result is that process's to report.
        return fail(EXIT_JOURNAL, hold.lost_sentence)
    code = await _report(result, args, bars)
    if session.store_error is not None:
        # The result (every sync, the error) is printed: the exit code and one line say why.
        return fail(EXIT_JOURNAL, session.store_error.message)
    return code


def _on_signals(
    session: RunSession, args: argparse.Namespace
) -> contextlib.AbstractContextManager[None]:
    def first(signal: str) -> None:
        options = session.options
        log.warning(
            "interrupted", signal=signal, action=options.on_interrupt, grace_s=options.grace
        )
        session.interrupt()

    def again(signal: str) -> None:
        log.warning("interrupted_again", signal=signal, action="abort")
        session.abort()

    return on_signals(first, again)


async def _follow(
    session: RunSession, args: argparse.Namespace, progress: ProgressSink | None
) -> ResultBuilder:
    with live_progress(progress, args.log_format, args.log_level):
        await session.execute()
    # Written out from the builder's records: no model of each sync is made (at 100,000 syncs,
    # 100 MB).
    return session.builder


async def _report(
    result: ResultBuilder, args: argparse.Namespace, bars: TimelineBuilder | None
) -> int:
    """Write the result (a :class:`ResultBuilder` writes it from its records, without making
    the model of each sync) to ``--result-file`` and stdout, and the report to
    ``--report-html``; its exit code."""
    # Every error text in the result already passed the secret filter (ResultBuilder).
    if args.result_file:
        try:
            # Off the event loop, as the run's signal handlers still need it.
            await anyio.to_thread.run_sync(write_result_file, result, args.result_file)
        except OSError as exc:
            # The syncs ran; losing the file must not lose the result, which still goes to stdout.
            log.error("result_file_failed", path=args.result_file, error=str(exc))
    if bars is not None:
        try:
            await anyio.to_thread.run_sync(
                write_report_file, result.result, bars.timeline(), args.report_html
            )
        except OSError as exc:
            log.error("report_html_failed", path=args.report_html, error=str(exc))
    print_result(result, args.output)
    if result.outcome == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_OK if result.outcome == "succeeded" else EXIT_FAILED


def _prepare_output_file(flag: str, path: str | None) -> None:
    """Find an output file (*flag*'s) that cannot be written before anything is triggered, or
    read, not after."""
    if path is None:
        return
    if not path.strip():
        raise ConfigError(f"{flag} needs a path; leave the flag out to write no file.")
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise IsADirectoryError(f"'{path}' is a directory")
        with target.open("a"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{flag} '{path}' cannot be written ({exc.strerror or exc}); choose another path."
        ) from None


def _selection(args: argparse.Namespace, file: FileConfig) -> Selection:
    given = selection_from_flags(
        connections=args.connection,
        names=args.name,
        tags=args.tag,
        workspaces=args.workspace,
        all=bool(args.all),
        groups=args.group,
        with_upstream=bool(args.with_upstream),
    )
    # The file's default selection applies only when the command line selects nothing.
    return file_selection(file) if given.empty else given


# ----------------------------------------------------------------------------- the journal


def _run_id(journal: RunStore, wanted: str) -> str | None:
    return journal.last_run_id() if wanted == "last" else wanted


def _no_such_run(wanted: str) -> ConfigError:
    return ConfigError(
        f"There is no run '{wanted}' in the journal; 'airbyte-fleet runs' lists the runs."
    )


def _resume_target(journal: RunStore, wanted: str) -> RunRecord:
    run_id = _run_id(journal, wanted)
    record = journal.run(run_id) if run_id else None
    if record is None:
        raise _no_such_run(wanted)
    # An interrupted run can be carried on (detached jobs followed, untriggered syncs run), and so
    # can one whose plan could not be read to its end (the rest is planned and run); a run that
    # ended by itself cannot.
    if (
        record.finished_at is not None
        and record.outcome != "interrupted"
        and record.planning_complete
    ):
        raise ConfigError(
            f"Run {record.run_id} already finished ({record.outcome}); nothing to resume, see "
            f"'airbyte-fleet runs show {record.run_id}'."
        )
    return record


async def runs(args: argparse.Namespace) -> int:
    # Reading never creates state: no journal means no runs yet.
    showing = args.runs_command == "show"
    report = args.html if showing else None
    place = StorePlace(args, load_file_config(args.config))
    try:
        journal = place.open(create=False, wanted=args.run_id if showing else None)
    except NoJournalError:
        if args.output == "json":
            print_runs([], args.output)
        else:
            print(f"no runs yet in {place.shown}")
        return EXIT_OK
    with journal, place.reading():
        if showing:
            run_id = _run_id(journal, args.run_id)
            bars = TimelineBuilder() if report is not None else None
            result = replay_result(journal, run_id, also=bars) if run_id else None
            if result is None:
                raise _no_such_run(args.run_id)
            if report is not None and bars is not None:
                # Checked once the run is found: a mistyped run id leaves no empty file behind.
                _prepare_output_file("--html", report)
                await _write_report(result, bars, report)
            print_result(result, args.output)
            return EXIT_OK
        records = journal.runs(limit=args.limit)
    print_runs(records, args.output)
    return EXIT_OK


async def _write_report(result: RunResult, bars: TimelineBuilder, path: str) -> None:
    try:
        await anyio.to_thread.run_sync(write_report_file, result, bars.timeline(), path)
    except OSError as exc:
        raise ConfigError(
            f"--html '{path}' cannot be written ({exc.strerror or exc}); choose another path."
        ) from None


async def migrate(args: argparse.Namespace) -> int:
    place = StorePlace(args, load_file_config(args.config))
    try:
        before, after = await anyio.to_thread.run_sync(
            lambda: migrate_store(database_url=place.url, state_dir=place.state_dir)
        )
    except JournalDamagedError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise place.cannot_use(exc) from None
    if args.output == "json":
        shown = store_location(place.url, place.state_dir)
        print(json.dumps({"store": shown, "version": after, "was": before}))
    else:
        print(f"schema at version {after} (was {before})")
    return EXIT_OK


# ----------------------------------------------------------------------------- the rest


async def schedules(args: argparse.Namespace) -> int:
    from airbyte_fleet.service.schedules import describe_next, parse_schedules

    file = load_file_config(args.config)
    found = parse_schedules(file.schedules, source=str(file.path), groups=file.groups)
    rows = describe_next(found, datetime.now(UTC), count=args.count)
    print_schedules(rows, str(file.path or "no config file"), args.output)
    return EXIT_OK


async def serve(args: argparse.Namespace) -> int:
    # Imported here: the worker's HTTP stack is not needed by any other command.
    from airbyte_fleet.service import ServeOptions
    from airbyte_fleet.service import serve as run_worker
    from airbyte_fleet.service.options import check_bind

    given: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "config": args.config,
        "state_dir": args.state_dir,
        "max_runs": args.max_runs,
        "on_shutdown": args.on_shutdown,
        "grace": args.grace,
        "database_url": args.database_url,
        "lease": args.lease,
    }
    # An open or weak API is refused before anything else is read: its one sentence is all
    # stderr shows. The bind and the token never come from the file.
    check_bind(ServeOptions.resolve(file=FileConfig(), **given))
    file = load_file_config(args.config)
    return await run_worker(ServeOptions.resolve(file=file, **given), file=file)


COMMANDS: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
    "connections": connections,
    "run": run,
    "runs": runs,
    "migrate": migrate,
    "schedules": schedules,
    "serve": serve,
}
