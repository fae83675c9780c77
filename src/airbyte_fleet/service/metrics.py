"""Prometheus metrics for ``GET /metrics``: what the runs did, and what we asked of Airbyte.

:class:`Metrics` owns its registry (never prometheus-client's global one: a process, and a test
suite, may hold several). Its :meth:`Metrics.sink` is an :class:`~airbyte_fleet.engine.events.EventSink`
to subscribe to every run's bus; :meth:`Metrics.watch_client` adds an :class:`AirbyteClient` whose
request counts are read at scrape time.

The registry also has the process (CPU, memory, open files), platform (Python version) and
garbage-collector collectors, and ``airbyte_fleet_build_info``. It exposes no ``_created``
series: prometheus-client can only switch those off for the whole process
(:func:`~prometheus_client.disable_created_metrics`), which :class:`Metrics` does.

Labels carry only small, fixed sets of values (outcomes, HTTP methods, route templates, status
codes, the config file's schedule names): never a connection id, a URL or anything from a
credential.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections import Counter as TallyCounter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from airbyte_fleet._version import __version__
from airbyte_fleet.api.client import AirbyteClient, RequestStats
from airbyte_fleet.engine.events import (
    Event,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncDetached,
    SyncEvent,
    SyncTriggered,
)
from airbyte_fleet.engine.outcome import OUTCOMES, final_outcome

__all__ = ["DURATION_BUCKETS", "RUN_OUTCOMES", "Metrics"]

RUN_OUTCOMES = ("succeeded", "failed", "interrupted")

# Syncs last from seconds to many hours; finer steps where most of them end.
DURATION_BUCKETS: tuple[float, ...] = (
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
    float("inf"),
)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUMBER = re.compile(r"(?<=/)\d+(?=/|$)")


@dataclass
class _InFlight:
    started: datetime
    waiting: bool


class Metrics:
    """Counters, gauges and a histogram fed by events, plus Airbyte request counts at scrape time."""

    def __init__(self, *, buckets: Iterable[float] = DURATION_BUCKETS) -> None:
        # A _created sample per series doubles what is scraped and no query of ours reads it.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Gauge(
            "airbyte_fleet_build_info",
            "The running version of airbyte-fleet (always 1).",
            ["version"],
            registry=self.registry,
        ).labels(version=__version__).set(1)
        self.syncs = Counter(
            "airbyte_fleet_syncs",
            "Syncs that reached a final outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.syncs_in_flight = Gauge(
            "airbyte_fleet_syncs_in_flight",
            "Syncs triggered or adopted and not final yet.",
            registry=self.registry,
        )
        self.sync_duration = Histogram(
            "airbyte_fleet_sync_duration_seconds",
            "Seconds from a sync's first trigger (or adoption) to its final outcome.",
            ["outcome"],
            buckets=tuple(buckets),
            registry=self.registry,
        )
        self.runs = Counter(
            "airbyte_fleet_runs",
            "Runs that finished, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.runs_in_progress = Gauge(
            "airbyte_fleet_runs_in_progress",
            "Runs started and not finished.",
            registry=self.registry,
        )
        self.schedule_last_success = Gauge(
            "airbyte_fleet_schedule_last_success_timestamp_seconds",
            "When each schedule's latest successful run ended (Unix time); absent until one "
            "has succeeded since the worker started.",
            ["schedule"],
            registry=self.registry,
        )
        # Every outcome exists from the first scrape, so rate() and alerts see a 0, not a gap.
        for sync_outcome in OUTCOMES:
            self.syncs.labels(outcome=sync_outcome)
        for run_outcome in RUN_OUTCOMES:
            self.runs.labels(outcome=run_outcome)
        self._lock = threading.Lock()
        self._runs: dict[str, bool] = {}  # run id -> waits for syncs to end
        self._in_flight: dict[tuple[str, str], _InFlight] = {}
        self._scheduled: dict[str, str] = {}  # run id -> the schedule that started it
        self._clients = _ClientCollector()
        self.registry.register(self._clients)

    # ------------------------------------------------------------------------- events

    def sink(self, event: Event) -> None:
        """An EventSink: subscribe it to a run's bus (it never raises on an unexpected order)."""
        with self._lock:
            if isinstance(event, RunStarted):
                self._runs[event.run_id] = event.wait
            elif isinstance(event, RunFinished):
                self._finish_run(event)
            elif isinstance(event, SyncEvent):
                self._sync(event)
            self.runs_in_progress.set(len(self._runs))
            self.syncs_in_flight.set(len(self._in_flight))

    def _sync(self, event: SyncEvent) -> None:
        key = (event.run_id, event.connection_id)
        if isinstance(event, SyncTriggered | SyncAdopted):
            # A retry triggers again: the duration runs from the first trigger.
            if key not in self._in_flight:
                self._in_flight[key] = _InFlight(event.at, self._runs.get(event.run_id, True))
            return
        if isinstance(event, SyncDetached):
            # Left running in Airbyte; a resumed run will follow it and report its outcome.
            self._in_flight.pop(key, None)
            return
        outcome = final_outcome(event)
        if outcome is None:
            return
        self.syncs.labels(outcome=outcome).inc()
        flight = self._in_flight.pop(key, None)
        if flight is not None:
            seconds = max((event.at - flight.started).total_seconds(), 0.0)
            self.sync_duration.labels(outcome=outcome).observe(seconds)

    def scheduled(self, schedule: str, run_id: str) -> None:
        """*run_id* was started by *schedule*: its success sets the schedule's last success."""
        with self._lock:
            self._scheduled[run_id] = schedule

    def _finish_run(self, event: RunFinished) -> None:
        self._runs.pop(event.run_id, None)
        schedule = self._scheduled.pop(event.run_id, None)
        if schedule is not None and event.outcome == "succeeded":
            self.schedule_last_success.labels(schedule=schedule).set(event.at.timestamp())
        for key in [k for k in self._in_flight if k[0] == event.run_id]:
            flight = self._in_flight.pop(key)
            # Mirrors the run's own counts: without waiting a sync ends "triggered"; a sync the
            # run never heard the end of is an "error" there too.
            self.syncs.labels(outcome="error" if flight.waiting else "triggered").inc()
        self.runs.labels(outcome=event.outcome).inc()

    # ------------------------------------------------------------------------- clients

    def watch_client(self, client: AirbyteClient) -> None:
        """Count *client*'s requests from now on; its totals stay counted after it is gone."""
        self._clients.watch(client)

    def unwatch_client(self, client: AirbyteClient) -> None:
        """Stop reading *client* live, keeping what it counted (garbage collection does the same)."""
        self._clients.unwatch(client)

    # ------------------------------------------------------------------------- exposition

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when *accept* asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _route_label(route: str) -> str:
    """The client records route templates; should a raw path slip through, keep ids out."""
    return _NUMBER.sub("{id}", _UUID.sub("{id}", route))


