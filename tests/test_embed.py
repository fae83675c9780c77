"""The Python API for embedding, against the simulator."""

from __future__ import annotations

import anyio
import pytest

from airbyte_fleet import AirbyteSettings, RunResult, run_syncs, run_syncs_blocking
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.simulator import JobScript
from conftest import SimFactory

pytestmark = pytest.mark.anyio


def _settings(root: str) -> AirbyteSettings:
    return AirbyteSettings(base_url=root, client_id="sim-client", client_secret="embed-secret-1234")


async def test_run_syncs_returns_one_result(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=6, client_secret="embed-secret-1234")
    failing = sim.connections[0]["connectionId"]
    sim.script(failing, JobScript(seconds=0.05, final="failed"))
    seen: list[str] = []
    result = await run_syncs(
        _settings(root),
        {"all": True},
        {"poll_interval": "20ms", "max_concurrency": 3},
        sinks=(lambda event: seen.append(event.kind),),
    )
    assert isinstance(result, RunResult)
    assert result.outcome == "failed"
    assert result.counts["failed"] == 1
    assert result.counts["succeeded"] == 5
    assert seen[0] == "run_started"
    assert seen[-1] == "run_finished"


async def test_blocking_wrapper_for_callers_without_a_loop(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, client_secret="embed-secret-1234")
    ids = [c["connectionId"] for c in sim.connections]
    result = await anyio.to_thread.run_sync(
        lambda: run_syncs_blocking(_settings(root), {"connections": ids}, {"poll_interval": 0.02})
    )
    assert result.ok
    assert [s.connection_id for s in result.syncs] == ids


async def test_bad_selection_raises_before_any_trigger(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, client_secret="embed-secret-1234")
    with pytest.raises(ConfigError):
        await run_syncs(_settings(root), {"connections": ["00000000-0000-4000-8000-00000000abcd"]})
    assert sim.count("POST", "/jobs") == 0
