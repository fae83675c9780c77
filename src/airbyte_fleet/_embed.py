"""The Python API for embedding: ``await run_syncs(settings, selection)`` and a blocking twin."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import anyio
import structlog

from airbyte_fleet.api import AirbyteClient
from airbyte_fleet.config import AirbyteSettings, load_settings
from airbyte_fleet.engine.events import EventSink
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import build_plan
from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.engine.run import execute

__all__ = ["open_client", "run_syncs", "run_syncs_blocking"]

log = structlog.get_logger("airbyte_fleet")


async def open_client(settings: AirbyteSettings) -> AirbyteClient:
    """Resolve the URL, build the auth flow and prove both work before anything else happens."""
    settings.validate_offline()
    client = await AirbyteClient.open(
        settings.url_plan(), settings.make_auth, **settings.client_options()
    )
    log.info("airbyte_url", base_url=client.api.base, understood=client.api.explanation)
    try:
        await client.check()
    except BaseException:
        await client.close()
        raise
    return client


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
    chosen = selection if isinstance(selection, Selection) else Selection(**(selection or {}))
    opts = options if isinstance(options, RunOptions) else RunOptions(**(options or {}))
    client = await open_client(settings)
    async with client:
        plan = await build_plan(
            client, chosen, groups=groups or {}, include_inactive=opts.include_inactive
        )
        return await execute(client, plan, opts, sinks=sinks, run_id=run_id)


def run_syncs_blocking(
    settings: AirbyteSettings | None = None,
    selection: Selection | Mapping[str, Any] | None = None,
    options: RunOptions | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> RunResult:
    """:func:`run_syncs` for callers without an event loop (an Airflow task, a script)."""
    return anyio.run(functools.partial(run_syncs, settings, selection, options, **kwargs))
