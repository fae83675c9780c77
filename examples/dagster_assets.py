"""Airbyte syncs as Dagster assets, run by airbyte-fleet.

Two assets that do the same thing, one for each way Dagster runs a step:

* ``airbyte_syncs``, a plain function: it calls :func:`airbyte_fleet.run_syncs_blocking`, which
  returns when every selected sync has ended;
* ``airbyte_syncs_async``, an ``async def``: it awaits :func:`airbyte_fleet.run_syncs` (the
  blocking twin would work there too, but it would hold Dagster's event loop while it waits).

Both turn the run's result into Dagster's own terms: a ``MaterializeResult`` whose metadata holds
the counts, rows and bytes, one table row per sync and the run id when every sync succeeded, and a
``dagster.Failure`` with ``result.summary`` as its description and the same metadata when not.

Which connections: the run config (``AirbyteSyncConfig``: tags, connection ids or name globs;
nothing set means the config file's ``[selection]``). Where Airbyte is: ``AIRBYTE_BASE_URL``,
``AIRBYTE_CLIENT_ID`` and ``AIRBYTE_CLIENT_SECRET`` in the environment (or the config file's
``[airbyte]``), as for the ``airbyte-fleet`` command. The library logs through the standard
``logging`` module under ``airbyte_fleet``; to see its lines in Dagster's run logs, name it in the
instance's dagster.yaml: ``python_logs: {managed_python_loggers: [airbyte_fleet],
python_log_level: INFO}``.

Run it::

    dagster asset materialize -f examples/dagster_assets.py --select airbyte_syncs \\
        --config-json '{"ops": {"airbyte_syncs": {"config": {"tags": ["nightly"]}}}}'
"""

# No `from __future__ import annotations` here: Dagster reads the config class from the asset
# function's annotations at definition time, and a string annotation is not resolved.

from typing import Any

import dagster as dg
from pydantic import Field

from airbyte_fleet import RunOptionsArgs, RunResult, SelectionArgs, run_syncs, run_syncs_blocking


class AirbyteSyncConfig(dg.Config):
    """Which connections to sync, and a run option worth setting per run."""

    tags: list[str] = Field(default_factory=list, description="connections with these tags")
    connections: list[str] = Field(default_factory=list, description="connection ids")
    names: list[str] = Field(default_factory=list, description="connection name globs")
    timeout: str | None = Field(
        default=None, description='how long one sync may take, e.g. "45m" (default: as the CLI)'
    )

    def selection(self) -> SelectionArgs:
        # Empty lists select nothing: with none set, the config file's [selection] decides.
        return SelectionArgs(tags=self.tags, connections=self.connections, names=self.names)

    def options(self) -> RunOptionsArgs:
        # What is not set here comes from AIRBYTE_FLEET_* or the config file's [run], as for the
        # CLI (poll interval, concurrency, retries...).
        #
        # A terminated Dagster run interrupts the step: the default on_interrupt="cancel" then
        # cancels the run's Airbyte jobs still in flight (within `grace`) before the step ends, as
        # dagster-airbyte does with cancel_sync_on_run_termination=True. Add
        # "on_interrupt": "detach" to leave them running instead.
        return RunOptionsArgs(timeout=self.timeout) if self.timeout else RunOptionsArgs()


def run_metadata(result: RunResult) -> dict[str, Any]:
    """The result as Dagster metadata: shown on the asset's page, and on a failed step's too."""
    columns = [
        dg.TableColumn("connection", "string"),
        dg.TableColumn("connection_id", "string"),
        dg.TableColumn("job_id", "int"),
        dg.TableColumn("outcome", "string"),
        dg.TableColumn("rows_synced", "int"),
        dg.TableColumn("bytes_synced", "int"),
        dg.TableColumn("duration_s", "float"),
        dg.TableColumn("error", "string"),
    ]
    records = [
        dg.TableRecord(
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
        )
        for sync in result.syncs
    ]
    return {
        "airbyte_fleet/run_id": dg.MetadataValue.text(result.run_id),
        "airbyte_fleet/outcome": dg.MetadataValue.text(result.outcome),
        "airbyte_fleet/counts": dg.MetadataValue.json(
            {outcome: n for outcome, n in result.counts.items() if n}
        ),
        # Dagster's own key: the asset's page shows it as the row count.
        "dagster/row_count": dg.MetadataValue.int(result.totals.rows_synced),
        "airbyte_fleet/bytes_synced": dg.MetadataValue.int(result.totals.bytes_synced),
        "airbyte_fleet/duration_s": dg.MetadataValue.float(result.duration_s or 0.0),
        "airbyte_fleet/syncs": dg.MetadataValue.table(records, dg.TableSchema(columns)),
    }


def materialized(
    context: dg.AssetExecutionContext, result: RunResult
) -> dg.MaterializeResult[None]:
    """The asset's outcome: materialized when every sync succeeded, a failed step otherwise."""
    metadata = run_metadata(result)
    if not result.ok:
        # No retry policy applies (allow_retries=False): the syncs that succeeded would be
        # triggered again. Run the failed ones again on purpose (their ids are in the table).
        raise dg.Failure(description=result.summary, metadata=metadata, allow_retries=False)
    context.log.info(result.summary)
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name="airbyte", kinds={"airbyte"})
def airbyte_syncs(
    context: dg.AssetExecutionContext, config: AirbyteSyncConfig
) -> dg.MaterializeResult[None]:
    """The selected Airbyte connections, synced (a plain function: the blocking call)."""
    result = run_syncs_blocking(config.selection(), config.options())
    return materialized(context, result)


@dg.asset(group_name="airbyte", kinds={"airbyte"})
async def airbyte_syncs_async(
    context: dg.AssetExecutionContext, config: AirbyteSyncConfig
) -> dg.MaterializeResult[None]:
    """The selected Airbyte connections, synced (an async step: awaits the run)."""
    result = await run_syncs(config.selection(), config.options())
    return materialized(context, result)


defs = dg.Definitions(assets=[airbyte_syncs, airbyte_syncs_async])
