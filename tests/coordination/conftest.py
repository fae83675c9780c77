"""Every coordination test runs on both backends (PostgreSQL skips without a server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postgres import Databases

from .support import World


@pytest.fixture(params=["sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path, databases: Databases) -> Iterator[World]:
    url = databases.new() if request.param == "postgres" else None
    made = World(request.param, tmp_path / "state", url)
    yield made
    made.close()


@pytest.fixture(params=["sqlite", "postgres"])
def real_world(
    request: pytest.FixtureRequest, tmp_path: Path, databases: Databases
) -> Iterator[World]:
    """A world on the real clock (SQLite's too): for tests where time really passes."""
    url = databases.new() if request.param == "postgres" else None
    made = World(request.param, tmp_path / "state", url, real_clock=True)
    yield made
    made.close()
