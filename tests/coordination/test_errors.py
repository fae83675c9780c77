"""A database that cannot be used is one sentence naming it, never its password."""

from __future__ import annotations

from pathlib import Path

import pytest

from airbyte_fleet.coordination import CoordinationError, open_coordinator
from airbyte_fleet.coordination.postgres import PostgresCoordinator

SECRET = "s3cret-Never-Shown"
NOWHERE = f"postgresql://fleet:{SECRET}@127.0.0.1:1/fleet"


def test_an_unreachable_postgres_is_named_without_its_password() -> None:
    with pytest.raises(CoordinationError) as caught:
        PostgresCoordinator(NOWHERE, owner="me", lease_seconds=1, connect_timeout=0.3)
    message = caught.value.message
    assert message.startswith("cannot reach the database at postgresql://fleet@127.0.0.1:1/fleet (")
    assert message.endswith("check the URL and that the server is up")
    assert SECRET not in str(caught.value)


def test_open_coordinator_names_the_database_without_its_password(tmp_path: Path) -> None:
    with pytest.raises(CoordinationError) as caught:
        open_coordinator(database_url=NOWHERE, state_dir=tmp_path)
    assert "127.0.0.1:1" in caught.value.message
    assert SECRET not in caught.value.message


def test_a_state_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("not a folder")
    with pytest.raises(CoordinationError) as caught:
        open_coordinator(database_url=None, state_dir=blocker)
    assert str(blocker) in caught.value.message


def test_a_failure_mid_use_names_what_was_being_done(tmp_path: Path) -> None:
    coordinator = open_coordinator(database_url=None, state_dir=tmp_path)
    coordinator.close()
    with pytest.raises(CoordinationError) as caught:
        coordinator.acquire("run-1")
    assert caught.value.message.startswith(
        f"cannot take the lease of run run-1 in the journal at {tmp_path / 'journal.sqlite3'} ("
    )
