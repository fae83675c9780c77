"""Airbyte syncs as Prefect flows, run by airbyte-fleet (Prefect 3).

Two flows that do the same thing, one for each way Prefect runs a flow:

* ``airbyte_syncs``, a plain function: it calls :func:`airbyte_fleet.run_syncs_blocking`, which
  returns when every selected sync has ended;
* ``airbyte_syncs_async``, an ``async def``: it awaits :func:`airbyte_fleet.run_syncs` (the
  blocking twin would work there too, but it would hold the flow's event loop while it waits).

Both turn the run's result into Prefect's own terms: a table artifact (one row per sync, the
summary as its description) on the flow run's page, the metadata (counts, rows, bytes, run id) as
the flow's return value, and a failed flow run, with ``result.summary`` as its message, when a sync
did not succeed.

Which connections: the flow's parameters (``tags``, ``connections``, ``names``); none set means
the config file's ``[selection]``. Where Airbyte is: ``AIRBYTE_BASE_URL``, ``AIRBYTE_CLIENT_ID``
and ``AIRBYTE_CLIENT_SECRET`` in the environment (or the config file's ``[airbyte]``), as for the
``airbyte-fleet`` command. The library logs through the standard ``logging`` module under
``airbyte_fleet``: with ``PREFECT_LOGGING_EXTRA_LOGGERS=airbyte_fleet`` Prefect sends its lines to
the flow run's logs (this module sets the logger's level to INFO: each sync's progress, not only
the warnings).

No flow retries: when syncs failed, others were triggered and ran, and a retry would run the
whole selection again. Stopping the flow (a ``timeout_seconds``, a cancellation) interrupts the
call, and the run's default ``on_interrupt="cancel"`` cancels its Airbyte jobs still in flight.

Run it: ``python examples/prefect_flow.py nightly`` (tags as arguments; with no Prefect server
configured, Prefect starts a temporary one).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact, create_table_artifact

from airbyte_fleet import (
    RunOptionsArgs,
    RunResult,
    SelectionArgs,
    run_syncs,
    run_syncs_blocking,
)

# Prefect forwards the extra loggers' records but leaves their level alone (WARNING, from the
# root logger): INFO shows each sync triggered and ended.
logging.getLogger("airbyte_fleet").setLevel(logging.INFO)

ARTIFACT_KEY = "airbyte-syncs"  # one key: the artifact's page lists every run's table


class AirbyteSyncsFailed(Exception):
    """Some selected syncs did not succeed; the message is the run's summary."""


def choose(
    tags: list[str] | None, connections: list[str] | None, names: list[str] | None
) -> SelectionArgs:
    # Empty lists select nothing: with none set, the config file's [selection] decides.
    return SelectionArgs(tags=tags or [], connections=connections or [], names=names or [])


# Set here what this flow needs whatever the environment says; the rest comes from
# AIRBYTE_FLEET_* or the config file's [run], as for the CLI (poll interval, concurrency...).
OPTIONS = RunOptionsArgs(timeout="45m")


def sync_rows(result: RunResult) -> list[dict[str, Any]]:
    """One artifact row per sync."""
    return [
        {
            "connection": sync.connection_name,
            "connection_id": sync.connection_id,
            "job_id": sync.job_id,
            "outcome": sync.outcome,
            "rows_synced": sync.rows_synced,
            "bytes_synced": sync.bytes_synced,
            "duration_s": sync.duration_s,
            "error": sync.error,
        }
        for sync in result.syncs
    ]


def outcome(result: RunResult) -> dict[str, Any]:
    """The flow's return value when every sync succeeded; a failed flow run otherwise."""
    get_run_logger().info(result.summary)
    if not result.ok:
        # Raised, the flow run fails with the summary as its state message.
        raise AirbyteSyncsFailed(result.summary)
    return {
        "run_id": result.run_id,
        "outcome": result.outcome,
        "counts": {name: n for name, n in result.counts.items() if n},
        "rows_synced": result.totals.rows_synced,
        "bytes_synced": result.totals.bytes_synced,
        "duration_s": result.duration_s,
    }


@flow(name="airbyte-syncs", retries=0)
def airbyte_syncs(
    tags: list[str] | None = None,
    connections: list[str] | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Sync the selected Airbyte connections (a plain flow: the blocking call)."""
    result = run_syncs_blocking(choose(tags, connections, names), OPTIONS)
    create_table_artifact(sync_rows(result), key=ARTIFACT_KEY, description=result.summary)
    return outcome(result)


@flow(name="airbyte-syncs-async", retries=0)
async def airbyte_syncs_async(
    tags: list[str] | None = None,
    connections: list[str] | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Sync the selected Airbyte connections (an async flow: awaits the run)."""
    result = await run_syncs(choose(tags, connections, names), OPTIONS)
    await acreate_table_artifact(sync_rows(result), key=ARTIFACT_KEY, description=result.summary)
    return outcome(result)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--async"]:
        print(asyncio.run(airbyte_syncs_async(tags=sys.argv[2:])))
    else:
        print(airbyte_syncs(tags=sys.argv[1:]))
