"""The engine against the simulator over loopback: fan-out, following, policies, stopping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from aiohttp import web

from airbyte_fleet.api import AirbyteClient, NoAuth, Timeouts, plan_url
from airbyte_fleet.engine.events import (
    Event,
    EventBus,
    SyncAdopted,
    SyncEvent,
    SyncStatusChanged,
    SyncTriggered,
)
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, build_plan
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.run import Engine
from airbyte_fleet.runner import RunSession
from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory, client_for, misbehaving_proxy

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"poll_interval": 0.02, "retry_backoff": 0.0}


def opts(**over: Any) -> RunOptions:
    return RunOptions(**{**FAST, **over})


async def _plan(client: AirbyteClient, **selection: Any) -> Plan:
    return await build_plan(client, Selection(**selection))


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def _run(
    client: AirbyteClient,
    plan: Plan,
    options: RunOptions,
    *,
    control: Callable[[Engine], Any] | None = None,
) -> tuple[RunResult, Recorder]:
    recorder = Recorder()
    builder = ResultBuilder()
    engine = Engine(client, options, EventBus([builder, recorder]))
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run, plan)
        if control is not None:
            await control(engine)
    return builder.result, recorder


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


async def test_fifty_connections_all_succeed(make_sim: SimFactory) -> None:
    sim, root = await make_sim(
        connections=50, workspaces=2, sync_seconds=(0.05, 0.2), failure_rate=0, incomplete_rate=0
    )
    async with client_for(root) as client:
        plan = await _plan(client, all=True)
        result = await RunSession(client, plan, opts(max_concurrency=50)).run()
    assert result.outcome == "succeeded"
    assert result.ok
    assert len(result.syncs) == 50
    assert result.counts["succeeded"] == 50
    assert all(s.job_id is not None and s.rows_synced for s in result.syncs)
    assert result.totals.rows_synced == sum(s.rows_synced or 0 for s in result.syncs)
    assert sim.count("POST", "/jobs") == 50
    # The result is in plan order (by name for --all).
    assert [s.connection_id for s in result.syncs] == [p.connection_id for p in plan.items]


async def test_failures_are_counted_and_incomplete_is_not_final(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=6, failure_rate=0, incomplete_rate=0)
    ids = _ids(sim)
    sim.script(ids[0], JobScript(seconds=0.1, final="failed"))
    # Long enough that a 10 ms poll cannot miss the incomplete phase, even on a loaded machine.
    sim.script(ids[1], JobScript(seconds=1.2, incomplete_attempts=1, final="succeeded"))
    sim.script(ids[2], JobScript(seconds=0.3, incomplete_attempts=1, final="failed"))
    for cid in ids[3:]:
        sim.script(cid, JobScript(seconds=0.1))
    async with client_for(root) as client:
        result, rec = await _run(
            client, await _plan(client, connections=ids), opts(poll_interval=0.01)
        )
    by_id = {s.connection_id: s for s in result.syncs}
    assert result.outcome == "failed"
    assert result.counts["failed"] == 2
    assert result.counts["succeeded"] == 4
    assert by_id[ids[0]].outcome == "failed"
    assert by_id[ids[0]].error
    assert by_id[ids[1]].outcome == "succeeded"
    changes = [
        (e.old_status, e.status) for e in rec.of(SyncStatusChanged) if e.connection_id == ids[1]
    ]
    assert ("running", "incomplete") in changes
    assert changes[-1][1] == "succeeded"


async def test_retries_turn_a_transient_failure_into_success(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, failure_rate=0, incomplete_rate=0)
    cid = _ids(sim)[0]
    sim.script(cid, JobScript(seconds=0.05, final="failed"))
    sim.script(cid, JobScript(seconds=0.05, final="failed"))
    sim.script(cid, JobScript(seconds=0.05, final="succeeded"))
    async with client_for(root) as client:
        result, rec = await _run(client, await _plan(client, connections=[cid]), opts(retries=2))
    sync = result.syncs[0]
    assert sync.outcome == "succeeded"
    assert sync.attempts == 3
    assert [h.status for h in sync.history] == ["failed", "failed", "succeeded"]
    assert len({h.job_id for h in sync.history}) == 3
    assert sim.count("POST", "/jobs") == 3
    assert len(rec.of(SyncTriggered)) == 3


async def test_retries_exhausted_is_a_failure(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=1)
    cid = _ids(sim)[0]
    for _ in range(2):
        sim.script(cid, JobScript(seconds=0.05, final="failed"))
    async with client_for(root) as client:
        result, _ = await _run(client, await _plan(client, connections=[cid]), opts(retries=1))
    assert result.syncs[0].outcome == "failed"
    assert result.syncs[0].attempts == 2


@pytest.mark.parametrize("cancel", [True, False])
async def test_timeout_cancels_the_job_by_policy(make_sim: SimFactory, cancel: bool) -> None:
    sim, root = await make_sim(connections=1)
    cid = _ids(sim)[0]
    sim.script(cid, JobScript(seconds=600))
    async with client_for(root) as client:
        result, _ = await _run(
            client,
            await _plan(client, connections=[cid]),
            opts(timeout=0.2, cancel_on_timeout=cancel),
        )
    sync = result.syncs[0]
    assert sync.outcome == "timed_out"
    assert result.outcome == "failed"
    job = sim.job(sync.job_id)
    if cancel:
        assert job["status"] == "cancelled"
        assert sim.count("DELETE", "/jobs/{jobId}") == 1
        assert "was cancelled" in (sync.error or "")
    else:
        assert job["status"] in ("pending", "running")
        assert sim.count("DELETE", "/jobs/{jobId}") == 0
        assert "left running" in (sync.error or "")


@pytest.mark.parametrize(
    ("policy", "outcome"), [("adopt", "succeeded"), ("skip", "skipped"), ("fail", "error")]
)
async def test_already_running_policies(make_sim: SimFactory, policy: str, outcome: str) -> None:
    sim, root = await make_sim(connections=2)
    cid = _ids(sim)[0]
    sim.script(cid, JobScript(seconds=0.2))
    running = sim.start_job(cid)
    async with client_for(root) as client:
        result, rec = await _run(
            client, await _plan(client, connections=[cid]), opts(if_running=policy)
        )
    sync = result.syncs[0]
    assert sync.outcome == outcome
    assert sim.count("POST", "/jobs") == 1  # the one answered 409; never a second
    if policy == "adopt":
        assert sync.job_id == running["jobId"]
        assert rec.of(SyncAdopted)[0].job_id == running["jobId"]
        assert result.ok
    if policy == "skip":
        assert result.ok
        assert str(running["jobId"]) in (sync.error or "")
    if policy == "fail":
        assert not result.ok


async def test_no_wait_only_triggers(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=5)
    async with client_for(root) as client:
        result, _ = await _run(client, await _plan(client, all=True), opts(wait=False))
    assert result.counts["triggered"] == 5
    assert result.counts["succeeded"] == 0
    assert result.ok
    assert sim.count("GET", "/jobs/{jobId}") == 0


async def test_concurrency_limit_holds_and_slots_are_reused(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=9)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=0.1))
    async with client_for(root) as client:
        result, rec = await _run(client, await _plan(client, all=True), opts(max_concurrency=3))
    in_flight = peak = 0
    for event in rec.events:
        if isinstance(event, SyncTriggered):
            in_flight += 1
            peak = max(peak, in_flight)
        elif isinstance(event, SyncEvent) and event.kind in ("sync_succeeded", "sync_failed"):
            in_flight -= 1
    assert peak == 3
    assert result.counts["succeeded"] == 9


async def test_inactive_connections_are_skipped_with_a_reason(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=4, inactive_connections=1)
    async with client_for(root) as client:
        result, _ = await _run(client, await _plan(client, all=True), opts())
    skipped = [s for s in result.syncs if s.outcome == "skipped"]
    assert len(skipped) == 1
    assert "inactive" in (skipped[0].error or "")
    assert result.ok
    assert sim.count("POST", "/jobs") == 3


async def test_unclear_trigger_is_reconciled_without_a_second_post(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, slow_post_seconds=0.3)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=0.4))
    async with client_for(root, timeouts=Timeouts(connect=2, read=0.1)) as client:
        result, _ = await _run(client, await _plan(client, all=True), opts())
    assert result.counts["succeeded"] == 3
    assert sim.count("POST", "/jobs") == 3
    assert {s.job_id for s in result.syncs} == {j["jobId"] for j in sim.jobs}


async def test_stop_cancels_every_job_in_flight(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=6)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=600))

    async def interrupt(engine: Engine) -> None:
        triggered = 0

        def stop_after_three(event: Event) -> None:
            nonlocal triggered
            if isinstance(event, SyncTriggered):
                triggered += 1
                if triggered == 3:
                    engine.stop("cancel")

        engine.bus.subscribe(stop_after_three)

    async with client_for(root) as client:
        result, _ = await _run(
            client, await _plan(client, all=True), opts(max_concurrency=3), control=interrupt
        )
    assert result.outcome == "interrupted"
    assert result.counts["cancelled"] == 3
    assert result.counts["skipped"] == 3  # never triggered
    assert all(j["status"] == "cancelled" for j in sim.jobs)
    assert len(result.syncs) == 6


async def test_run_deadline_times_out_running_and_waiting_syncs(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=4)
    for cid in _ids(sim):
        sim.script(cid, JobScript(seconds=600))
    async with client_for(root) as client:
        result, _ = await _run(
            client, await _plan(client, all=True), opts(max_concurrency=2, deadline=0.3)
        )
    assert result.counts["timed_out"] == 4
    assert sim.count("POST", "/jobs") == 2
    assert all(j["status"] == "cancelled" for j in sim.jobs)


async def test_unknown_status_keeps_waiting(anyio_backend: str) -> None:
    """A status Airbyte adds tomorrow is neither success nor failure: keep polling."""
    statuses = iter(["paused_for_maintenance", "paused_for_maintenance", "running", "succeeded"])
    cid = "3f0ef1a6-4a4e-4b53-8b1c-9a7f0b9a1c11"

    def job(status: str) -> dict[str, Any]:
        return {
            "jobId": 77,
            "status": status,
            "jobType": "sync",
            "startTime": "2026-01-01T00:00Z",
            "connectionId": cid,
        }

    async def create(request: web.Request) -> web.Response:
        return web.json_response(job("pending"))

    async def get(request: web.Request) -> web.Response:
        return web.json_response(job(next(statuses)))

    async def connection(request: web.Request) -> web.Response:
        return web.json_response(
            {"connectionId": cid, "name": "weird", "workspaceId": "w", "status": "active"}
        )

    app = web.Application()
    app.router.add_post("/api/public/v1/jobs", create)
    app.router.add_get("/api/public/v1/jobs/77", get)
    app.router.add_get(f"/api/public/v1/connections/{cid}", connection)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    api = plan_url(f"http://127.0.0.1:{runner.addresses[0][1]}/api/public/v1").candidates[0]
    try:
        async with AirbyteClient(api, NoAuth()) as client:
            result, rec = await _run(client, await _plan(client, connections=[cid]), opts())
    finally:
        await runner.cleanup()
    assert result.syncs[0].outcome == "succeeded"
    seen = [e.status for e in rec.of(SyncStatusChanged)]
    assert seen == ["paused_for_maintenance", "running", "succeeded"]


@pytest.mark.parametrize("job_type", ["reset", "clear"])
async def test_other_job_types_are_sent_as_asked(make_sim: SimFactory, job_type: str) -> None:
    sim, root = await make_sim(connections=2)
    async with client_for(root) as client:
        result, _ = await _run(client, await _plan(client, all=True), opts(job_type=job_type))
    assert result.ok
    assert result.job_type == job_type
    posts = [e for e in sim.exchanges if e.method == "POST" and e.route == "/jobs"]
    assert all(f'"jobType": "{job_type}"' in e.request_body.decode() for e in posts)
    assert {j["jobType"] for j in sim.jobs} == {job_type}


async def test_refresh_refused_by_airbyte_is_an_error_with_its_reason(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=1)
    async with client_for(root) as client:
        result, _ = await _run(client, await _plan(client, all=True), opts(job_type="refresh"))
    assert result.syncs[0].outcome == "error"
    assert "Refreshes are not supported" in (result.syncs[0].error or "")
    assert sim.count("POST", "/jobs") == 1


async def test_stale_already_running_is_retried_through_the_journal(make_sim: SimFactory) -> None:
    """Airbyte answers 409 "already running" but lists no running job (its stale-state case)."""
    sim, root = await make_sim(connections=1)
    cid = _ids(sim)[0]
    refused = {"n": 0}

    def stale_409(request: web.Request, query: str) -> web.Response | None:
        if request.method == "POST" and request.path.endswith("/jobs") and refused["n"] < 2:
            refused["n"] += 1
            body = {
                "status": 409,
                "type": "https://reference.airbyte.com/reference/errors#try-again-later",
                "title": "try-again-later",
                "detail": "Please try again later.",
                "data": {"message": f"A sync is already running for: {cid}"},
            }
            return web.json_response(body, status=409)
        return None

    async with misbehaving_proxy(root, stale_409) as proxied, client_for(proxied) as client:
        result, rec = await _run(client, await _plan(client, all=True), opts())
    assert result.syncs[0].outcome == "succeeded"
    assert refused["n"] == 2
    assert sim.count("POST", "/jobs") == 1  # the two refused never reached Airbyte
    kinds = [e.kind for e in rec.events if isinstance(e, SyncEvent)]
    # Every attempt went through the write-ahead marker first.
    assert kinds.count("sync_triggering") == 3
