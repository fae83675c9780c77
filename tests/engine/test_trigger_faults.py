"""Triggers under fault: a 5xx to ``POST /jobs`` is reconciled, then tried again under the client's
HTTP retry policy (short backoff), never after the sync-retry backoff and never twice for one job.

Every run here uses ``retry_backoff=30`` (the default) inside a 20 s bound: one sync-retry wait
between trigger tries would break the bound, while stamina's testing mode makes the HTTP policy's
own waits zero, so its tries are counted instead (``airbyte_retry`` lines, requests received).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest
import stamina
import stamina.instrumentation
from aiohttp import web
from structlog.testing import capture_logs

from airbyte_fleet.api import AirbyteClient, RetryPolicy
from airbyte_fleet.engine.events import EventBus
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, build_plan
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.run import Engine
from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory, client_for, misbehaving_proxy

pytestmark = pytest.mark.anyio

SLOW_SYNC_RETRY = RunOptions(poll_interval=0.05, retry_backoff=30.0)
# stamina's testing mode (conftest) allows this many tries per retry loop.
TESTING_ATTEMPTS = 6


async def _run(client: AirbyteClient, plan: Plan, options: RunOptions) -> RunResult:
    builder = ResultBuilder()
    with anyio.fail_after(20):
        await Engine(client, options, EventBus([builder])).run(plan)
    return builder.result


def _trigger_retries(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "airbyte_retry" and e["request"] == "POST /jobs"]


def _one_job_each(sim: Simulator) -> None:
    for connection in sim.connections:
        assert len(sim.jobs_for(connection["connectionId"])) == 1


async def test_a_quarter_of_requests_answered_503_costs_no_sync_retry_wait(
    make_sim: SimFactory,
) -> None:
    # Ten tries a loop: six 503s in a row somewhere among ~200 requests would be a flaky test.
    stamina.set_testing(True, attempts=10)
    sim, root = await make_sim(connections=40, workspaces=2, seed=11)
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(all=True))
        sim.faults.update({"rate_5xx": 0.25, "error_status": 503})
        with capture_logs() as logs:
            result = await _run(client, plan, SLOW_SYNC_RETRY)
    assert result.counts["succeeded"] == 40
    _one_job_each(sim)
    assert {s.job_id for s in result.syncs} == {j["jobId"] for j in sim.jobs}
    refused = [e for e in sim.exchanges if (e.method, e.route, e.fault) == ("POST", "/jobs", "5xx")]
    assert refused, "the fault never hit a trigger"
    # Each refused trigger was reconciled, then tried once more under the HTTP policy.
    assert len(_trigger_retries(logs)) == len(refused)
    assert sum(e["event"] == "trigger_unclear" for e in logs) == len(refused)
    assert sim.count("POST", "/jobs") == 40 + len(refused)


async def test_a_trigger_refused_until_the_policy_gives_up_says_what_airbyte_answered(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=3, workspaces=1)
    posts: Counter[str] = Counter()

    def refuse_triggers(request: web.Request, query: str) -> web.Response | None:
        if request.method == "POST" and request.path.endswith("/jobs"):
            posts["POST /jobs"] += 1
            return web.json_response({"message": "upstream unavailable"}, status=503)
        return None

    async with misbehaving_proxy(root, refuse_triggers) as proxied, client_for(proxied) as client:
        plan = await build_plan(client, Selection(all=True))
        with capture_logs() as logs:
            result = await _run(client, plan, SLOW_SYNC_RETRY)
    assert result.counts["error"] == 3
    for sync in result.syncs:
        assert sync.error == (
            f"could not trigger after {TESTING_ATTEMPTS} tries: Airbyte answered POST /jobs with "
            "HTTP 503 (upstream unavailable), and no job came of it"
        )
    # The policy's tries, each reconciled first, and not one round more.
    assert posts["POST /jobs"] == 3 * TESTING_ATTEMPTS
    assert sum(e["event"] == "trigger_unclear" for e in logs) == 3 * TESTING_ATTEMPTS
    assert sim.jobs == []


async def test_a_trigger_refused_a_few_times_gets_exactly_one_job(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=1)
    posts: Counter[str] = Counter()

    def refuse_three(request: web.Request, query: str) -> web.Response | None:
        if request.method == "POST" and request.path.endswith("/jobs"):
            posts["POST /jobs"] += 1
            if posts["POST /jobs"] <= 3:
                return web.json_response({"message": "bad gateway"}, status=502)
        return None

    async with misbehaving_proxy(root, refuse_three) as proxied, client_for(proxied) as client:
        plan = await build_plan(client, Selection(all=True))
        with capture_logs() as logs:
            result = await _run(client, plan, SLOW_SYNC_RETRY)
    assert result.counts["succeeded"] == 1
    _one_job_each(sim)
    assert sim.count("POST", "/jobs") == 1
    assert posts["POST /jobs"] == 4
    assert len(_trigger_retries(logs)) == 3


async def test_a_5xx_after_the_job_was_made_is_reconciled_not_retried(
    make_sim: SimFactory,
) -> None:
    # Airbyte can fail after creating the job (waiting for its id, say): the list shows it.
    sim, root = await make_sim(connections=1)
    cid = sim.connections[0]["connectionId"]
    sim.script(cid, JobScript(seconds=0.2))

    def create_then_fail(request: web.Request, query: str) -> web.Response | None:
        if request.method == "POST" and request.path.endswith("/jobs"):
            sim.start_job(cid)
            return web.json_response({"message": "timed out waiting for the job"}, status=500)
        return None

    async with misbehaving_proxy(root, create_then_fail) as proxied, client_for(proxied) as client:
        plan = await build_plan(client, Selection(all=True))
        with capture_logs() as logs:
            result = await _run(client, plan, SLOW_SYNC_RETRY)
    assert result.counts["succeeded"] == 1
    assert [s.job_id for s in result.syncs] == [j["jobId"] for j in sim.jobs_for(cid)]
    assert len(sim.jobs) == 1
    assert _trigger_retries(logs) == []


async def test_a_trigger_without_an_answer_still_waits_and_names_the_cause(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=1)

    def drop_triggers(request: web.Request, query: str) -> web.Response | None:
        if request.method == "POST" and request.path.endswith("/jobs"):
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        return None

    async with misbehaving_proxy(root, drop_triggers) as proxied, client_for(proxied) as client:
        plan = await build_plan(client, Selection(all=True))
        with capture_logs() as logs:
            result = await _run(client, plan, RunOptions(poll_interval=0.05, retry_backoff=0.01))
    (sync,) = result.syncs
    assert sync.error is not None
    assert sync.error.startswith("could not trigger after 4 tries: POST /jobs got no answer: ")
    assert sync.error.endswith(", and no job came of it")
    # No answer is not a clear refusal: never retried under the HTTP policy, always looked for.
    assert _trigger_retries(logs) == []
    assert sum(e["event"] == "trigger_unclear" for e in logs) == 4
    assert sim.jobs == []


async def test_a_stop_cuts_the_policy_wait_between_trigger_tries_short(
    make_sim: SimFactory,
) -> None:
    stamina.set_testing(False)  # a real wait, 30 s long, that the stop must cut short
    sim, root = await make_sim(connections=1)
    posts: Counter[str] = Counter()

    def refuse_triggers(request: web.Request, query: str) -> web.Response | None:
        if request.method == "POST" and request.path.endswith("/jobs"):
            posts["POST /jobs"] += 1
            return web.json_response({"message": "overloaded"}, status=503)
        return None

    slow = RetryPolicy(attempts=3, wait_initial=30.0, wait_max=30.0, wait_jitter=0.0)
    async with (
        misbehaving_proxy(root, refuse_triggers) as proxied,
        client_for(proxied, retry=slow) as client,
    ):
        plan = await build_plan(client, Selection(all=True))
        builder = ResultBuilder()
        engine = Engine(client, SLOW_SYNC_RETRY, EventBus([builder]))
        waiting = anyio.Event()
        hooks = stamina.instrumentation.get_on_retry_hooks()
        # stamina calls these as a wait between tries begins.
        stamina.instrumentation.set_on_retry_hooks([lambda _: waiting.set()])
        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(engine.run, plan)
                    await waiting.wait()
                    engine.stop()
        finally:
            stamina.instrumentation.set_on_retry_hooks(hooks)
    (sync,) = builder.result.syncs
    assert sync.outcome == "skipped"
    assert posts["POST /jobs"] == 1
    assert sim.jobs == []
