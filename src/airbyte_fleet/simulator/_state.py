"""The simulator's mutable state and the operations shared by Python callers and control routes."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter, defaultdict
from typing import Any

from aiohttp import web

from ._clock import Clock
from ._exchange import Exchange
from ._options import Faults, SimulatorOptions
from ._timeline import JobScript
from ._tokens import TokenStore
from ._world import World

__all__ = ["STATE_KEY", "SimState"]


class SimState:
    def __init__(
        self, options: SimulatorOptions, clock: Clock, *, record_exchanges: bool = True
    ) -> None:
        self.options = options
        self.clock = clock
        self.world = World(options)
        self.faults: Faults = options.initial_faults()
        self.tokens = TokenStore(clock, options.token_ttl)
        # Each exchange keeps its headers and bodies: about 2 KB a trigger and 25 KB a page of
        # jobs, which a simulator serving 100,000 syncs to another process need not hold.
        self.record_exchanges = record_exchanges
        self.exchanges: list[Exchange] = []
        self.request_counts: Counter[tuple[str, str]] = Counter()
        self.handler_cpu: defaultdict[tuple[str, str], float] = defaultdict(float)
        self.token_requests = 0
        # When the first trigger was answered (clock time): a benchmark measures a client's
        # start-up to its first trigger from it, whatever the client logs.
        self.first_job_answered_at: float | None = None
        # Faults draw from their own stream so enabling one does not change the world or jobs.
        self.fault_rng = random.Random(f"faults:{options.seed}")
        # A separate stream again, so adding malformed bodies left older fault sequences as
        # they were.
        self.malformed_rng = random.Random(f"malformed:{options.seed}")
        self.started_at = clock.now()
        self.root_url = ""

    def arrived(self, method: str, route: str | None) -> None:
        # Counted on arrival, not on answer: a slow POST /jobs whose client gave up is still a
        # request Airbyte received (and the job it created is real).
        if route is not None:
            self.request_counts[(method, route)] += 1

    def answered(self, method: str, route: str | None, status: int, cpu_s: float) -> None:
        if route is None:
            return
        self.handler_cpu[(method, route)] += cpu_s
        if (
            self.first_job_answered_at is None
            and method == "POST"
            and route == "/jobs"
            and status == 200
        ):
            self.first_job_answered_at = self.clock.now()

    def record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)

    def count(self, method: str, route: str) -> int:
        return self.request_counts[(method.upper(), route)]

    def job_views(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        return [job.view(now) for job in self.world.jobs()]

    def jobs_for(self, connection_id: str) -> list[dict[str, Any]]:
        now = self.clock.now()
        return [job.view(now) for job in self.world.jobs_for(_same_uuid(connection_id))]

    def posts_for(self, connection_id: str) -> list[Exchange]:
        wanted = _same_uuid(connection_id)
        return [
            exchange
            for exchange in self.exchanges
            if exchange.method == "POST"
            and exchange.route == "/jobs"
            and _named_connection(exchange.request_body) == wanted
        ]

    def start_job(self, connection_id: str, job_type: str = "sync") -> dict[str, Any]:
        now = self.clock.now()
        return self.world.create_job(connection_id, job_type, now, skip_pending=True).view(now)

    def script(self, connection_id: str, script: JobScript) -> int:
        return self.world.queue_script(connection_id, script)

    def stats(self, *, jobs: bool = True) -> dict[str, Any]:
        """Counts for a harness in another process; ``jobs=False`` leaves out the job views
        (100,000 of them are a 25 MB answer)."""
        stats: dict[str, Any] = {
            "requests": {
                f"{method} {route}": n for (method, route), n in sorted(self.request_counts.items())
            },
            # CPU seconds spent in each route's handler (auth and faults included; the HTTP
            # parsing and writing around it not).
            "handler_cpu_s": {
                f"{method} {route}": round(cpu, 6)
                for (method, route), cpu in sorted(self.handler_cpu.items())
            },
            "token_requests": self.token_requests,
            "jobs_created": self.world.job_count(),
            "first_job_answered_at": self.first_job_answered_at,
        }
        if jobs:
            stats["jobs"] = self.job_views()
        return stats


def _same_uuid(value: str) -> str:
    # The API compares parsed UUIDs, so any spelling of an id names the same connection.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def _named_connection(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict):
        return None
    connection_id = payload.get("connectionId")
    return _same_uuid(connection_id) if isinstance(connection_id, str) else None


# Where the aiohttp application keeps its SimState, for the API and the control routes alike.
STATE_KEY: web.AppKey[SimState] = web.AppKey("simulator_state", SimState)
