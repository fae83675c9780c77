"""Run inside the Prefect venv: run the example's flows, one flow run per scenario.

``python drive_prefect.py EXAMPLE SCENARIOS OUT``: SCENARIOS is a JSON list of
``{"flow": name, "connections": [ids]}`` (and ``timeout_seconds``, to have Prefect stop it); OUT receives, for each run, its final state, message
and return value, and the table artifacts it created, read back through Prefect's API (the
server PREFECT_API_URL names; without it, a temporary one Prefect starts for this process).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId


async def artifacts(flow_run_id: UUID) -> list[dict[str, Any]]:
    async with get_client() as client:
        found = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [
        {"key": a.key, "description": a.description, "data": json.loads(str(a.data))}
        for a in found
        if a.type == "table"
    ]


def main() -> None:
    example, scenarios, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    spec = importlib.util.spec_from_file_location("prefect_flow", example)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reports: list[dict[str, Any]] = []
    for scenario in scenarios:
        flow = getattr(module, scenario["flow"])
        if "timeout_seconds" in scenario:
            # How Prefect stops a flow that runs too long (a deployment sets it the same way).
            flow = flow.with_options(timeout_seconds=scenario["timeout_seconds"])
        call = flow(connections=scenario["connections"], return_state=True)
        state = asyncio.run(call) if inspect.iscoroutine(call) else call
        reports.append(
            {
                "flow": scenario["flow"],
                "state": state.type.value,
                "message": state.message,
                "result": state.result() if state.is_completed() else None,
                "artifacts": asyncio.run(artifacts(state.state_details.flow_run_id)),
            }
        )
    Path(out).write_text(json.dumps(reports, default=str))


if __name__ == "__main__":
    main()