@dataclass
class _Totals:
    requests: TallyCounter[tuple[str, str, int]] = field(default_factory=TallyCounter)
    retries: int = 0
    replays: int = 0
    refreshes: int = 0

    def add_stats(self, stats: RequestStats) -> None:
        self.requests.update(stats.requests)
        self.retries += stats.retries
        self.replays += stats.replays_after_401


@dataclass
class _Watched:
    stats: RequestStats
    auth: Any
    finalizer: weakref.finalize[Any, Any] | None = None


class _ClientCollector:
    """Sums the watched clients' :class:`RequestStats` at scrape time.

    Counters must never go down, so a client that goes away (unwatched or garbage collected) has
    its counts folded into a running total. Clients sharing one auth object count its token
    refreshes once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, _Watched] = {}
        self._retired = _Totals()
        self._next = 0
        # Keys of clients collected by the garbage collector. The finalizer only appends here:
        # it may run in the middle of any code, even code holding the lock.
        self._gone: list[int] = []

    def watch(self, client: AirbyteClient) -> None:
        with self._lock:
            self._settle()
            if any(w.stats is client.stats for w in self._watched.values()):
                return
            key = self._next
            self._next += 1
            # Hold the stats and the auth, never the client: watching must not keep it alive.
            entry = _Watched(client.stats, client.auth)
            entry.finalizer = weakref.finalize(client, self._gone.append, key)
            self._watched[key] = entry

    def unwatch(self, client: AirbyteClient) -> None:
        with self._lock:
            self._gone.extend(k for k, w in self._watched.items() if w.stats is client.stats)
            self._settle()

    def _settle(self) -> None:
        """Fold the clients that went away into the running total (the lock is held)."""
        while self._gone:
            entry = self._watched.pop(self._gone.pop(), None)
            if entry is None:
                continue
            if entry.finalizer is not None:
                entry.finalizer.detach()
            self._retired.add_stats(entry.stats)
            if not any(w.auth is entry.auth for w in self._watched.values()):
                self._retired.refreshes += _refreshes(entry.auth)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._settle()
            totals = _Totals(
                requests=TallyCounter(self._retired.requests),
                retries=self._retired.retries,
                replays=self._retired.replays,
                refreshes=self._retired.refreshes,
            )
            auths: dict[int, Any] = {}
            for entry in list(self._watched.values()):
                totals.add_stats(entry.stats)
                auths[id(entry.auth)] = entry.auth
            totals.refreshes += sum(_refreshes(auth) for auth in auths.values())

        requests = CounterMetricFamily(
            "airbyte_fleet_airbyte_requests",
            "HTTP requests sent to Airbyte by method, route template and status "
            "(status 0: no answer).",
            labels=["method", "route", "status"],
        )
        by_label: TallyCounter[tuple[str, str, str]] = TallyCounter()
        for (method, route, status), count in totals.requests.items():
            by_label[(method.upper(), _route_label(route), str(status))] += count
        for labels, count in sorted(by_label.items()):
            requests.add_metric(list(labels), count)
        yield requests
        yield _counter(
            "airbyte_fleet_airbyte_retries", "Requests to Airbyte sent again.", totals.retries
        )
        yield _counter(
            "airbyte_fleet_token_refreshes",
            "Access tokens fetched (client credentials).",
            totals.refreshes,
        )
        yield _counter(
            "airbyte_fleet_auth_replays",
            "Requests replayed after a 401 with a fresh token.",
            totals.replays,
        )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _refreshes(auth: Any) -> int:
    value = getattr(auth, "refreshes", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
