"""The worker's OpenAPI document is the truth: schemathesis fuzzes every operation of a live worker
(a simulator behind it, both on loopback) from the document, and every answer must be one the
document allows, never a 5xx, while input the document refuses is refused.

The examples are bounded and derandomized (CI sees the same cases every time; about 20 s for the
module on 2 cores). The simulator is tiny and its syncs outlast the test, so however many runs the
fuzzer submits, each triggers at most one job per connection, and a later run adopts (or skips,
or fails) a connection whose job is still running instead of triggering it again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.failures import FailureGroup

from airbyte_fleet.service import ServeOptions, launch
from airbyte_fleet.service.openapi import openapi_document
from airbyte_fleet.settings_file import FileConfig
from airbyte_fleet.simulator import Simulator, SimulatorOptions
from spec_validation import get_validator

from .support import FAST_RUN, TOKEN, settings_for

CONNECTIONS = 2
# Per operation, for the fuzzing phase; the coverage phase adds its own boundary cases.
EXAMPLES = 25


@dataclass
class Live:
    """A worker and its simulator, served from an event loop on a thread of their own (the
    fuzzer's requests are synchronous)."""

    url: str
    sim: Simulator
    stop: asyncio.Event
    held: asyncio.Future[None]
    runs_accepted: list[str] = field(default_factory=list)


async def _hold(
    state_dir: Path, up: asyncio.Future[tuple[str, Simulator]], stop: asyncio.Event
) -> None:
    sim = Simulator(
        SimulatorOptions(
            connections=CONNECTIONS,
            workspaces=1,
            sync_seconds=(3600.0, 3600.0),
            failure_rate=0.0,
            incomplete_rate=0.0,
        )
    )
    root = await sim.start("127.0.0.1", 0)
    try:
        options = ServeOptions(
            host="127.0.0.1", port=0, state_dir=state_dir, api_token=TOKEN, grace=5.0
        )
        # An empty selection runs the file's [selection]: every connection of the tiny simulator.
        config = FileConfig(run=FAST_RUN, selection={"all": True})
        async with launch(options, settings=settings_for(root), file=config, environ={}) as running:
            up.set_result((running.url, sim))
            await stop.wait()
    finally:
        await sim.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="contract-worker", daemon=True)
    thread.start()

    async def start() -> Live:
        up: asyncio.Future[tuple[str, Simulator]] = loop.create_future()
        stop = asyncio.Event()
        held = asyncio.ensure_future(_hold(tmp_path_factory.mktemp("contract"), up, stop))
        await asyncio.wait({held, up}, return_when=asyncio.FIRST_COMPLETED)
        if not up.done():
            held.result()  # raises what kept the worker from coming up
        url, sim = up.result()
        return Live(url, sim, stop, held)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield server
    finally:

        async def stop() -> None:
            server.stop.set()
            await server.held

        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
    # Every job belongs to an accepted run, and a run triggers a connection at most once.
    assert server.sim.count("POST", "/jobs") <= CONNECTIONS * len(server.runs_accepted)
    problems = get_validator().validate_all(server.sim.exchanges)
    assert not problems, "spec violations:\n" + "\n".join(problems[:20])


CONFIG = schemathesis.Config.from_dict(
    {
        # Every request carries the token; the `ignored_auth` check still sends each operation
        # without it, and with a wrong one, and expects the 401 the document promises.
        "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
        "operations": [
            {
                # A well-formed selection can still name connections Airbyte does not have:
                # the document's 422 for a selection that cannot be planned (see
                # `refused_only_for_planning` for what keeps this from hiding a real refusal).
                "include-operation-id": "submitRun",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "422"]}
                },
            }
        ],
    }
)
# Built from the module, not fetched from the worker: the test ids (one per operation) are made
# at collection, before any worker is up; tests/service/test_api.py checks the served copy is
# this one.
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)


@schemathesis.check
def refused_only_for_planning(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """A well-formed run request is refused only because it cannot be planned: a 422 with no
    field errors, never one that calls a field the document allows invalid."""
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if positive and case.operation.label == "POST /runs" and response.status_code == 422:
        body = response.json()
        assert "errors" not in body, f"a valid request refused as invalid: {body}"
    return None


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_one_the_document_allows(case: schemathesis.Case, live: Live) -> None:
    response = case.call_and_validate(
        base_url=live.url, additional_checks=[refused_only_for_planning], timeout=10
    )
    if case.operation.label == "POST /runs" and response.status_code == 202:
        live.runs_accepted.append(response.json()["run_id"])


def test_a_real_event_stream_is_what_the_document_says(live: Live) -> None:
    # The fuzzer only meets unknown run ids here; this stream has every message of a real run.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # The fuzzer's runs (some polling once an hour) hold the worker's slots: end them first.
    for run_id in live.runs_accepted:
        cancelled = requests.post(f"{live.url}/runs/{run_id}/cancel", headers=auth, timeout=10)
        assert cancelled.status_code in (202, 409), cancelled.text
    submitted = requests.post(
        f"{live.url}/runs", json={"options": {"wait": False}}, headers=auth, timeout=10
    )
    assert submitted.status_code == 202, submitted.text
    run_id = submitted.json()["run_id"]
    live.runs_accepted.append(run_id)
    case = schema["/runs/{run_id}/events"]["GET"].Case(path_parameters={"run_id": run_id})
    response = case.call_and_validate(base_url=live.url, headers=auth, timeout=30)
    kinds = [
        line.removeprefix("event: ")
        for line in response.content.decode().splitlines()
        if line.startswith("event: ")
    ]
    assert kinds[0] == "run_started"
    assert kinds[-1] == "run_finished"
    assert len(kinds) >= 2 + CONNECTIONS

    # The same stream with one event out of shape fails the same check: the messages' schema is
    # enforced, not just present.
    broken = response.content.replace(b'"run_id":', b'"run":', 1)
    assert broken != response.content
    with pytest.raises(FailureGroup, match="schema"):
        case.validate_response(
            schemathesis.Response(
                status_code=response.status_code,
                headers=response.headers,
                content=broken,
                request=response.request,
                elapsed=0.0,
                verify=True,
            ),
            checks=[schemathesis.checks.response_schema_conformance],
        )
