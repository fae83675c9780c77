"""Shared fixtures: a real simulator over loopback, stamina in testing mode, spec checks at teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import stamina
from pydantic import SecretStr

from airbyte_fleet._redact import forget_secrets
from airbyte_fleet.api import AirbyteClient, ClientCredentials, plan_url
from airbyte_fleet.simulator import Simulator, SimulatorOptions
from spec_validation import get_validator

SimFactory = Callable[..., Awaitable[tuple[Simulator, str]]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _stamina_testing() -> Iterator[None]:
    # No real backoff sleeps in tests; enough attempts to ride out injected faults.
    stamina.set_testing(True, attempts=6)
    yield
    stamina.set_testing(False)


@pytest.fixture(autouse=True)
def _fresh_secrets() -> Iterator[None]:
    yield
    forget_secrets()


@pytest.fixture
async def make_sim(anyio_backend: str) -> AsyncIterator[SimFactory]:
    """Start simulators on free loopback ports; every exchange they saw must satisfy the spec."""
    started: list[Simulator] = []

    async def make(clock: Any = None, **options: Any) -> tuple[Simulator, str]:
        # Tests get quick, reliable syncs unless they ask for something else.
        options = {
            "sync_seconds": (0.05, 0.2),
            "failure_rate": 0.0,
            "incomplete_rate": 0.0,
        } | options
        sim = Simulator(SimulatorOptions(**options), clock=clock)
        root = await sim.start("127.0.0.1", 0)
        started.append(sim)
        return sim, root

    yield make
    for sim in started:
        await sim.stop()
    validator = get_validator()
    problems = [
        p
        for sim in started
        for p in validator.validate_all(sim.exchanges, require_auth=sim.options.auth != "none")
    ]
    assert not problems, "spec violations:\n" + "\n".join(problems[:20])


def client_for(
    root: str,
    *,
    client_id: str = "sim-client",
    client_secret: str = "sim-secret",
    path: str = "/api/public/v1",
    **kwargs: Any,
) -> AirbyteClient:
    """A client with client-credentials auth against a simulator root URL."""
    api = plan_url(root + path).candidates[0]
    auth = ClientCredentials(client_id, SecretStr(client_secret), api.token_url)
    return AirbyteClient(api, auth, **kwargs)
