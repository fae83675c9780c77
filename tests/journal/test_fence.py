"""Fencing: a run's events are written only while its lease (run_leases) is this process's, checked
in the same transaction; on both stores, with lease rows written in plain SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from structlog.testing import capture_logs

from airbyte_fleet.engine.events import SyncStatusChanged, SyncTriggered, SyncTriggering
from airbyte_fleet.journal import JournalError, LeaseLostError
from journal.backends import Backend
from journal.stories import Story

ME, OTHER = "host-a:100:abc123", "host-b:200:def456"


def _lease(backend: Backend, run_id: str, owner: str, *, seconds: float) -> None:
    """*owner* holds *run_id* for *seconds* from now (negative: expired that long ago)."""
    until = backend.dialect.ts(datetime.now(UTC) + timedelta(seconds=seconds))
    acquired = backend.dialect.ts(datetime.now(UTC))
    backend.execute(
        "INSERT INTO run_leases (run_id, owner, lease_until, acquired_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (run_id) DO UPDATE SET owner = excluded.owner, "
        "lease_until = excluded.lease_until",
        (run_id, owner, until, acquired),
    )


def _kinds(backend: Backend, run_id: str) -> list[str]:
    return [row["event"] for row in backend.stored_rows(run_id)]


def test_a_fenced_run_is_written_while_its_lease_is_held(backend: Backend) -> None:
    s = Story("r", ["c1", "c2"])
    with backend.open(batch_interval=3600) as store:
        _lease(backend, "r", ME, seconds=60)
        store.fence("r", ME)
        store(s.started())
        store(s.sync(SyncTriggering, "c1"))
        assert _kinds(backend, "r") == ["run_started", "sync_triggering"]


@pytest.mark.parametrize("how", ["taken", "expired", "missing"])
def test_a_lost_lease_writes_nothing_and_raises(backend: Backend, how: str) -> None:
    s = Story("r", ["c1", "c2"])
    with backend.open(batch_interval=3600) as store:
        _lease(backend, "r", ME, seconds=60)
        store.fence("r", ME)
        store(s.started())
        # Batched: waits for the next durable write, which finds the lease gone.
        store(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
        if how == "taken":
            _lease(backend, "r", OTHER, seconds=60)
        elif how == "expired":
            _lease(backend, "r", ME, seconds=-1)
        else:
            backend.execute("DELETE FROM run_leases WHERE run_id = ?", ("r",))
        with capture_logs() as logs, pytest.raises(LeaseLostError) as lost:
            store(s.sync(SyncTriggering, "c2"))
        assert str(lost.value) == "run r is now held by another process; this one stops"
        assert isinstance(lost.value, JournalError)
        assert lost.value.run_id == "r"
        assert [e["event"] for e in logs] == ["journal_lease_lost"]
        # Neither the intent nor what waited before it; and nothing of the run from now on,
        # without asking the database again, even once the lease looks ours again.
        assert _kinds(backend, "r") == ["run_started"]
        _lease(backend, "r", ME, seconds=60)
        with pytest.raises(LeaseLostError):
            store(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
        with pytest.raises(LeaseLostError):
            store.append([s.sync(SyncTriggering, "c1")])
        store.flush()
        assert _kinds(backend, "r") == ["run_started"]


def test_a_lost_run_does_not_stop_the_other_runs_of_the_store(backend: Backend) -> None:
    lost, kept = Story("lost", ["c1"]), Story("kept", ["c1"])
    with backend.open(batch_interval=3600) as store:
        _lease(backend, "lost", ME, seconds=60)
        store.fence("lost", ME)
        store(lost.started())
        store(kept.started())
        store(lost.sync(SyncStatusChanged, "c1", job_id=1, status="running"))
        store(kept.sync(SyncStatusChanged, "c1", job_id=2, status="running"))
        _lease(backend, "lost", OTHER, seconds=60)
        # The other run's intent commits, with its own waiting event; the lost run's is dropped.
        store(kept.sync(SyncTriggering, "c1"))
        assert _kinds(backend, "kept") == ["run_started", "sync_status_changed", "sync_triggering"]
        assert _kinds(backend, "lost") == ["run_started"]
        with pytest.raises(LeaseLostError):
            store(lost.sync(SyncTriggering, "c1"))


def test_fence_none_lifts_the_fence_and_a_new_owner_renews_it(backend: Backend) -> None:
    s = Story("r", ["c1", "c2", "c3"])
    with backend.open(batch_interval=3600) as store:
        store.fence("r", ME)
        with pytest.raises(LeaseLostError):
            store(s.started())  # no lease row at all
        store.fence("r", None)
        store(s.started())
        # Handed over: this process now writes as the lease's new holder.
        _lease(backend, "r", OTHER, seconds=60)
        store.fence("r", OTHER)
        store(s.sync(SyncTriggering, "c1"))
        store(s.sync(SyncTriggered, "c1", job_id=1, status="running"))
        store.flush()
        assert _kinds(backend, "r") == ["run_started", "sync_triggering", "sync_triggered"]


def test_an_unfenced_run_never_reads_the_leases(backend: Backend) -> None:
    s = Story("r", ["c1"])
    _lease_owner = OTHER
    with backend.open(batch_interval=3600) as store:
        _lease(backend, "r", _lease_owner, seconds=60)
        store(s.started())
        store(s.sync(SyncTriggering, "c1"))
    assert _kinds(backend, "r") == ["run_started", "sync_triggering"]
