"""The Python API used the way README and docs/python-api.md show it; `mypy --strict` (with no
pydantic plugin, as most users have none) must accept every line (tests/test_typing.py)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from airbyte_fleet import (
    AirbyteSettings,
    ConfigError,
    Event,
    FleetError,
    ResultBuilder,
    RunOptions,
    RunOptionsArgs,
    RunResult,
    Selection,
    SyncResult,
    run_syncs,
    run_syncs_blocking,
)


def nightly() -> RunResult:
    result = run_syncs_blocking({"tags": ["nightly"]}, {"timeout": "45m", "grace": "PT1M"})
    if not result.ok:
        raise RuntimeError(result.summary)
    return result


async def some(ids: list[str]) -> RunResult:
    options: RunOptionsArgs = {"max_concurrency": 10, "poll_interval": 5, "retries": 1}
    return await run_syncs({"connections": ids}, options)


def models() -> None:
    selection = Selection(connections=["8f2c…"], tags="raw,finance")
    options = RunOptions(timeout="45m", deadline=timedelta(hours=2), on_interrupt="detach")
    seconds: float = options.timeout
    settings = AirbyteSettings(base_url="http://airbyte:8000", client_id="id", client_secret="s")
    run_syncs_blocking(selection, options, settings=settings, config="fleet.toml")
    print(seconds)


def own_sink() -> None:
    seen: list[str] = []
    builder = ResultBuilder()

    def on_event(event: Event) -> None:
        seen.append(event.kind)

    try:
        asyncio.run(run_syncs({"all": True}, sinks=(on_event, builder)))
    except KeyboardInterrupt:
        partial: RunResult = builder.result
        failed: list[SyncResult] = partial.failures
        print(len(failed))
        raise
    except ConfigError as exc:
        print(exc.message)
    except FleetError as exc:
        print(exc)
