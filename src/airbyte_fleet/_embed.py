"""The Python API for embedding: ``await run_syncs(settings, selection)`` and a blocking twin."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import anyio

from airbyte_fleet.config import AirbyteSettings, load_settings
from airbyte_fleet.engine.events import EventSink
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.resolve import argument
from airbyte_fleet.runner import RunSession, open_client

__all__ = ["run_syncs", "run_syncs_blocking"]


async def run_syncs(
    settings: AirbyteSettings | None = None,
    selection: Selection | Mapping[str, Any] | None = None,
    options: RunOptions | Mapping[str, Any] | None = None,
    *,
    groups: Mapping[str, Selection] | None = None,
    sinks: tuple[EventSink, ...] = (),
    run_id: str | None = None,
) -> RunResult:
    """Trigger the selected connections' syncs, follow each to its end, return one result.

    Raises :class:`airbyte_fleet.api.ConfigError` (bad configuration or selection, nothing
    triggered) and :class:`~airbyte_fleet.api.AuthError` / :class:`~airbyte_fleet.api.TransportError`
    (Airbyte unreachable or refusing the credentials, nothing triggered); failed syncs do not raise,
    they are in the result.
    """
    settings = settings or load_settings()
    chosen = argument(Selection, selection, "selection")
    opts = argument(RunOptions, options, "options")
    client = await open_client(settings)
    async with client:
        session = await RunSession.planned(
            client, chosen, opts, groups=groups, run_id=run_id, sinks=sinks
        )
        return await session.run()


def run_syncs_blocking(
    settings: AirbyteSettings | None = None,
    selection: Selection | Mapping[str, Any] | None = None,
    options: RunOptions | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> RunResult:
    """:func:`run_syncs` for callers without an event loop (an Airflow task, a script)."""
    return anyio.run(functools.partial(run_syncs, settings, selection, options, **kwargs))
