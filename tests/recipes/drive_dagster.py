"""Run inside the Dagster venv: materialize the example's assets, one run per scenario.

``python drive_dagster.py EXAMPLE SCENARIOS OUT``: SCENARIOS is a JSON list of
``{"asset": name, "connections": [ids]}``; OUT receives a JSON list with, for each run, whether it
succeeded, the materialization's metadata and the step failure's description and metadata, all
read from the run's event log. The library's log records go to Dagster's run logs (stderr).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg


def load(path: str) -> Any:
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plain(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, dg.TableMetadataValue):
            out[key] = [dict(record.data) for record in value.records]
        else:
            out[key] = value.value
    return out


def main() -> None:
    example, scenarios, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    module = load(example)
    # As the example's docstring says: the library's records in Dagster's run logs.
    instance = dg.DagsterInstance.ephemeral(
        settings={
            "python_logs": {"managed_python_loggers": ["airbyte_fleet"], "python_log_level": "INFO"}
        }
    )
    reports = []
    for scenario in scenarios:
        name = scenario["asset"]
        config = module.AirbyteSyncConfig(connections=scenario["connections"])
        result = dg.materialize(
            [getattr(module, name)],
            run_config=dg.RunConfig({name: config}),
            instance=instance,
            raise_on_error=False,
        )
        report: dict[str, Any] = {"asset": name, "success": result.success}
        for event in result.get_asset_materialization_events():
            report["metadata"] = plain(event.materialization.metadata)
        for event in result.get_step_failure_events():
            failure = event.step_failure_data.user_failure_data
            if failure is not None:
                report["failure"] = failure.description
                report["failure_metadata"] = plain(failure.metadata)
            elif event.step_failure_data.error is not None:
                report["error"] = event.step_failure_data.error.message
        reports.append(report)
    Path(out).write_text(json.dumps(reports, default=str))


if __name__ == "__main__":
    main()
