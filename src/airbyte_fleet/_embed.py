"""The Python API: ``await run_syncs(selection, options)`` and its blocking twin.

Settings are resolved exactly as ``airbyte-fleet run`` resolves them, so a step moved from a Bolt
command into Python (or back) behaves the same: what the caller passes, then ``AIRBYTE_FLEET_*``,
then the config file (``config=``, else ``AIRBYTE_FLEET_CONFIG``, else
``config/airbyte-fleet.toml`` if it exists), then the defaults; the Airbyte connection from
``settings=`` or the ``AIRBYTE_*`` variables over the file's ``[airbyte]``.

Both run the run on a thread of its own with its own event loop (:class:`RunThread`); the caller
only waits for it, blocked or awaiting. So :func:`run_syncs_blocking` works the same from a plain
script, an Airflow task or a thread that already runs an event loop (a Jupyter cell; it blocks that
loop while it waits, so async code should ``await run_syncs``), and whatever the caller's thread
receives while waiting (task cancellation, ``KeyboardInterrupt``, ``SystemExit``, an orchestrator's
own exception from a signal handler) reaches only the waiting code, never a task of the run: the
run is stopped by its policy, then the exception goes on. Settings are resolved on the caller's
thread, so a :class:`ConfigError` is raised before any thread starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from airbyte_fleet._caller import calling_as
from airbyte_fleet.config import AirbyteSettings, load_settings
from airbyte_fleet.engine.events import EventSink
from airbyte_fleet.engine.options import (
    Group,
    GroupArgs,
    RunOptions,
    RunOptionsArgs,
    Selection,
    SelectionArgs,
)
from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.resolve import (
    argument,
    file_groups,
    file_selection,
    merge_run_options,
    run_overrides_from_env,
)
from airbyte_fleet.runner import RunSession, open_client
from airbyte_fleet.runner.background import RunThread
from airbyte_fleet.runner.cancellation import run_cancellable
from airbyte_fleet.settings_file import load_file_config
from airbyte_fleet.sinks.log import LogSink

__all__ = ["run_syncs", "run_syncs_blocking"]


async def run_syncs(
    selection: Selection | SelectionArgs | None = None,
    options: RunOptions | RunOptionsArgs | None = None,
    *,
    settings: AirbyteSettings | None = None,
    config: str | Path | None = None,
    groups: Mapping[str, Selection | GroupArgs] | None = None,
    sinks: Sequence[EventSink] = (),
    run_id: str | None = None,
) -> RunResult:
    """Trigger the selected connections' syncs, follow each job to its end, return one result.

    *selection*: which connections (a :class:`Selection` or a dict of its fields); none given
    means the config file's ``[selection]``. *options*: how to run (a :class:`RunOptions` or a
    dict of its fields); each field left out comes from ``AIRBYTE_FLEET_<FIELD>``, then the config
    file's ``[run]``, then its default. *settings*: where Airbyte is and the credentials; default
    the ``AIRBYTE_*`` variables over the config file's ``[airbyte]``. *config*: the TOML config
    file (default ``AIRBYTE_FLEET_CONFIG``, else ``config/airbyte-fleet.toml`` if it exists).
    *groups*: more named groups for ``selection["groups"]``, over the file's ``[groups.NAME]``.
    *sinks*: callables that receive every event of the run, in order.

    Failed syncs do not raise: they are in the result. Cancelling the awaiting task (or a
    ``KeyboardInterrupt``/``SystemExit`` reaching it) stops the run by ``options.on_interrupt``
    (default: cancel its jobs in flight within ``options.grace``), then re-raises.

    Raises :class:`~airbyte_fleet.errors.ConfigError` (bad configuration, selection or option;
    nothing triggered), :class:`~airbyte_fleet.api.AuthError` and
    :class:`~airbyte_fleet.api.TransportError` (Airbyte refuses the credentials or cannot be
    reached; nothing triggered).
    """
    with calling_as("python"):
        resolved = _resolve(selection, options, settings, config, groups)
        return await RunThread(_run(*resolved, sinks, run_id), grace=resolved[1].grace).wait_async()


async def _run(
    selection: Selection,
    options: RunOptions,
    settings: AirbyteSettings,
    groups: dict[str, Selection],
    sinks: Sequence[EventSink],
    run_id: str | None,
) -> RunResult:
    """The run itself, on its own thread and loop (RunThread)."""
    client = await open_client(settings)
    async with client:
        # The run's events as log records (through `logging`, like every library line).
        # Streamed: the first syncs are triggered while the connection list is still read.
        session = await RunSession.planned(
            client,
            selection,
            options,
            groups=groups,
            run_id=run_id,
            sinks=(LogSink(), *sinks),
            streamed=True,
        )
        return await run_cancellable(session)


def run_syncs_blocking(
    selection: Selection | SelectionArgs | None = None,
    options: RunOptions | RunOptionsArgs | None = None,
    *,
    settings: AirbyteSettings | None = None,
    config: str | Path | None = None,
    groups: Mapping[str, Selection | GroupArgs] | None = None,
    sinks: Sequence[EventSink] = (),
    run_id: str | None = None,
) -> RunResult:
    """:func:`run_syncs` for code that does not await: an Airflow task, a Dagster op, a script.

    Works from any thread, including one that already runs an event loop (which it blocks until
    the run ends). ``KeyboardInterrupt``, ``SystemExit`` or any other exception raised in the
    calling thread while it waits stops the run by ``options.on_interrupt``, then is re-raised;
    a second one stops waiting for cancels. The run's sinks are called on the run's own thread.
    """
    with calling_as("python"):
        resolved = _resolve(selection, options, settings, config, groups)
        return RunThread(_run(*resolved, sinks, run_id), grace=resolved[1].grace).wait()


def _resolve(
    selection: Selection | SelectionArgs | None,
    options: RunOptions | RunOptionsArgs | None,
    settings: AirbyteSettings | None,
    config: str | Path | None,
    groups: Mapping[str, Selection | GroupArgs] | None,
) -> tuple[Selection, RunOptions, AirbyteSettings, dict[str, Selection]]:
    """The CLI's layers, with Python's arguments on top; each problem one ConfigError."""
    # The arguments first: a mistake in the call is named as such before any file is read.
    given = argument(Selection, selection, "selection")
    named = {
        # A plain Selection is a group that comes after nothing.
        name: body if isinstance(body, Selection) else argument(Group, body, f"groups[{name!r}]")
        for name, body in (groups or {}).items()
    }
    wanted = argument(RunOptions, options, "options")
    file = load_file_config(config)
    airbyte = settings if settings is not None else load_settings(file.airbyte)
    airbyte.validate_offline()
    # Only what the caller set overrides the lower layers, so a RunOptions() built with one
    # field does not hide the environment's or the file's other values behind defaults.
    overrides = {
        **run_overrides_from_env(os.environ),
        **wanted.model_dump(include=wanted.model_fields_set),
    }
    return (
        file_selection(file) if given.empty else given,
        merge_run_options(file.run, overrides, file_path=file.path),
        airbyte,
        {**file_groups(file), **named},
    )
