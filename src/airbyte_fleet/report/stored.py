"""The report of a run a store keeps (``runs show --html``, the worker's ``report.html``)."""

from __future__ import annotations

from datetime import UTC, datetime

from airbyte_fleet.journal import RunStore
from airbyte_fleet.report.html import render_report
from airbyte_fleet.report.timeline import TimelineBuilder
from airbyte_fleet.runner.replay import replay_result

__all__ = ["stored_report"]


def stored_report(store: RunStore, run_id: str) -> str | None:
    """The HTML report of *run_id* as the store holds it now (finished or not); None when the
    store has no start of it. The result and the timeline hear the run's events in one read,
    through the one replay path."""
    bars = TimelineBuilder()
    result = replay_result(store, run_id, also=bars)
    if result is None:
        return None
    return render_report(result, bars.timeline(), written_at=datetime.now(UTC))
