"""The ``backend`` fixture: each contract test once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from journal.backends import Backend
from postgres import Databases


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path)
    databases: Databases = request.getfixturevalue("databases")
    return Backend("postgres", tmp_path, databases.new())
