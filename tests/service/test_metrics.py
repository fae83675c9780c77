"""Prometheus metrics: exact values from a realistic event sequence, and request counts that match
what the simulator saw."""

from __future__ import annotations

import gc
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from airbyte_fleet._version import __version__
from airbyte_fleet.api import AirbyteClient
from airbyte_fleet.engine.events import (
    EventBus,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncDetached,
    SyncEvent,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTimedOut,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.service.metrics import Metrics
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
IDS = {name: f"9f0e8d7c-0000-4000-8000-00000000000{n}" for n, name in enumerate("abcdefg")}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(metrics: Metrics) -> Samples:
    body, _ = metrics.render()
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Run:
    """Builds one run's events with consistent run id, times and elapsed seconds."""

    def __init__(self, run_id: str, *, wait: bool = True, planned: Iterable[str] = ()) -> None:
        self.run_id = run_id
        self.wait = wait
        self.planned = tuple(PlannedSync(IDS[name], name) for name in planned)

    def _base(self, at: float) -> dict[str, Any]:
        return {"run_id": self.run_id, "at": T0 + timedelta(seconds=at), "elapsed_s": at}

    def started(self) -> RunStarted:
        return RunStarted(
            **self._base(0),
            total=len(self.planned),
            job_type="sync",
            max_concurrency=25,
            wait=self.wait,
            planned=self.planned,
        )

    def sync(self, kind: type[SyncEvent], name: str, at: float, **fields: Any) -> SyncEvent:
        return kind(**self._base(at), connection_id=IDS[name], connection_name=name, **fields)

    def finished(self, at: float, outcome: str, **fields: Any) -> RunFinished:
        return RunFinished(**self._base(at), outcome=outcome, **fields)


async def test_a_realistic_run_gives_exact_counts_durations_and_gauges() -> None:
    metrics = Metrics()
    bus = EventBus([metrics.sink])
    run = Run("r1", planned="abcde")
    bus.emit(run.started())
    bus.emit(run.sync(SyncTriggering, "a", 0.5))
    bus.emit(run.sync(SyncTriggered, "a", 1, job_id=1))
    bus.emit(run.sync(SyncStatusChanged, "a", 10, job_id=1, status="running"))
    bus.emit(run.sync(SyncTriggered, "b", 2, job_id=2))
    bus.emit(run.sync(SyncAdopted, "c", 3, job_id=3, reason="already running"))
    bus.emit(run.sync(SyncSkipped, "d", 1, reason="a sync is already running"))
    bus.emit(run.sync(SyncFailed, "e", 1, outcome="error", error="connection is inactive"))

    mid = _samples(metrics)
    assert _value(mid, "airbyte_fleet_syncs_in_flight") == 3
    assert _value(mid, "airbyte_fleet_runs_in_progress") == 1
    assert _value(mid, "airbyte_fleet_syncs_total", outcome="skipped") == 1
    assert _value(mid, "airbyte_fleet_syncs_total", outcome="error") == 1

    bus.emit(run.sync(SyncSucceeded, "a", 61, job_id=1, rows_synced=10))
    # b fails, is retried, and fails again: one sync, timed from its first trigger.
    bus.emit(run.sync(SyncRetrying, "b", 302, job_id=2, wait_s=30.0))
    bus.emit(run.sync(SyncTriggered, "b", 400, job_id=4, attempt=2))
    bus.emit(run.sync(SyncFailed, "b", 902, job_id=4, attempt=2, error="source crashed"))
    bus.emit(run.sync(SyncTimedOut, "c", 3603, job_id=3, cancelled=True))
    bus.emit(run.finished(3604, "failed"))

    # A run that does not wait: its syncs end "triggered" when the run ends.
    fire_and_forget = Run("r2", wait=False, planned="f")
    bus.emit(fire_and_forget.started())
    bus.emit(fire_and_forget.sync(SyncTriggered, "f", 1, job_id=5))
    bus.emit(fire_and_forget.finished(2, "succeeded"))

    # An interrupted run that leaves its job running in Airbyte: no outcome yet, not in flight.
    detached = Run("r3", planned="g")
    bus.emit(detached.started())
    bus.emit(detached.sync(SyncTriggered, "g", 1, job_id=6))
    bus.emit(detached.sync(SyncDetached, "g", 5, job_id=6))
    bus.emit(detached.finished(6, "interrupted", interrupted=True))

    end = _samples(metrics)
    syncs = {
        outcome: _value(end, "airbyte_fleet_syncs_total", outcome=outcome)
        for outcome in ("succeeded", "failed", "timed_out", "skipped", "error", "triggered")
    }
    assert syncs == {
        "succeeded": 1,
        "failed": 1,
        "timed_out": 1,
        "skipped": 1,
        "error": 1,
        "triggered": 1,
    }
    # Outcomes that never happened are there as zeros, not missing.
    assert end[("airbyte_fleet_syncs_total", frozenset({("outcome", "cancelled")}))] == 0
    assert _value(end, "airbyte_fleet_syncs_in_flight") == 0
    assert _value(end, "airbyte_fleet_runs_in_progress") == 0
    for outcome in ("failed", "succeeded", "interrupted"):
        assert _value(end, "airbyte_fleet_runs_total", outcome=outcome) == 1

    duration = "airbyte_fleet_sync_duration_seconds"
    for outcome, seconds in (("succeeded", 60), ("failed", 900), ("timed_out", 3600)):
        assert _value(end, f"{duration}_count", outcome=outcome) == 1
        assert _value(end, f"{duration}_sum", outcome=outcome) == seconds
    assert _value(end, f"{duration}_bucket", outcome="succeeded", le="30.0") == 0
    assert _value(end, f"{duration}_bucket", outcome="succeeded", le="60.0") == 1
    assert _value(end, f"{duration}_bucket", outcome="failed", le="600.0") == 0
    assert _value(end, f"{duration}_bucket", outcome="failed", le="1200.0") == 1
    assert _value(end, f"{duration}_bucket", outcome="timed_out", le="+Inf") == 1
    # Never triggered: counted, but not timed.
    assert _value(end, f"{duration}_count", outcome="skipped") == 0
    assert _value(end, f"{duration}_count", outcome="error") == 0

    body, _ = metrics.render()
    text = body.decode()
    for connection_id in IDS.values():
        assert connection_id not in text
    assert "r1" not in text  # run ids are unbounded too


async def test_resumed_syncs_and_stray_events_never_push_a_gauge_below_zero() -> None:
    metrics = Metrics()
    run = Run("r1", planned="a")
    # A final event for a sync this process never saw start (resumed after a restart).
    metrics.sink(run.sync(SyncSucceeded, "a", 5))
    metrics.sink(run.finished(6, "succeeded"))
    metrics.sink(run.finished(6, "succeeded"))
    samples = _samples(metrics)
    assert _value(samples, "airbyte_fleet_syncs_in_flight") == 0
    assert _value(samples, "airbyte_fleet_runs_in_progress") == 0
    assert _value(samples, "airbyte_fleet_syncs_total", outcome="succeeded") == 1
    assert _value(samples, "airbyte_fleet_sync_duration_seconds_count", outcome="succeeded") == 0


async def test_each_instance_has_its_own_registry_and_renders_both_formats() -> None:
    first, second = Metrics(), Metrics()
    first.sink(Run("r1").started())
    assert _value(_samples(first), "airbyte_fleet_runs_in_progress") == 1
    assert _value(_samples(second), "airbyte_fleet_runs_in_progress") == 0

    body, content_type = first.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert b"# TYPE airbyte_fleet_syncs_total counter" in body
    body, content_type = first.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


async def test_request_counters_match_what_the_simulator_saw(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=6, workspaces=2, rate_5xx=0.3, error_status=503, seed=5)
    metrics = Metrics()
    async with client_for(root) as client:
        metrics.watch_client(client)
        metrics.watch_client(client)  # watching twice counts once
        await client.list_workspaces()
        connections = await client.list_connections()
        # A 503 on POST /jobs is never retried (its outcome is unknown): fail only reads.
        sim.faults.update({"rate_5xx": 0.0})
        for connection in connections[:3]:
            job = await client.create_job(connection.connection_id)
            await client.get_job(job.job_id)
        sim.expire_tokens()
        for connection in connections[:3]:
            await client.get_connection(connection.connection_id)
        stats = client.stats

    samples = _samples(metrics)
    seen = {(method, route) for method, route, _ in stats.requests}
    assert ("GET", "/jobs/{jobId}") in seen
    assert ("POST", "/applications/token") in seen
    for method, route in seen:
        counted = sum(
            value
            for (name, labels), value in samples.items()
            if name == "airbyte_fleet_airbyte_requests_total"
            and dict(labels)["method"] == method
            and dict(labels)["route"] == route
        )
        assert counted == sim.count(method, route), (method, route)
    # Per status, against what the simulator answered (not the client's own counts, which are
    # what the exporter reads).
    answered = Counter((e.method, e.route, e.status) for e in sim.exchanges)
    for (method, route, status), count in answered.items():
        labels = {"method": method, "route": route, "status": str(status)}
        assert _value(samples, "airbyte_fleet_airbyte_requests_total", **labels) == count

    # Every injected 503 was a read that was tried again; every 401 was replayed once.
    retried = sum(1 for e in sim.exchanges if e.fault == "5xx")
    assert retried > 0
    assert _value(samples, "airbyte_fleet_airbyte_retries_total") == retried
    refused = sum(1 for e in sim.exchanges if e.status == 401)
    assert refused >= 1
    assert _value(samples, "airbyte_fleet_auth_replays_total") == refused
    assert _value(samples, "airbyte_fleet_token_refreshes_total") == sim.token_requests == 2


async def test_counts_survive_a_client_going_away(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2)
    metrics = Metrics()

    async def use_a_new_client() -> None:
        client: AirbyteClient = client_for(root)
        async with client:
            metrics.watch_client(client)
            await client.list_workspaces()

    await use_a_new_client()
    gc.collect()  # the first client is gone; what it counted must stay counted
    assert metrics._clients._gone  # and the collector noticed, without holding it alive
    await use_a_new_client()
    kept = client_for(root)
    async with kept:
        metrics.watch_client(kept)
        await kept.list_connections()
        metrics.unwatch_client(kept)
        await kept.list_connections()  # not watched any more

    samples = _samples(metrics)
    route = {"method": "GET", "route": "/workspaces", "status": "200"}
    assert _value(samples, "airbyte_fleet_airbyte_requests_total", **route) == 2
    assert sim.count("GET", "/workspaces") == 2
    assert _value(samples, "airbyte_fleet_token_refreshes_total") == 3 == sim.token_requests
    connections = {"method": "GET", "route": "/connections", "status": "200"}
    assert _value(samples, "airbyte_fleet_airbyte_requests_total", **connections) == 1


async def test_process_python_and_build_series_without_created_ones() -> None:
    metrics = Metrics()
    metrics.sink(Run("r1", planned="a").started())
    metrics.sink(Run("r1").finished(1, "succeeded"))
    samples = _samples(metrics)
    names = {name for name, _ in samples}
    assert _value(samples, "airbyte_fleet_build_info", version=__version__) == 1
    assert {"python_info", "python_gc_objects_collected_total"} <= names
    if sys.platform == "linux":  # the process collector reads /proc
        assert samples[("process_resident_memory_bytes", frozenset())] > 0
        assert samples[("process_open_fds", frozenset())] > 0
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        body, _ = metrics.render(accept)
        # Counters and histograms are there, without their _created companions.
        assert b'airbyte_fleet_runs_total{outcome="succeeded"} 1.0' in body
        assert b"_created" not in body, accept


async def test_a_schedules_last_success_is_the_end_of_its_latest_succeeded_run() -> None:
    metrics = Metrics()
    gauge = "airbyte_fleet_schedule_last_success_timestamp_seconds"
    nightly, hourly, adhoc = Run("n1"), Run("h1"), Run("x1")
    metrics.scheduled("nightly", "n1")
    metrics.scheduled("hourly", "h1")
    for run in (nightly, hourly, adhoc):
        metrics.sink(run.started())
    metrics.sink(nightly.finished(60, "succeeded"))
    metrics.sink(hourly.finished(30, "failed"))
    metrics.sink(adhoc.finished(10, "succeeded"))
    samples = _samples(metrics)
    series = {labels: value for (name, labels), value in samples.items() if name == gauge}
    # Only a schedule that has succeeded has a series; a run no schedule started sets none.
    assert series == {
        frozenset({("schedule", "nightly")}): (T0 + timedelta(seconds=60)).timestamp()
    }

    # A later success moves it on; a later failure leaves it where it was.
    metrics.scheduled("nightly", "n2")
    again = Run("n2")
    metrics.sink(again.started())
    metrics.sink(again.finished(3600, "succeeded"))
    metrics.scheduled("nightly", "n3")
    metrics.sink(Run("n3").started())
    metrics.sink(Run("n3").finished(7200, "failed"))
    assert (
        _value(_samples(metrics), gauge, schedule="nightly")
        == (T0 + timedelta(seconds=3600)).timestamp()
    )
