"""The report of a run a store keeps (``runs show --html``, the worker's ``report.html``)."""

from __future__ import annotations

from datetime import UTC, datetime

from airbyte_fleet.journal import RunStore
from airbyte_fleet.report.html import render_report
from airbyte_fleet.report.timeline import timeline_from_store
from airbyte_fleet.runner.replay import replay_result

__all__ = ["stored_report"]


def stored_report(store: RunStore, run_id: str) -> str | None:
    """The HTML report of *run_id* as the store holds it now (finished or not); None when the
    store has no start of it. Reads the run's events twice, once for the result and once for
    the timeline, each through the one replay path."""
    result = replay_result(store, run_id)
    bars = timeline_from_store(store, run_id)
    if result is None or bars is None:
        return None
    return render_report(result, bars, written_at=datetime.now(UTC))
